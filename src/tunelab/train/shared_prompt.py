"""DPO's forward pass over preference pairs with each prompt computed once, and the LM head only where it scores.

TRL's DPOTrainer batches a pair as two padded rows, [prompt + chosen] and [prompt + rejected], and its fused LM head
(trl.trainer.utils.add_fused_lm_head) projects every position of every row onto the vocabulary on a CPU (it scores
only the labelled positions on Triton devices). Here the same call, `model(input_ids, attention_mask, labels=...,
fused_lm_head=True)`, instead:

- packs the batch into one row without padding, each pair as [shared prompt, rest of chosen, rest of rejected],
  the rejected answer's positions continuing from the prompt and its attention seeing the prompt but not the chosen
  answer (train/packing.py:pair_attention), so the prompt's activations are computed once for both answers;
- projects only the hidden states that predict a completion token (`completion_head`), and scatters the
  log-probabilities and statistics back to TRL's (rows, length - 1) layout.

TRL's loss code then runs unchanged, so every `loss_type` works as TRL defines it; tests/train/test_shared_prompt.py
checks that loss and gradients equal TRL's on the same batch. Batches this cannot improve on (a model that scales or
caps its logits, attention without per-pair support) take TRL's path.
"""

from __future__ import annotations

import functools
import types
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from tunelab.train.packing import PACKED_ATTENTION

IGNORE_INDEX = -100
HEAD_OUTPUTS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")  # TRL's field order
HEAD_CHUNK_ROWS = 1024  # rows of fp32 logits alive at once: 1024 × 49k vocabulary ≈ 200 MB


@dataclass
class PairLayout:
    """Where each position of TRL's padded rows lives in the packed row."""

    input_ids: torch.Tensor  # (1, T) the packed row
    position_ids: torch.Tensor  # (1, T)
    segments: list[tuple[int, int, int]]  # per pair: (shared prefix, rest of chosen, rest of rejected)
    index: torch.Tensor  # (rows, length) packed position of each padded position (0 on padding)


def shared_prefix(first: torch.Tensor, second: torch.Tensor) -> int:
    """Length of the common prefix of two token sequences."""
    length = min(first.numel(), second.numel())
    differ = (first[:length] != second[:length]).nonzero()
    return int(differ[0]) if differ.numel() else length


