"""Cross-entropy computed only where there is something to learn.

In supervised fine-tuning most positions are prompt tokens with label -100, yet the usual loss path projects every
position onto the whole vocabulary (49k × 576 for SmolLM2) and keeps those logits for the backward pass. Here the
model is asked for logits only at positions whose next token is a target (`logits_to_keep` with a boolean mask, a
transformers API), so the full logits tensor never exists; the fp32 log-softmax is then taken in chunks of rows that
are recomputed in the backward pass, so at most one chunk's fp32 copy is alive at a time.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100
# Rows of fp32 logits per chunk: 256 × a 49k vocabulary is 50 MB per buffer. Measured with bench/train_throughput.py
# (LoRA, checkpointing, AVX512-BF16): 1024-row chunks 290–303 real tok/s at 3.3–3.5 GiB peak, 256 rows 303–331 at
# 3.0–3.1 GiB, 128 rows no better than 256 — the big transient buffers were what the step touched afresh.
CHUNK_ROWS = 256


def target_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask of positions whose next token is a target, the targets in order): the shift of causal LM training."""
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    targets = labels[:, 1:][labels[:, 1:] != IGNORE_INDEX]
    return keep, targets


def _summed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), targets, reduction="sum")


def chunked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, chunk_rows: int = CHUNK_ROWS) -> torch.Tensor:
    """Summed cross-entropy over rows of `logits`; with more than one chunk, each chunk is recomputed in backward."""
    if logits.shape[0] <= chunk_rows:
        return _summed_cross_entropy(logits, targets)
    total = logits.new_zeros((), dtype=torch.float32)
    for start in range(0, logits.shape[0], chunk_rows):
        part = slice(start, start + chunk_rows)
        total = total + checkpoint(_summed_cross_entropy, logits[part], targets[part], use_reentrant=False)
    return total


def accepts_logits_to_keep(model) -> bool:
    """True when the (possibly PEFT-wrapped) causal LM's forward takes `logits_to_keep`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def label_only_loss(model, inputs: dict, num_items_in_batch=None, chunk_rows: int = CHUNK_ROWS) -> torch.Tensor:
    """Mean next-token loss over labelled positions (over `num_items_in_batch` when given, for accumulation)."""
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    keep, targets = target_positions(labels)
    outputs = model(**inputs, use_cache=False, logits_to_keep=keep)
    logits = outputs.logits.reshape(-1, outputs.logits.shape[-1])
    loss = chunked_cross_entropy(logits, targets, chunk_rows)
    count = num_items_in_batch if num_items_in_batch is not None else targets.numel()
    return loss / torch.as_tensor(count, device=loss.device).clamp(min=1)
