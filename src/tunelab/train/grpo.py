"""Group relative policy optimisation: prompts → G sampled completions each (tunelab's rollouts) → the recipe's
rewards → TRL's GRPOTrainer, whose advantage is each completion's reward against its group's mean. With `beta > 0`
a KL penalty to the reference model: for a LoRA policy the adapter disabled (no second copy in memory). Evaluated by
generating answers for the held-out prompts, as for SFT."""

from __future__ import annotations

from typing import Any

from tunelab.config.schema import Recipe
from tunelab.train.online import online_stage


def grpo_classes() -> tuple[type, type]:
    from trl import GRPOConfig, GRPOTrainer

    return GRPOTrainer, GRPOConfig


def describe(recipe: Recipe, model) -> dict[str, Any]:
    beta = recipe.train.get("beta", 0.0)
    if not beta:
        return {"reference": "none (beta 0: no KL penalty, TRL's default)"}
    if hasattr(model, "peft_config"):
        return {"reference": "the starting model: the policy with its adapter disabled (no second copy in memory)"}
    return {"reference": "a frozen copy of the starting model"}


GRPO = online_stage("grpo", "group relative policy optimisation: rewards of G samples per prompt, against their mean",
                    grpo_classes, describe)  # fmt: skip
