"""The trainer's arguments: tunelab's defaults, the recipe's `train:` section and tunelab's own settings, merged into
the stage's TRL config class (`trl.SFTConfig` for sft)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.config.trackers import selected
from tunelab.config.train_args import TUNELAB_TRAIN_KEYS, config_fields, tunelab_defaults
from tunelab.errors import RecipeError


def build_training_args(
    config_class: type, train: dict[str, Any], output_dir: str, seed: int, has_validation: bool, plan=None, **forced
):
    """Merge defaults, the recipe's train section and tunelab's settings into `config_class`.

    `plan` (train/speed.py) owns bf16 and gradient checkpointing; its padding-free batches come from tunelab's own
    collator, so TRL's `padding_free` (which refuses a custom collator) is switched off.
    """
    fields = config_fields(config_class)
    # a stage's config class may lack some of the defaults' fields
    defaults = {key: value for key, value in tunelab_defaults().items() if key in fields}
    values = defaults | {k: v for k, v in train.items() if k not in TUNELAB_TRAIN_KEYS}
    if plan is not None:
        checkpointing = plan.gradient_checkpointing
        # transformers 5 renamed the switch; TRL still defaults the old name to True, so both are set
        values |= {"bf16": plan.bf16, "activation_checkpointing": checkpointing, "gradient_checkpointing": None}
        if "padding_free" in fields:
            values["padding_free"] = False
    values |= {"output_dir": output_dir, "report_to": selected(train.get("report_to")) or "none"}
    values["seed"] = values.get("seed", seed)
    if values.get("deepspeed"):  # a shorthand becomes <run>/deepspeed.json
        from tunelab.config.deepspeed import deepspeed_config

        values["deepspeed"] = deepspeed_config(values["deepspeed"], Path(output_dir).parent)
    values |= _evaluation_settings(values, train, has_validation)
    values |= forced
    try:
        return config_class(**values)
    except (ValueError, TypeError) as error:
        raise RecipeError("recipe", [("train", str(error).strip())]) from None


def _evaluation_settings(values: dict[str, Any], train: dict[str, Any], has_validation: bool) -> dict[str, Any]:
    """Evaluate on validation data when there is some; early stopping keeps the best checkpoint (saved at each
    evaluation)."""
    if not has_validation:
        return {"eval_strategy": "no"}
    strategy = values.get("eval_strategy", "steps")
    settings: dict[str, Any] = {"eval_strategy": strategy}
    if strategy != "no" and train.get("early_stopping_patience") is not None:
        settings |= {"load_best_model_at_end": True, "metric_for_best_model": "eval_loss", "greater_is_better": False}
        settings |= {"save_strategy": strategy, "save_steps": values.get("eval_steps", values["save_steps"])}
    return settings
