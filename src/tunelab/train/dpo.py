"""Direct preference optimisation: preference pairs → TRL's DPOTrainer (its `loss_type` list: sigmoid, ipo, hinge,
robust, ... in `train:`), against the starting model as reference. Evaluated as train/preference.py says.

With the speed plan's padding-free batches (the default), each pair's prompt is computed once for both answers and
the LM head runs only where a completion token is scored (train/shared_prompt.py); the loss is TRL's own."""

from __future__ import annotations

from functools import partial
from typing import Any

from tunelab.config.schema import Recipe
from tunelab.train.preference import evaluate_preference, policy_stage, reference_description
from tunelab.train.shared_prompt import share_trainer_prompts


def dpo_classes() -> tuple[type, type]:
    from trl import DPOConfig, DPOTrainer

    return DPOTrainer, DPOConfig


def describe(recipe: Recipe, model) -> dict[str, Any]:
    shared = recipe.train.get("padding_free", True)
    forward = "each pair's prompt once, LM head on completion tokens" if shared else "TRL's padded pairs"
    return reference_description(recipe, model) | {"pair_forward": forward}


DPO = policy_stage("dpo", "direct preference optimisation on (prompt, chosen, rejected) pairs", dpo_classes,
                   describe=describe, speed_up=share_trainer_prompts, packs_sequences=True,
                   evaluate=partial(evaluate_preference, implicit_reward=True))  # fmt: skip
