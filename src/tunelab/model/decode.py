"""Sampling many completions at once, fast, for RL rollouts: the decoding loop of `serve/engine.py` without a server.

Rollouts are most of an RL step's time, and `generate()` spends it badly on a CPU: every prompt's G copies are
prefilled G times, finished rows go on being computed until the longest one ends, and each step re-packs every
weight matrix (see fast_linear.py). Here:
- each distinct prompt is prefilled once and its cache rows are copied for its G samples;
- rows leave the batch as they finish (their cache rows are dropped, padding columns nobody needs are trimmed), and
  waiting rows join at step boundaries (continuous batching, kv_cache.py) when there are more than `max_rows`;
- linear weights can be pre-packed for oneDNN for the duration of the rollout (`packed_weights`), a LoRA layer as its
  base weight plus the adapter's current delta in a separate tensor (fast_linear.py), so the policy's current adapter
  is what samples, with no merge/unmerge drift in the frozen weights;
- each sampled token's log-probability under the sampling distribution (logits / temperature, before top-p/top-k) is
  returned, what PPO and GRPO need as the "old" policy's log-probabilities.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from tunelab.model.kv_cache import merge_caches, mergeable, trim_padding

PREFILL_TOKENS = 8192  # padded prompt tokens prefilled in one forward (`_prefill_group`)


@dataclass(frozen=True)
class SamplingSettings:
    max_new_tokens: int
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    max_rows: int = 64  # rows decoded together; more wait and join as rows finish


@dataclass
class Sample:
    prompt: list[int]
    ids: list[int] = field(default_factory=list)  # the completion's tokens, the stop token included when one ended it
    logprobs: list[float] = field(default_factory=list)  # one per token of ids
    finish: str | None = None  # "stop" | "length"


@torch.inference_mode()
def sample_completions(
    model,
    prompts: Sequence[Sequence[int]],
    settings: SamplingSettings,
    stop_ids: set[int],
    pad_id: int,
    generator: torch.Generator | None = None,
) -> list[Sample]:
    """One Sample per prompt (repeat a prompt to sample it several times), in the order given. A virtual-token
    adapter's tokens are a prefix cache computed once, and the base model decodes after it (model/virtual_prefix.py)."""
    from tunelab.model.virtual_prefix import VirtualPrefix, virtual_tokens

    prefix = None
    if virtual_tokens(model):
        prefix, model = VirtualPrefix.of(model), model.get_base_model()
    samples = [Sample(list(p)) for p in prompts]
    waiting = list(range(len(samples)))
    active: list[int] = []
    state = None  # (cache, mask, positions) of the active rows
    while waiting or active:
        room = settings.max_rows - len(active)
        if waiting and room > 0 and (state is None or mergeable(state[0])):
            joining, waiting = _prefill_group(waiting, room, samples)
            logits, new_state = _prefill(model, [samples[i].prompt for i in joining], pad_id, prefix)
            joined, new_state = _advance(samples, joining, logits, new_state, settings, stop_ids, generator)
            active, state = _join(active, state, joined, new_state)
            continue
        ids = torch.tensor([[samples[i].ids[-1]] for i in active])
        cache, mask, positions = state
        mask = torch.cat([mask, torch.ones(len(active), 1, dtype=mask.dtype)], dim=1)
        positions = positions + 1
        logits = _forward(model, ids, mask, positions, cache)
        active, state = _advance(samples, active, logits, (cache, mask, positions), settings, stop_ids, generator)
    return samples


def _prefill_group(waiting: list[int], room: int, samples: list[Sample]) -> tuple[list[int], list[int]]:
    """The rows that join next: up to `room`, while the padded prefill stays within PREFILL_TOKENS (one row at least).
    A prefill's attention holds rows × heads × length² scores at once: 60 few-shot prompts of 900 tokens took 10 GB
    in one forward; the rest join at the next step boundary."""
    count, longest = 0, 0
    for index in waiting[:room]:
        longest = max(longest, len(samples[index].prompt))
        if count and (count + 1) * longest > PREFILL_TOKENS:
            break
        count += 1
    return waiting[:count], waiting[count:]


def _forward(model, ids, mask, positions, cache) -> torch.Tensor:
    fused = fused_decoder_of(model)
    if fused is not None:
        return fused.forward(ids, mask, positions, cache)[:, -1]
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True,
                logits_to_keep=1)  # fmt: skip
    return out.logits[:, -1]


def row_logits(model, tokens: list[int], cache, keep: int = 1) -> torch.Tensor:
    """Float32 logits of the last `keep` positions after feeding one row's `tokens` on top of `cache` (a growing
    cache: positions go on from its length), through the fused decoder where a decoding block attached one."""
    start, device = cache.get_seq_length(), next(model.parameters()).device
    ids = torch.tensor([tokens], device=device)
    positions = torch.arange(start, start + len(tokens), device=device).unsqueeze(0)
    fused = fused_decoder_of(model)
    if fused is not None:
        return fused.forward(ids, None, positions, cache, keep=keep)[0]
    out = model(input_ids=ids, position_ids=positions, past_key_values=cache, use_cache=True, logits_to_keep=keep)
    return out.logits[0].float()


