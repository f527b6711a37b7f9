"""Greedy batched generation from token-id prompts: held-out evaluation, merge verification, `tunelab chat`,
local paraphrasing and the judge use it; the server (serve/) takes its stop tokens.

Prompts are left padded with an attention mask, so a prompt's output does not depend on which batch it lands in.
Batches are formed from prompts sorted by length to keep padding small; results come back in the input order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from transformers import GenerationConfig

from tunelab.model.virtual_prefix import virtual_tokens

# End-of-turn markers of common chat templates; generation stops at any that the tokenizer knows as one token.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")

BatchCallback = Callable[[list[int], list[dict[str, Any]]], None]


@contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Switch off dropout (LoRA dropout included) for the block and restore the caller's mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def stop_token_ids(model, tokenizer) -> list[int]:
    """Ids that end a completion: the generation config's eos ids, the tokenizer's eos, known end-of-turn tokens."""
    ids: list[int] = []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.append(configured)
    elif configured:
        ids.extend(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    ids.extend(vocab[token] for token in END_OF_TURN_TOKENS if token in vocab)
    return sorted(set(ids))


def _pad_left(prompts: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(p) for p in prompts)
    ids = [[pad_id] * (width - len(p)) + list(p) for p in prompts]
    mask = [[0] * (width - len(p)) + [1] * len(p) for p in prompts]
    return torch.tensor(ids, device=device), torch.tensor(mask, device=device)


def _completion(tokens: list[int], stops: set[int], tokenizer) -> dict[str, Any]:
    """Cut generated tokens at the first stop token; the stop token counts as generated but is not in the text."""
    for position, token in enumerate(tokens):
        if token in stops:
            text = tokenizer.decode(tokens[:position], skip_special_tokens=True)
            return {"text": text, "finish_reason": "stop", "completion_tokens": position + 1}
    text = tokenizer.decode(tokens, skip_special_tokens=True)
    return {"text": text, "finish_reason": "length", "completion_tokens": len(tokens)}


def _generate_one_batch(model, tokenizer, prompts, config: GenerationConfig, stops: set[int]) -> list[dict]:
    input_ids, attention_mask = _pad_left(prompts, config.pad_token_id, model.device)
    output = model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
    new_tokens = output[:, input_ids.shape[1] :].tolist()
    return [_completion(tokens, stops, tokenizer) for tokens in new_tokens]


def _decode_one_batch(model, tokenizer, prompts, config: GenerationConfig, stops: set[int]) -> list[dict]:
    """The same completions through model/decode.py's loop (the one RL rollouts and the server use): each distinct
    prompt prefilled once, rows leaving the batch as they finish instead of being computed until the longest ends;
    one greedy prompt alone through model/lookahead.py (drafts from its own text, checked in one pass)."""
    from tunelab.model.decode import SamplingSettings, sample_completions

    temperature = config.temperature if config.do_sample else 0.0
    if temperature == 0 and len(prompts) == 1 and not virtual_tokens(model):  # one greedy answer: drafts checked
        from tunelab.model.lookahead import greedy_lookahead

        sample = greedy_lookahead(model, prompts[0], config.max_new_tokens, stops)
        return [_completion(sample.ids, stops, tokenizer)]
    settings = SamplingSettings(max_new_tokens=config.max_new_tokens, temperature=temperature, max_rows=len(prompts))
    samples = sample_completions(model, prompts, settings, stops, config.pad_token_id)
    return [_completion(sample.ids, stops, tokenizer) for sample in samples]


def _decoding(model):
    """(one-batch function, context) for `generate_batch`: on a CPU the decode loop, with weights packed for oneDNN
    (fast_linear.py: several rows, a greedy answer's drafts checked in one pass, and one row where that is faster);
    elsewhere transformers' `generate`."""
    from contextlib import nullcontext

    if model.device.type != "cpu":  # virtual tokens too: the loop puts them in front once, at explicit positions
        return _generate_one_batch, nullcontext()  # (PEFT's forward drops position ids: left padding would shift them)
    from tunelab.model.decode import packed_weights

    return _decode_one_batch, packed_weights(model)


def greedy_config(model, tokenizer, max_new_tokens: int) -> GenerationConfig:
    """A greedy generation config that stops at every stop id and pads with the tokenizer's pad (or first stop) id."""
    stops = stop_token_ids(model, tokenizer)
    if not stops:
        from tunelab.errors import ModelError

        raise ModelError("the tokenizer has no eos token, so generation could not stop; set `eos_token` on it")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    return GenerationConfig(
        do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=stops, pad_token_id=pad_id, use_cache=True
    )


def generate_batch(
    model,
    tokenizer,
    prompts: list[list[int]],
    max_new_tokens: int,
    batch_size: int = 16,
    on_batch: BatchCallback | None = None,
    *,
    temperature: float = 0.0,
) -> list[dict[str, Any]]:
    """Greedy completions for token-id prompts: [{"text", "finish_reason": "stop"|"length", "completion_tokens"}].

    `on_batch(indices, results)` is called after each batch with the prompts' input positions, so a caller can save
    progress as it goes. A `temperature` above 0 samples instead (seed torch first to reproduce).
    """
    if not prompts:
        return []
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    config = greedy_config(model, tokenizer, max_new_tokens)
    if temperature > 0:
        config.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
    stops = set(config.eos_token_id)
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    results: list[dict[str, Any] | None] = [None] * len(prompts)
    one_batch, decoding = _decoding(model)
    with eval_mode(model), torch.inference_mode(), decoding:
        for start in range(0, len(order), max(1, batch_size)):
            indices = order[start : start + max(1, batch_size)]
            batch = one_batch(model, tokenizer, [prompts[i] for i in indices], config, stops)
            for index, result in zip(indices, batch, strict=True):
                results[index] = result
            if on_batch is not None:
                on_batch(indices, batch)
    return results  # type: ignore[return-value]
