"""The `train:` section: the fields of the stage's TRL config class (`trl.SFTConfig` for sft) plus tunelab's defaults
and its own keys.

`report_to` takes tunelab's trackers only (none, tensorboard, mlflow, wandb; see config/trackers.py).

The section is forwarded to the stage's config class (train/args.py builds it); unknown keys and wrong types are
reported here with the YAML path before TRL sees them.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from functools import cache
from typing import Any

# Keys tunelab reads itself; they are removed before the section reaches SFTConfig.
TUNELAB_TRAIN_KEYS = {
    "early_stopping_patience": int,
    "early_stopping_threshold": float,
    "label_only_loss": bool,  # head and loss only at labelled positions (train/loss.py)
    "torch_threads": int,  # default: one per physical core
    "lean_activations": bool,  # one autocast copy per input, gated MLPs keep less (train/lean_activations.py)
    "frozen_bf16": bool,  # adapter methods under bf16: frozen base weights held in bf16 (train/frozen_bf16.py)
    "sample_every": int,  # RL stages: every N-th logged step's sampled answers and rewards → samples.jsonl
    "max_seconds": float,  # a wall-clock budget: training stops (and saves) once it has run this long
    "score_head": str,  # rm: "random" (default) or "probe" — fitted to the frozen features first (train/score_probe.py)
}

POSITIVE_KEYS = {"torch_threads", "sample_every", "max_seconds"}
SCORE_HEADS = ("random", "probe")  # train.score_head (stage rm): a new head, or one fitted to frozen features first

# Set by tunelab, not by the user, with what to do instead.
RESERVED = {
    "output_dir": "set by tunelab from the run directory; remove it (use output_dir/name at the top level)",
    "logging_dir": "set by tunelab: with report_to: tensorboard, event files go to <run>/tensorboard; remove it",
    "max_length": "tunelab truncates and counts truncation itself; set data.max_length instead",
}


def tunelab_defaults() -> dict[str, Any]:
    """Defaults that suit fine-tuning on one machine; every one can be overridden in the recipe."""
    from tunelab.hardware import bf16_is_fast, has_cuda

    return {
        "learning_rate": 2e-4,
        "num_train_epochs": 1,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 8,
        # gradient checkpointing, padding-free batches and bf16 are decided per run by train/speed.py
        "max_length": None,  # records are truncated (and counted) by tunelab before they reach TRL
        "lr_scheduler_type": "cosine",
        "warmup_steps": 0.05,
        "logging_steps": 5,
        "eval_steps": 50,
        "save_steps": 50,
        "save_total_limit": 3,
        "bf16": bf16_is_fast(),
        "prediction_loss_only": True,  # evaluation needs the loss, not the logits
        "use_cpu": not has_cuda(),
        "optim": "adamw_torch",
        "dataloader_num_workers": 0,
    }


@cache
def config_fields(config_class: type) -> dict[str, Any]:
    """A TRL config dataclass's settable fields and their annotations."""
    hints = typing.get_type_hints(config_class)
    return {field.name: hints.get(field.name, Any) for field in dataclasses.fields(config_class) if field.init}


def check_train_section(train: dict[str, Any], config_class: type) -> list[tuple[str, str]]:
    """Unknown keys (with a did-you-mean) and wrong types, each as (yaml path, problem), against the stage's TRL
    config class."""
    fields = config_fields(config_class)
    problems = []
    for key, value in train.items():
        if key in TUNELAB_TRAIN_KEYS:
            if not _matches(value, TUNELAB_TRAIN_KEYS[key]):
                problems.append((f"train.{key}", f"expected {TUNELAB_TRAIN_KEYS[key].__name__}, got {value!r}"))
            elif key in POSITIVE_KEYS and not value > 0:
                problems.append((f"train.{key}", f"must be positive, got {value!r}"))
            continue
        if key == "report_to":  # a closed set of trackers, each checked for its packages
            from tunelab.config.trackers import check_report_to

            problems += check_report_to(value)
        elif key == "deepspeed" and value is not None:  # checked before TRL's config would import DeepSpeed
            from tunelab.config.deepspeed import check_deepspeed

            problems += check_deepspeed(value)
        elif key in RESERVED:
            problems.append((f"train.{key}", RESERVED[key]))
        elif key not in fields:
            close = difflib.get_close_matches(key, list(fields) + list(TUNELAB_TRAIN_KEYS), n=1)
            owner = f"{config_class.__module__.split('.')[0]}.{config_class.__name__}"  # trl's, or tunelab's own
            hint = f" (did you mean {close[0]}?)" if close else f" (not a field of {owner})"
            problems.append((f"train.{key}", "unknown key" + hint))
        elif not _matches(value, fields[key]):
            problems.append((f"train.{key}", f"expected {_type_name(fields[key])}, got {value!r}"))
    return problems


def _matches(value: Any, annotation: Any) -> bool:
    """A shallow type check for the scalar kinds YAML produces; unknown annotations accept anything."""
    if annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is str:
        return isinstance(value, str)
    if origin in (list, dict):
        return isinstance(value, origin)
    if isinstance(annotation, type) and issubclass(annotation, str):  # str enums such as SaveStrategy
        return isinstance(value, str)
    return True


def _type_name(annotation: Any) -> str:
    args = typing.get_args(annotation)
    if args:
        return " or ".join(_type_name(arg) for arg in args)
    return "null" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))
