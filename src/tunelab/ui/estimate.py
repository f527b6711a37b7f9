"""Before Start: will it fit in this machine's memory, and how long will it take?

Memory comes from the model's shape (built on the `meta` device: no weights are loaded) and the method: weights,
gradients and Adam states of what is trained, and the activations of one micro-batch (train/speed.py's estimate).
Time comes from earlier runs of the same model and method in this workspace (their measured seconds per step); a
model never trained here gets its speed measured by the first logging steps, shown live. A calibrated estimator for
other hardware is separate work; this one only speaks for this machine.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.runs import read_json

ADAM_BYTES = 8  # two fp32 moments per trained parameter
GRAD_BYTES = 4


def trained_parameters(model, method: dict[str, Any]) -> int:
    """How many parameters the method trains, counted by applying it (model/methods.py) to a (meta) model."""
    from tunelab.config.schema import method_sections
    from tunelab.model.adapters import count_parameters
    from tunelab.model.methods import apply_method

    section = method_sections()[method.get("type", "lora")].model_validate(method)
    return count_parameters(apply_method(model, section))["trainable"]


def memory_estimate(model_folder: str, recipe: dict[str, Any]) -> dict[str, Any]:
    """Bytes for weights, training state and activations; whether that fits in the free memory."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    from tunelab.hardware import available_memory_bytes, bf16_is_fast
    from tunelab.train.speed import activation_bytes

    config = AutoConfig.from_pretrained(model_folder)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config)
    model.tie_weights()  # tied input and output embeddings count once, as in the loaded model
    total = sum(p.numel() for p in model.parameters())
    trained = trained_parameters(model, recipe.get("method") or {})
    train = recipe.get("train") or {}
    tokens = int(train.get("per_device_train_batch_size", 8)) * int((recipe.get("data") or {}).get("max_length", 1024))
    bf16 = train.get("bf16", bf16_is_fast())
    activations = activation_bytes(config, tokens, 2 if bf16 else 4)
    parts = {"weights": 4 * total, "training state": (GRAD_BYTES + ADAM_BYTES + 4) * trained,
             "activations": activations}  # fmt: skip
    needed, free = sum(parts.values()), available_memory_bytes()
    return {"parameters": total, "trained": trained, "parts": parts, "needed": needed, "free": free,
            "fits": needed < 0.9 * free, "with_checkpointing": needed - activations * 0.8 < 0.9 * free}  # fmt: skip


def seconds_per_step(runs_folder: Path, model: str, method: str) -> float | None:
    """The median seconds per step of earlier finished runs of this model and method in the workspace."""
    import statistics

    import yaml

    measured = []
    for run in runs_folder.glob("*/training.json"):
        training = read_json(run)
        if not isinstance(training, dict) or not training.get("train_seconds") or not training.get("global_step"):
            continue
        try:
            recipe = yaml.safe_load((run.parent / "recipe.yaml").read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        if recipe.get("model", {}).get("name") == model and recipe.get("method", {}).get("type") == method:
            measured.append(training["train_seconds"] / training["global_step"])
    return statistics.median(measured) if measured else None


def _size(count: float) -> str:
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 / 10 else f"{count / 2**20:.0f} MiB"


def describe_estimate(memory: dict[str, Any], per_step: float | None, steps: int | None) -> str:
    parts = ", ".join(f"{name} {_size(value)}" for name, value in memory["parts"].items())
    lines = [f"**Memory**: about {_size(memory['needed'])} ({parts}) of {_size(memory['free'])} free; "
             f"{memory['trained']:,} of {memory['parameters']:,} parameters trained."]  # fmt: skip
    if not memory["fits"]:
        remedy = ("gradient checkpointing (on automatically) should make it fit" if memory["with_checkpointing"]
                  else "lower data.max_length or the batch size, or use LoRA")  # fmt: skip
        lines.append(f"⚠️ This may not fit: {remedy}.")
    if per_step and steps:
        minutes = per_step * steps / 60
        lines.append(f"**Time**: about {minutes:.0f} min for {steps} steps ({per_step:.1f} s/step measured by earlier "
                     "runs of this model and method here).")  # fmt: skip
    else:
        lines.append("**Time**: no earlier run of this model and method here; the first logging steps show the speed "
                     "and an ETA.")  # fmt: skip
    return "\n\n".join(lines)
