"""CPO and SimPO (`trl.experimental.cpo`): contrastive preference optimisation without a reference model; SimPO is
CPO's `loss_type: simpo` (length-normalised rewards with a target margin `simpo_gamma`, and no SFT term: `cpo_alpha`
0 unless the recipe sets it). Evaluated as train/preference.py says."""

from __future__ import annotations

from tunelab.train.preference import experimental, policy_stage


@experimental
def cpo_classes() -> tuple[type, type]:
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    return CPOTrainer, CPOConfig


CPO = policy_stage("cpo", "contrastive preference optimisation, no reference model", cpo_classes)
SIMPO = policy_stage("simpo", "SimPO: a length-normalised preference margin, no reference model", cpo_classes,
                     defaults={"cpo_alpha": 0.0}, forced={"loss_type": "simpo"})  # fmt: skip
