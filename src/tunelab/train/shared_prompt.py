"""The forward pass of DPO and of the online RL stages with each shared prompt computed once, and the LM head only
where it scores.

TRL's DPOTrainer batches a pair as two padded rows, [prompt + chosen] and [prompt + rejected]; GRPOTrainer and
RLOOTrainer batch G sampled completions of each prompt as G rows [left-padded prompt + completion]. Both then call
`model(input_ids, attention_mask, labels=..., fused_lm_head=True)` (trl.trainer.utils.add_fused_lm_head), which on a
CPU computes every row's prompt again and projects every position onto the vocabulary (it scores only the labelled
positions on Triton devices). Here the same call instead:

- packs the batch into one row without padding: rows that begin alike (a pair's two answers, a prompt's G samples)
  form a group, a leader row whole and then each member's tokens after the prefix it shares with the leader, its
  positions continuing from that prefix and its attention seeing the prefix but no other row's rest
  (train/packing.py:prefix_group_attention), so the prompt's activations are computed once for the whole group;
- projects only the hidden states that predict a labelled token (`completion_head`), and scatters the
  log-probabilities and statistics back to TRL's (rows, length - 1) layout.

TRL's loss code then runs unchanged, so every `loss_type` works as TRL defines it; tests/train/test_shared_prompt.py
checks that losses and gradients equal TRL's on the same batches (DPO and GRPO). Batches this cannot improve on (a
model that scales or caps its logits, attention without per-group support) take TRL's path.
"""

from __future__ import annotations

import functools
import types
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from tunelab.train.loss import plain_head
from tunelab.train.packing import PACKED_ATTENTION

IGNORE_INDEX = -100
HEAD_OUTPUTS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")  # TRL's field order
HEAD_CHUNK_ROWS = 1024  # rows of fp32 logits alive at once: 1024 × 49k vocabulary ≈ 200 MB


@dataclass
class PrefixLayout:
    """Where each position of TRL's padded rows lives in the packed row."""

    input_ids: torch.Tensor  # (1, T) the packed row
    position_ids: torch.Tensor  # (1, T)
    groups: list[tuple[int, tuple[tuple[int, int], ...]]]  # per group: (leader length, ((shared, rest), ...))
    index: torch.Tensor  # (rows, length) packed position of each padded position (0 on padding)


def shared_prefix(first: torch.Tensor, second: torch.Tensor) -> int:
    """Length of the common prefix of two token sequences."""
    length = min(first.numel(), second.numel())
    differ = (first[:length] != second[:length]).nonzero()
    return int(differ[0]) if differ.numel() else length


def real_spans(attention_mask: torch.Tensor) -> list[tuple[int, int]]:
    """(start, end) of each row's real tokens, which must be contiguous (left, right or both sides padded)."""
    ones = attention_mask.bool()
    starts = ones.int().argmax(dim=1).tolist()
    lengths = ones.sum(dim=1).tolist()
    return [(start, start + length) for start, length in zip(starts, lengths, strict=True)]


def contiguous_rows(attention_mask: torch.Tensor) -> bool:
    """Every row's real tokens form one run (padding only before and after them)."""
    width = attention_mask.shape[1]
    columns = torch.arange(width, device=attention_mask.device).unsqueeze(0)
    spans = torch.tensor(real_spans(attention_mask), device=attention_mask.device).reshape(-1, 2)
    expected = (columns >= spans[:, :1]) & (columns < spans[:, 1:])
    return bool((attention_mask.bool() == expected).all())


def prefix_groups(rows: list[torch.Tensor]) -> list[tuple[int, list[tuple[int, int]]]]:
    """Rows grouped by shared beginnings: (leader row, [(member row, tokens it shares with the leader), ...]); a row
    joins the earlier leader it shares the most tokens with, or leads a new group when it shares none."""
    groups: list[tuple[int, list[tuple[int, int]]]] = []
    for row, tokens in enumerate(rows):
        shares = [shared_prefix(tokens, rows[leader]) for leader, _ in groups]
        best = max(range(len(shares)), key=shares.__getitem__, default=None)
        if best is None or shares[best] == 0:
            groups.append((row, []))
        else:
            groups[best][1].append((row, shares[best]))
    return groups