def pair_layout(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> PairLayout:
    """The packed row for a TRL preference batch: rows [chosen_0..chosen_{B-1}, rejected_0..rejected_{B-1}], right
    padded (TRL's DataCollatorForPreference). Padding must be on the right: real tokens first in every row."""
    rows, length = input_ids.shape
    pairs = rows // 2
    lengths = attention_mask.sum(dim=1).tolist()
    ids, positions, segments = [], [], []
    index = torch.zeros(rows, length, dtype=torch.long)
    offset = 0
    for pair in range(pairs):
        chosen, rejected = pair, pair + pairs
        chosen_ids, rejected_ids = input_ids[chosen, : lengths[chosen]], input_ids[rejected, : lengths[rejected]]
        shared = shared_prefix(chosen_ids, rejected_ids)
        rest = lengths[rejected] - shared
        ids += [chosen_ids, rejected_ids[shared:]]
        positions += [torch.arange(lengths[chosen]), torch.arange(shared, lengths[rejected])]
        segments.append((shared, lengths[chosen] - shared, rest))
        rest_start = offset + lengths[chosen]
        index[chosen, : lengths[chosen]] = torch.arange(offset, rest_start)
        index[rejected, :shared] = torch.arange(offset, offset + shared)
        index[rejected, shared : lengths[rejected]] = torch.arange(rest_start, rest_start + rest)
        offset = rest_start + rest
    device = input_ids.device
    return PairLayout(
        input_ids=torch.cat(ids).unsqueeze(0),
        position_ids=torch.cat(positions).unsqueeze(0).to(device),
        segments=segments,
        index=index.to(device),
    )


def right_padded(attention_mask: torch.Tensor) -> bool:
    """Every row's real tokens come first (TRL pads preference batches on the right)."""
    lengths = attention_mask.sum(dim=1, keepdim=True)
    expected = torch.arange(attention_mask.shape[1], device=attention_mask.device).unsqueeze(0) < lengths
    return bool((attention_mask.bool() == expected).all())


def can_share_prompts(model, kwargs: dict) -> bool:
    """Whether this forward call can take the packed pair path (else TRL's own fused head runs)."""
    config = model.config.get_text_config()
    attention_mask, input_ids = kwargs.get("attention_mask"), kwargs.get("input_ids")
    return (
        input_ids is not None
        and attention_mask is not None
        and input_ids.dim() == 2
        and input_ids.shape[0] % 2 == 0
        and {key for key, value in kwargs.items() if value is not None} <= {"input_ids", "attention_mask", "use_cache"}
        and model.config._attn_implementation == PACKED_ATTENTION
        and getattr(config, "final_logit_softcapping", None) is None
        and all(getattr(config, name, None) in (None, 1.0) for name in ("logit_scale", "output_multiplier"))
        and getattr(config, "lm_head_multiplier", None) is None
        and getattr(config, "logits_scaling", None) is None
        and not getattr(config, "output_router_logits", False)
        and right_padded(attention_mask)
    )


def _head_chunk(hidden, weight, bias, targets, outputs: tuple[str, ...]):
    """The completion head on a chunk of rows: log p(target) with gradient, the logged statistics without."""
    logits = torch.nn.functional.linear(hidden, weight, bias).float()
    normalised = logits.log_softmax(dim=-1)
    log_probs = normalised.gather(1, targets[:, None])[:, 0]
    extras = dict.fromkeys(HEAD_OUTPUTS[1:])
    with torch.no_grad():
        if "entropy" in outputs:
            extras["entropy"] = -(normalised.exp() * normalised).sum(dim=-1)
        if "log_sum_sq_probs" in outputs:
            extras["log_sum_sq_probs"] = torch.logsumexp(2 * normalised, dim=-1)
        if "mean_logits" in outputs:
            extras["mean_logits"] = logits.mean(dim=-1)
        if "is_top1" in outputs:
            extras["is_top1"] = logits.argmax(dim=-1) == targets
    return log_probs, *extras.values()


def completion_head(hidden, weight, bias, targets, outputs: tuple[str, ...], chunk_rows: int = HEAD_CHUNK_ROWS):
    """Per-row log-probabilities of `targets` (and TRL's optional statistics) from the LM head, in fp32 over the
    vocabulary. Why not TRL's ChunkedLogProbFunction: on a CPU its vocabulary tiles cost several elementwise passes
    each (measured: a third of a DPO step), where one log-softmax per chunk of rows costs one; chunks of rows
    beyond the first are recomputed in the backward pass, so one chunk's fp32 logits are alive at a time."""
    if hidden.shape[0] <= chunk_rows:
        return _head_chunk(hidden, weight, bias, targets, outputs)
    parts = []
    for start in range(0, hidden.shape[0], chunk_rows):
        rows = slice(start, start + chunk_rows)
        parts.append(checkpoint(_head_chunk, hidden[rows], weight, bias, targets[rows], outputs, use_reentrant=False))
    return tuple(None if part[0] is None else torch.cat(part) for part in zip(*parts, strict=True))


def shared_prompt_logprobs(model, input_ids, attention_mask, labels, outputs: tuple[str, ...]):
    """TRL's FusedCausalLMOutput fields for a preference batch, computed over the packed pairs."""
    from trl.trainer.utils import FusedCausalLMOutput

    layout = pair_layout(input_ids, attention_mask)
    hidden = model.base_model(
        input_ids=layout.input_ids, position_ids=layout.position_ids, use_cache=False, pair_segments=layout.segments
    ).last_hidden_state[0]
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    lm_head = model.get_output_embeddings()
    per_token = completion_head(
        hidden[layout.index[:, :-1][mask]], lm_head.weight, lm_head.bias, targets[mask], outputs
    )
    # masked_scatter keeps an all-masked batch connected to the graph, as TRL's compact path does
    fields = dict(zip(HEAD_OUTPUTS, per_token, strict=True))
    fields = {
        name: None if x is None else x.new_zeros(mask.shape).masked_scatter(mask, x) for name, x in fields.items()
    }
    loss = -fields["log_probs"].sum() / mask.sum().clamp(min=1)
    return FusedCausalLMOutput(loss=loss, label_mask=mask, **fields)


def share_prompts(model, outputs: tuple[str, ...]) -> None:
    """Route `model`'s fused-head calls (TRL's DPOTrainer patched its forward with `add_fused_lm_head`) through the
    packed pair path when the batch allows it. `model` is the causal LM under any PEFT wrapper."""
    fused_forward = model.forward

    @functools.wraps(fused_forward)
    def forward(self, *args, fused_lm_head=False, labels=None, **kwargs):
        if fused_lm_head and labels is not None and not args and can_share_prompts(self, kwargs):
            # PEFT's causal-LM wrapper passes its unused arguments as None. A training-mode call without gradient is
            # the reference pass, of which TRL reads only the log-probabilities: the statistics would be wasted.
            wanted = outputs if self.training is torch.is_grad_enabled() else ("log_probs",)
            return shared_prompt_logprobs(self, kwargs["input_ids"], kwargs["attention_mask"], labels, wanted)
        if labels is not None:
            kwargs["labels"] = labels
        return fused_forward(*args, fused_lm_head=fused_lm_head, **kwargs)

    model.forward = types.MethodType(forward, model)


def share_trainer_prompts(trainer) -> bool:
    """Apply `share_prompts` to a TRL DPOTrainer's policy and reference model, with the per-token outputs TRL asks
    each for; False (TRL's path kept) when the policy cannot use per-pair attention."""
    policy = trainer.model.get_base_model() if hasattr(trainer.model, "get_base_model") else trainer.model
    if policy.config._attn_implementation != PACKED_ATTENTION:
        return False
    outputs = ("log_probs", "entropy", "mean_logits", "is_top1")
    share_prompts(policy, outputs + (("log_sum_sq_probs",) if trainer.use_weighting else ()))
    if trainer.ref_model is not None:
        share_prompts(trainer.ref_model, ("log_probs",))
    return True
