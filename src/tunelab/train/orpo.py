"""ORPO: supervised fine-tuning and an odds-ratio preference penalty in one loss, no reference model
(`trl.experimental.orpo`). Evaluated as train/preference.py says."""

from __future__ import annotations

from tunelab.train.preference import experimental, policy_stage


@experimental
def orpo_classes() -> tuple[type, type]:
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    return ORPOTrainer, ORPOConfig


ORPO = policy_stage("orpo", "odds-ratio preference optimisation: SFT and preference in one loss", orpo_classes)