def prefix_layout(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> PrefixLayout:
    """The packed row for a padded batch whose rows' real tokens are contiguous (`contiguous_rows`)."""
    spans = real_spans(attention_mask)
    rows = [input_ids[row, start:end] for row, (start, end) in enumerate(spans)]
    ids, positions, layout_groups = [], [], []
    index = torch.zeros(input_ids.shape, dtype=torch.long)
    offset = 0
    for leader, members in prefix_groups(rows):
        leader_start, length = offset, len(rows[leader])
        ids.append(rows[leader])
        positions.append(torch.arange(length))
        index[leader, spans[leader][0] : spans[leader][1]] = torch.arange(offset, offset + length)
        offset += length
        for row, shared in members:
            start, end = spans[row]
            rest = end - start - shared
            ids.append(rows[row][shared:])
            positions.append(torch.arange(shared, shared + rest))
            index[row, start : start + shared] = torch.arange(leader_start, leader_start + shared)
            index[row, start + shared : end] = torch.arange(offset, offset + rest)
            offset += rest
        layout_groups.append((length, tuple((shared, len(rows[row]) - shared) for row, shared in members)))
    device = input_ids.device
    return PrefixLayout(
        input_ids=torch.cat(ids).unsqueeze(0),
        position_ids=torch.cat(positions).unsqueeze(0).to(device),
        groups=layout_groups,
        index=index.to(device),
    )


def can_share_prompts(model, kwargs: dict) -> bool:
    """Whether this forward call can take the packed pair path (else TRL's own fused head runs)."""
    attention_mask, input_ids = kwargs.get("attention_mask"), kwargs.get("input_ids")
    return (
        input_ids is not None
        and attention_mask is not None
        and input_ids.dim() == 2
        and {key for key, value in kwargs.items() if value is not None} <= {"input_ids", "attention_mask", "use_cache"}
        and model.config._attn_implementation == PACKED_ATTENTION
        and plain_head(model.config)
        and contiguous_rows(attention_mask)
    )


def _head_chunk(hidden, weight, bias, targets, outputs: tuple[str, ...], temperature: float = 1.0):
    """The completion head on a chunk of rows: log p(target) with gradient, the logged statistics without."""
    logits = torch.nn.functional.linear(hidden, weight, bias).float()
    if temperature != 1.0:
        logits = logits / temperature  # as TRL's fused head: every output is of the temperature-scaled distribution
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


def completion_head(
    hidden, weight, bias, targets, outputs: tuple[str, ...], temperature: float = 1.0, chunk_rows: int = HEAD_CHUNK_ROWS
):
    """Per-row log-probabilities of `targets` (and TRL's optional statistics) from the LM head, in fp32 over the
    vocabulary. Why not TRL's ChunkedLogProbFunction: on a CPU its vocabulary tiles cost several elementwise passes
    each (measured: a third of a DPO step), where one log-softmax per chunk of rows costs one; chunks of rows
    beyond the first are recomputed in the backward pass, so one chunk's fp32 logits are alive at a time."""
    if hidden.shape[0] <= chunk_rows:
        return _head_chunk(hidden, weight, bias, targets, outputs, temperature)
    parts = []
    for start in range(0, hidden.shape[0], chunk_rows):
        rows = slice(start, start + chunk_rows)
        chunk = (hidden[rows], weight, bias, targets[rows], outputs, temperature)
        parts.append(checkpoint(_head_chunk, *chunk, use_reentrant=False))
    return tuple(None if part[0] is None else torch.cat(part) for part in zip(*parts, strict=True))


def shared_prompt_logprobs(
    model, input_ids, attention_mask, labels, outputs: tuple[str, ...], temperature: float = 1.0
):
    """TRL's FusedCausalLMOutput fields for a batch, computed over the packed row."""
    from trl.trainer.utils import FusedCausalLMOutput

    layout = prefix_layout(input_ids, attention_mask)
    hidden = model.base_model(
        input_ids=layout.input_ids, position_ids=layout.position_ids, use_cache=False, prefix_groups=layout.groups
    ).last_hidden_state[0]
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    lm_head = model.get_output_embeddings()
    per_token = completion_head(
        hidden[layout.index[:, :-1][mask]], lm_head.weight, lm_head.bias, targets[mask], outputs, temperature
    )
    # masked_scatter keeps an all-masked batch connected to the graph, as TRL's compact path does
    fields = dict(zip(HEAD_OUTPUTS, per_token, strict=True))
    fields = {
        name: None if x is None else x.new_zeros(mask.shape).masked_scatter(mask, x) for name, x in fields.items()
    }
    loss = -fields["log_probs"].sum() / mask.sum().clamp(min=1)
    return FusedCausalLMOutput(loss=loss, label_mask=mask, **fields)


def share_prompts(model, outputs: tuple[str, ...], temperature: float = 1.0, trim_reference: bool = False) -> None:
    """Route `model`'s fused-head calls (TRL's trainers patched its forward with `add_fused_lm_head`) through the
    packed path when the batch allows it. `model` is the causal LM under any PEFT wrapper. `trim_reference`: a
    training-mode call without gradient is DPO's reference pass, of which TRL reads only the log-probabilities."""
    fused_forward = model.forward

    @functools.wraps(fused_forward)
    def forward(self, *args, fused_lm_head=False, labels=None, **kwargs):
        if fused_lm_head and labels is not None and not args and can_share_prompts(self, kwargs):
            # PEFT's causal-LM wrapper passes its unused arguments as None
            reference = trim_reference and self.training is not torch.is_grad_enabled()
            wanted = ("log_probs",) if reference else outputs
            ids, mask = kwargs["input_ids"], kwargs["attention_mask"]
            return shared_prompt_logprobs(self, ids, mask, labels, wanted, temperature)
        if labels is not None:
            kwargs["labels"] = labels
        return fused_forward(*args, fused_lm_head=fused_lm_head, **kwargs)

    model.forward = types.MethodType(forward, model)


def _causal_lm(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def share_trainer_prompts(trainer) -> bool:
    """Apply `share_prompts` to a TRL DPOTrainer's policy and reference model, with the per-token outputs TRL asks
    each for; False (TRL's path kept) when the policy cannot use per-group attention."""
    policy = _causal_lm(trainer.model)
    if policy.config._attn_implementation != PACKED_ATTENTION:
        return False
    outputs = ("log_probs", "entropy", "mean_logits", "is_top1")
    share_prompts(policy, outputs + (("log_sum_sq_probs",) if trainer.use_weighting else ()), trim_reference=True)
    if trainer.ref_model is not None:
        share_prompts(trainer.ref_model, ("log_probs",))
    return True


def share_online_prompts(trainer) -> bool:
    """The same for TRL's GRPOTrainer and RLOOTrainer, whose rows are a prompt's G completions: the prompt is computed
    once per group instead of G times, at the trainer's sampling temperature."""
    policy = _causal_lm(trainer.model)
    if policy.config._attn_implementation != PACKED_ATTENTION:
        return False
    share_prompts(policy, ("log_probs", "entropy"), trainer.temperature)
    if getattr(trainer, "ref_model", None) is not None:
        share_prompts(trainer.ref_model, ("log_probs",), trainer.temperature)
    return True