def _prefill(model, prompts: list[list[int]], pad_id: int, prefix=None):
    """Last-position logits and (cache, mask, positions) for the prompts (after a virtual-token `prefix`), each
    distinct prompt computed once."""
    from transformers import DynamicCache

    from tunelab.model.virtual_prefix import prefill_inputs

    distinct = list(dict.fromkeys(tuple(p) for p in prompts))
    ids, mask, positions = prefill_inputs(distinct, prefix.length if prefix is not None else 0, pad_id)
    cache = prefix.seeded_cache(len(distinct)) if prefix is not None else DynamicCache()
    logits = _forward(model, ids, mask, positions, cache)
    rows = torch.tensor([distinct.index(tuple(p)) for p in prompts])
    if len(rows) != len(distinct) or not torch.equal(rows, torch.arange(len(rows))):
        cache.batch_select_indices(rows)  # each prompt's cache rows, copied for each of its samples
    return logits[rows], (cache, mask[rows], positions[rows][:, -1:])


def _advance(samples, active, logits, state, settings, stop_ids, generator):
    """Each active row's next token; rows that finished leave (their cache rows are dropped)."""
    tokens, logprobs = _choose(logits, settings, generator)
    for row, index in enumerate(active):
        sample = samples[index]
        sample.ids.append(int(tokens[row]))
        sample.logprobs.append(float(logprobs[row]))
        if sample.ids[-1] in stop_ids:
            sample.finish = "stop"
        elif len(sample.ids) >= settings.max_new_tokens:
            sample.finish = "length"
    keep = [row for row, index in enumerate(active) if samples[index].finish is None]
    if len(keep) == len(active):
        return active, state
    cache, mask, positions = state
    if not keep:
        return [], None
    selected = torch.tensor(keep)
    cache.batch_select_indices(selected)
    mask, positions = mask[selected], positions[selected]
    mask = trim_padding(cache, mask)
    return [active[row] for row in keep], (cache, mask, positions)


def _join(active, state, joined, new_state):
    if not joined:
        return active, state
    if state is None:
        return joined, new_state
    cache, mask, positions = state
    new_cache, new_mask, new_positions = new_state
    mask = merge_caches(cache, mask, new_cache, new_mask)
    return active + joined, (cache, mask, torch.cat([positions, new_positions]))


def _choose(logits: torch.Tensor, settings: SamplingSettings, generator: torch.Generator | None):
    """(tokens, their log-probabilities under logits / temperature) for a batch of rows; greedy at temperature 0."""
    logits = logits.float()
    if settings.temperature == 0:
        tokens = logits.argmax(dim=-1)
        return tokens, torch.log_softmax(logits, dim=-1).gather(-1, tokens[:, None])[:, 0]
    scaled = logits / settings.temperature
    logprobs = torch.log_softmax(scaled, dim=-1)
    filtered = _top_k_top_p(scaled, settings.top_k, settings.top_p)
    tokens = torch.multinomial(torch.softmax(filtered, dim=-1), 1, generator=generator)[:, 0]
    return tokens, logprobs.gather(-1, tokens[:, None])[:, 0]


def _top_k_top_p(scaled: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    if top_k > 0 and top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, top_k, dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if top_p < 1.0:
        ordered, order = torch.sort(scaled, descending=True, dim=-1)
        probs = torch.softmax(ordered, dim=-1)
        outside = torch.cumsum(probs, dim=-1) - probs > top_p  # keeps at least the most likely token
        ordered = ordered.masked_fill(outside, float("-inf"))
        scaled = torch.full_like(scaled, float("-inf")).scatter(-1, order, ordered)
    return scaled


FUSED = "tunelab_fused_decoder"  # where a decoding block keeps the model's fused decoder (model/fused_decoder.py)


def fused_decoder_of(model):
    """The fused decoder a decoding block attached to `model`, while the model's adapters are still those it was
    built with; else None (the model's own forward)."""
    fused = model.__dict__.get(FUSED)
    return fused if fused is not None and fused.current(model) else None


@contextmanager
def packed_weights(model) -> Iterator[int]:
    """Inside the block, decoding runs on weights pre-packed for oneDNN (decoding is faster, see fast_linear.py):
    for a Llama-family model the fused decoder (model/fused_decoder.py, LoRA adapters added into its weights; 1.3x
    faster per token than the packed layers, measured with lookahead on the built-in model, same tokens), else each
    linear layer packed (a LoRA layer merged with its active adapter). Everything is removed after the block, so
    training's backward pass sees the ordinary layers. Packs the weights as they are now: enter it again after an
    optimizer step changed them. Yields how many products were packed.

    Where the weights are packed already (a model held packed for a session, `hold_packed_weights`), the block uses
    them as they are and leaves them packed: packing is a copy of every weight (71–900 ms for the built-in model,
    measured), which a chat turn or a judge call must not pay each time."""
    from tunelab.model.fast_linear import packed_modules, unpack_linears

    fused, packed = model.__dict__.get(FUSED), packed_modules(model)
    if fused is not None or packed:
        yield fused.products if fused is not None else len(packed)
        return
    forwards = {id(m): m.__dict__.get("forward") for m in model.modules()}
    count = _pack(model)
    try:
        yield count
    finally:
        model.__dict__.pop(FUSED, None)
        unpack_linears(model, forwards)


def _pack(model) -> int:
    from tunelab.model import fused_decoder
    from tunelab.model.fast_linear import prepack_linears

    if fused_decoder.supports(model, merged=True):
        model.__dict__[FUSED] = fused_decoder.FusedDecoder(model, merged=True)
        return model.__dict__[FUSED].products
    return prepack_linears(model, merge_lora=True)


def hold_packed_weights(model) -> int:
    """Pack the weights of a model that only decodes from now on (a chat session, a local judge or paraphraser)
    once, for good: every later `packed_weights` block reuses them. Returns how many products were packed (0 off a
    CPU or without oneDNN). Not for a model that will train: its packed copies would go stale."""
    if next(model.parameters()).device.type != "cpu":
        return 0
    model.eval()
    return _pack(model)
