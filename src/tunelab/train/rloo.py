"""REINFORCE leave-one-out: prompts → G sampled completions each (tunelab's rollouts) → the recipe's rewards → TRL's
RLOOTrainer, whose baseline for each completion is the mean reward of the other G − 1. Its KL penalty (`beta`, TRL's
default 0.05) is to the reference model: for a LoRA policy the adapter disabled. Evaluated as for SFT."""

from __future__ import annotations

from typing import Any

from tunelab.config.schema import Recipe
from tunelab.train.online import online_stage


def rloo_classes() -> tuple[type, type]:
    from trl import RLOOConfig, RLOOTrainer

    return RLOOTrainer, RLOOConfig


def describe(recipe: Recipe, model) -> dict[str, Any]:
    if recipe.train.get("beta", 0.05) == 0:
        return {"reference": "none (beta 0: no KL penalty)"}
    if hasattr(model, "peft_config"):
        return {"reference": "the starting model: the policy with its adapter disabled (no second copy in memory)"}
    return {"reference": "a frozen copy of the starting model"}


RLOO = online_stage("rloo", "REINFORCE leave-one-out: each sample's reward against the mean of the others'",
                    rloo_classes, describe, returns_logprobs=False)  # fmt: skip
