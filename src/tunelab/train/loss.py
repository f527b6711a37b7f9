"""Cross-entropy computed only where there is something to learn.

In supervised fine-tuning most positions are prompt tokens with label -100, yet the usual loss path projects every
position onto the whole vocabulary (49k × 576 for SmolLM2) and keeps those logits for the backward pass. Here the
decoder's hidden states are taken only at positions whose next token is a target, and the head and the fp32
cross-entropy run on chunks of those rows that are recomputed in the backward pass: one chunk's logits are alive at a
time, never the whole (targets × vocabulary) tensor, its fp32 copy (accelerate converts a mixed-precision model's
outputs to fp32) or its gradient. Models whose head is not a plain projection (capped or scaled logits), prompt-
learning adapters and distributed wrappers take the model's own forward with `logits_to_keep` (a transformers API),
whose logits are then chunked the same way.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from tunelab.model.virtual_prefix import virtual_tokens

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


def plain_head(config) -> bool:
    """Whether a causal LM's logits are its output head applied to the last hidden states and nothing more (no
    soft-capping or scaling of the logits, no router losses added in its forward)."""
    config = config.get_text_config()
    return (
        getattr(config, "final_logit_softcapping", None) is None
        and all(getattr(config, name, None) in (None, 1.0) for name in ("logit_scale", "output_multiplier"))
        and getattr(config, "lm_head_multiplier", None) is None
        and getattr(config, "logits_scaling", None) is None
        and not getattr(config, "output_router_logits", False)
    )


def _summed_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), targets, reduction="sum")


def _summed_head_cross_entropy(hidden: torch.Tensor, head: torch.nn.Module, targets: torch.Tensor) -> torch.Tensor:
    return _summed_cross_entropy(head(hidden), targets)


def _chunked(function, rows: torch.Tensor, targets: torch.Tensor, chunk_rows: int, *extra) -> torch.Tensor:
    """Sum of `function(rows[chunk], *extra, targets[chunk])`; with more than one chunk, each is recomputed in
    backward, so only one chunk's intermediate tensors are kept."""
    if rows.shape[0] <= chunk_rows:
        return function(rows, *extra, targets)
    total = rows.new_zeros((), dtype=torch.float32)
    for start in range(0, rows.shape[0], chunk_rows):
        part = slice(start, start + chunk_rows)
        total = total + checkpoint(function, rows[part], *extra, targets[part], use_reentrant=False)
    return total


def chunked_cross_entropy(logits: torch.Tensor, targets: torch.Tensor, chunk_rows: int = CHUNK_ROWS) -> torch.Tensor:
    """Summed cross-entropy over rows of `logits`; with more than one chunk, each chunk is recomputed in backward."""
    return _chunked(_summed_cross_entropy, logits, targets, chunk_rows)


class LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of a linear head's logits, chunk by chunk, with the gradients taken in the same pass:
    the logits' gradient of a summed cross-entropy is softmax − one-hot, known as soon as the logits are, so each
    chunk's logits are used once and dropped, and the backward pass only scales what was kept (the gradient of the
    hidden rows, and of the head's weight when it trains). A checkpointed chunk would compute the head product twice;
    at SFT's answer share that recomputation was a fifth of the step's matrix products. Products in the autocast
    precision as the layer would run them, the softmax in fp32."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk_rows: int, needs: tuple[bool, bool, bool]):
        dtype = _compute_dtype(hidden)
        rows, w = hidden.to(dtype), weight.to(dtype)
        b = bias.to(dtype) if bias is not None else None
        grad_hidden = torch.empty_like(rows) if needs[0] else None
        grad_weight = torch.zeros_like(weight, dtype=torch.float32) if needs[1] else None
        grad_bias = torch.zeros_like(bias, dtype=torch.float32) if needs[2] else None
        total = hidden.new_zeros((), dtype=torch.float32)
        for start in range(0, rows.shape[0], chunk_rows):
            part, chunk_targets = rows[start : start + chunk_rows], targets[start : start + chunk_rows]
            logits = F.linear(part, w, b).float()
            log_norm = logits.logsumexp(dim=-1, keepdim=True)
            total += (log_norm[:, 0] - logits.gather(1, chunk_targets[:, None])[:, 0]).sum()
            grad_logits = logits.sub_(log_norm).exp_()
            grad_logits[torch.arange(part.shape[0]), chunk_targets] -= 1.0
            grad_logits = grad_logits.to(dtype)
            if grad_hidden is not None:
                grad_hidden[start : start + chunk_rows] = grad_logits @ w
            if grad_weight is not None:
                grad_weight += (grad_logits.T @ part).float()
            if grad_bias is not None:
                grad_bias += grad_logits.float().sum(dim=0)
        ctx.save_for_backward(grad_hidden, grad_weight, grad_bias)
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        return total

    @staticmethod
    def backward(ctx, grad_total):
        kept = zip(ctx.saved_tensors, ctx.dtypes, strict=True)
        grads = [None if grad is None else (grad.float() * grad_total).to(dtype) for grad, dtype in kept]
        return *grads, None, None, None


def _compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    device = tensor.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else tensor.dtype


def head_cross_entropy(hidden: torch.Tensor, head, targets: torch.Tensor, chunk_rows: int = CHUNK_ROWS) -> torch.Tensor:
    """Summed cross-entropy of `head(hidden)` against `targets` with at most one chunk's logits alive at a time: a
    plain linear head through `LinearCrossEntropy`, any other head module applied chunk by chunk (and again in
    backward)."""
    if type(head) is not torch.nn.Linear:
        return _chunked(_summed_head_cross_entropy, hidden, targets, chunk_rows, head)
    grad = torch.is_grad_enabled()
    parameters = (hidden, head.weight, head.bias)
    needs = tuple(grad and p is not None and p.requires_grad for p in parameters)
    return LinearCrossEntropy.apply(hidden, head.weight, head.bias, targets, chunk_rows, needs)


def accepts_logits_to_keep(model) -> bool:
    """True when the (possibly PEFT-wrapped) causal LM's forward takes `logits_to_keep`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def split_head(model):
    """(decoder, output head) of a causal LM that can be run apart, else None: a plain head, a decoder module under
    it, no prompt-learning adapter (PEFT injects its virtual tokens in its own forward) and no process group (a
    distributed wrapper must see the forward)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return None
    if virtual_tokens(model):
        return None
    causal_lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = getattr(causal_lm, "base_model", causal_lm)
    head = causal_lm.get_output_embeddings() if hasattr(causal_lm, "get_output_embeddings") else None
    if decoder is causal_lm or head is None or not plain_head(causal_lm.config):
        return None
    return decoder, head


def label_only_loss(model, inputs: dict, num_items_in_batch=None, chunk_rows: int = CHUNK_ROWS) -> torch.Tensor:
    """Mean next-token loss over labelled positions (over `num_items_in_batch` when given, for accumulation). Run it
    under the trainer's autocast: the decoder may be called apart from the model's own (autocast-wrapped) forward."""
    inputs = dict(inputs)
    labels = inputs.pop("labels")
    keep, targets = target_positions(labels)
    parts = split_head(model)
    if parts is not None:
        decoder, head = parts
        hidden = decoder(**inputs, use_cache=False).last_hidden_state[keep]
        loss = head_cross_entropy(hidden, head, targets, chunk_rows)
    else:
        outputs = model(**inputs, use_cache=False, logits_to_keep=keep)
        loss = chunked_cross_entropy(outputs.logits.reshape(-1, outputs.logits.shape[-1]), targets, chunk_rows)
    count = num_items_in_batch if num_items_in_batch is not None else targets.numel()
    return loss / torch.as_tensor(count, device=loss.device).clamp(min=1)
