"""Which speed switches a run uses, decided from the recipe, the hardware and a memory estimate.

Every switch can be set in the recipe's `train:` section; what was used, and why, is written to the run directory
(`training.json`) so that two runs can be compared knowing how each was trained.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import Any

from tunelab.allocator import keep_freed_memory
from tunelab.hardware import available_memory_bytes, bf16_is_fast, physical_cores

# Activation memory per token, per decoder layer, in units of hidden size × bytes per element: ~34 for a transformer
# layer with memory-efficient attention (Korthikanti et al., "Reducing Activation Recomputation", 2022).
ACTIVATION_FACTOR = 34
# Recompute only when the estimate would take more than this share of the memory that is free.
CHECKPOINTING_SHARE = 0.5


@dataclass
class SpeedPlan:
    padding_free: bool
    label_only_loss: bool
    bf16: bool
    gradient_checkpointing: bool
    torch_threads: int
    attention: str = "sdpa"
    frozen_bf16: bool = False  # frozen base weights held in bf16 during training (train/frozen_bf16.py)
    lean_activations: bool | dict = True  # train/lean_activations.py; fit() records what it changed
    allocator: str = ""
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def activation_bytes(config, batch_tokens: int, bytes_per_value: int) -> int:
    """Rough activation memory of one micro-batch for a decoder-only transformer."""
    layers = getattr(config, "num_hidden_layers", 12)
    hidden = getattr(config, "hidden_size", 768)
    return batch_tokens * layers * hidden * ACTIVATION_FACTOR * bytes_per_value // 2


def plan_speed(train: dict[str, Any], model_config, max_length: int) -> SpeedPlan:
    """Resolve the switches: the recipe's value where it gives one, else what suits this machine and model."""
    bf16 = train.get("bf16")
    if bf16 is None:
        bf16 = bf16_is_fast()
    from tunelab.train.distributed import threads_per_process

    threads = int(train.get("torch_threads") or threads_per_process(physical_cores()))  # cores shared by ranks
    plan = SpeedPlan(
        padding_free=bool(train.get("padding_free", True)),
        label_only_loss=bool(train.get("label_only_loss", True)),
        bf16=bool(bf16),
        gradient_checkpointing=False,
        torch_threads=threads,
        frozen_bf16=bool(train.get("frozen_bf16", True)) and bool(bf16),  # fit() checks the method and the stage
        lean_activations=bool(train.get("lean_activations", True)),
    )
    chosen = train.get("gradient_checkpointing", train.get("activation_checkpointing"))
    if chosen is not None:
        plan.gradient_checkpointing = bool(chosen)
        plan.reasons.append(f"gradient checkpointing {'on' if chosen else 'off'}: set in the recipe")
    else:
        batch_tokens = int(train.get("per_device_train_batch_size", 8)) * max_length
        needed = activation_bytes(model_config, batch_tokens, 2 if plan.bf16 else 4)
        free = available_memory_bytes()
        plan.gradient_checkpointing = needed > CHECKPOINTING_SHARE * free
        plan.reasons.append(
            f"gradient checkpointing {'on' if plan.gradient_checkpointing else 'off'}: activations estimated at "
            f"{needed / 2**30:.1f} GiB for {batch_tokens} tokens per micro-batch, {free / 2**30:.1f} GiB free"
        )
    return plan


def apply_threads(plan: SpeedPlan) -> None:
    """Use one thread per physical core: hyper-threads share the matrix units and only add contention. Freed memory
    is kept for reuse (allocator.py; the CLI asks first, this covers library use)."""
    import torch

    plan.allocator = keep_freed_memory()
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(plan.torch_threads)
    plan.torch_threads = torch.get_num_threads()
