"""What a training run needs, from arithmetic: memory (weights, gradients, optimizer states, activations with and
without checkpointing) per method, and FLOPs, turned into time and money on a GPU of the table (train/gpus.py).

FLOPs per trained token: 6·N for full fine-tuning (forward 2N, backward 4N: input and weight gradients) and 4·N for
methods that freeze the base weights (no weight gradients for them), plus attention's 12·L·h·s (forward 4·L·h·s,
three times for training; Korthikanti et al. 2022, as MosaicML's llm-foundry counts it). Time = FLOPs / (peak × MFU),
with the MFU an assumption the output states (the share of peak a well-configured single-GPU run reaches).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from tunelab.train.speed import activation_bytes

GIB = 2**30
# Assumed model-FLOPs utilisation on GPUs: llm-foundry measures 37-46% for full training of 1B-70B models on H100s;
# methods that freeze the base run smaller matrices for the trained part and fuse less, and QLoRA dequantises.
MFU = {"full": 0.40, "freeze": 0.40, "lora": 0.35, "qlora": 0.25, "other": 0.30}
ADAM_BYTES = 8  # two fp32 moments per trained parameter
OVERHEAD_GIB = 1.5  # CUDA context, allocator slack, kernels' workspaces


@dataclass
class Footprint:
    weights: int
    gradients: int
    optimizer: int
    activations: int
    activations_checkpointed: int

    def total(self, checkpointing: bool) -> int:
        acts = self.activations_checkpointed if checkpointing else self.activations
        return self.weights + self.gradients + self.optimizer + acts + int(OVERHEAD_GIB * GIB)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def method_family(method_type: str, quantized: bool) -> str:
    if method_type in ("full", "freeze"):
        return method_type
    if quantized:
        return "qlora"
    return "lora" if method_type in ("lora", "dora", "rslora", "pissa", "loftq", "lora_plus") else "other"


def gpu_footprint(config, total: int, trainable: int, family: str, micro_batch_tokens: int) -> Footprint:
    """Memory on a GPU with bf16 compute: full and freeze keep fp32 master weights (AdamW's mixed precision); the
    other methods hold the frozen base in bf16 (QLoRA: NF4, ~4.13 bits with its double-quantised scales)."""
    frozen = total - trainable
    if family in ("full", "freeze"):
        weights = 4 * trainable + 2 * frozen
    elif family == "qlora":
        weights = int(frozen * 4.13 / 8) + 4 * trainable
    else:
        weights = 2 * frozen + 4 * trainable
    layers = getattr(config, "num_hidden_layers", 12)
    hidden = getattr(config, "hidden_size", 768)
    vocab = getattr(config, "vocab_size", 32000)
    logits = micro_batch_tokens * vocab * (2 + 4)  # bf16 logits and their fp32 copy for the loss
    full = activation_bytes(config, micro_batch_tokens, 2) + logits
    checkpointed = 2 * micro_batch_tokens * hidden * layers + full // max(1, layers) + logits
    return Footprint(weights, 4 * trainable, ADAM_BYTES * trainable, full, checkpointed)


def flops_per_token(config, total: int, family: str, sequence_length: int) -> float:
    layers = getattr(config, "num_hidden_layers", 12)
    hidden = getattr(config, "hidden_size", 768)
    dense = (6 if family in ("full", "freeze") else 4) * total
    return dense + 12 * layers * hidden * sequence_length


def gpu_rows(
    config, counts: dict[str, int], family: str, workload: dict[str, Any], table: dict, names, mfu: float | None = None
):
    """One row per GPU: memory with and without checkpointing, whether it fits, time and cost of the run."""
    mean_length = workload["tokens"] / max(1, workload["sequences"])
    micro_tokens = int(workload["micro_batch"] * workload["max_length"])
    footprint = gpu_footprint(config, counts["total"], counts["trainable"], family, micro_tokens)
    per_token = flops_per_token(config, counts["total"], family, int(mean_length))
    utilisation = mfu if mfu is not None else MFU[family]
    rows = []
    for name in names:
        gpu = table[name]
        capacity = gpu["memory_gib"] * GIB
        plain, checkpointed = footprint.total(False), footprint.total(True)
        seconds = workload["trained_tokens"] * per_token / (gpu["bf16_tflops"] * 1e12 * utilisation)
        fits = "yes" if plain <= capacity else ("with gradient checkpointing" if checkpointed <= capacity else "no")
        rows.append({
            "gpu": name, "gpu_name": gpu["name"], "memory_gib": gpu["memory_gib"], "fits": fits,
            "memory_needed_gib": round(plain / GIB, 2), "memory_checkpointed_gib": round(checkpointed / GIB, 2),
            "seconds": round(seconds, 1), "hours": round(seconds / 3600, 3),
            "cost_usd": round(seconds / 3600 * gpu["hourly_usd"], 4), "hourly_usd": gpu["hourly_usd"],
            "price_source": gpu.get("price_source"), "tokens_per_second": round(workload["trained_tokens"] / seconds),
        })  # fmt: skip
    return {"mfu": utilisation, "flops_per_token": per_token, "footprint": footprint.as_dict(), "rows": rows}


def what_would_fit(rows: list[dict], family: str) -> list[str]:
    """For each GPU the run does not fit: the change that would make it fit (or the GPU that would)."""
    advice = []
    for row in rows:
        if row["fits"] != "no":
            continue
        if family in ("full", "freeze"):
            advice.append(f"{row['gpu']}: needs {row['memory_checkpointed_gib']:.1f} GiB even with checkpointing; "
                          "method: lora (frozen bf16 base) or qlora (4-bit base) needs far less")  # fmt: skip
        else:
            advice.append(f"{row['gpu']}: needs {row['memory_checkpointed_gib']:.1f} GiB; lower "
                          "per_device_train_batch_size or data.max_length, or use qlora")  # fmt: skip
    bigger = [r["gpu"] for r in rows if r["fits"] != "no"]
    if advice and bigger:
        advice.append(f"fits as it is on: {', '.join(bigger)}")
    return advice


def steps_for(sequences: int, micro_batch: int, accumulation: int, epochs: float, max_steps: int | None) -> int:
    if max_steps and max_steps > 0:
        return int(max_steps)
    per_epoch = max(1, math.ceil(sequences / (micro_batch * accumulation)))
    return max(1, math.ceil(epochs * per_epoch))
