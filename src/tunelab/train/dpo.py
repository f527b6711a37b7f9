"""Direct preference optimisation: preference pairs → TRL's DPOTrainer (its `loss_type` list: sigmoid, ipo, hinge,
robust, ... in `train:`), against the starting model as reference. Evaluated as train/preference.py says."""

from __future__ import annotations

from tunelab.train.preference import policy_stage, reference_description


def dpo_classes() -> tuple[type, type]:
    from trl import DPOConfig, DPOTrainer

    return DPOTrainer, DPOConfig


DPO = policy_stage("dpo", "direct preference optimisation on (prompt, chosen, rejected) pairs", dpo_classes,
                   describe=reference_description)  # fmt: skip
