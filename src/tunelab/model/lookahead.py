"""Greedy decoding of one sequence with drafts looked up in its own text (prompt-lookup speculative decoding).

Decoding one row on a CPU is bound by reading every weight once per token (bench/decode_speed.py measures the floor).
Reading them once for several tokens is the only way past it without changing precision: guess the next tokens,
then score the guesses in one forward pass and keep the longest run the model itself would have chosen. The guesses
here cost nothing: the last few tokens are looked up in the prompt and the answer so far, and the tokens that
followed their latest earlier occurrence are proposed (fine-tuned extraction and chat answers copy spans of their
input, and small models repeat themselves). Every kept token is the argmax of the model's own logits given the
tokens before it, so the answer is greedy decoding's (up to float rounding between a one-row and a several-row
product, which can only matter at an exact tie). transformers' `generate(prompt_lookup_num_tokens=…)` does the same
inside `generate`; this is the decode loop's own, so evaluation, chat and the merge checks use it on a CPU.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tunelab.model.decode import Sample, row_logits

DRAFT_TOKENS = 8  # guessed tokens scored per forward pass
LONGEST_MATCH = 3  # n-gram lengths tried, longest first


def draft(tokens: Sequence[int], count: int = DRAFT_TOKENS, longest: int = LONGEST_MATCH) -> list[int]:
    """The tokens that followed the latest earlier occurrence of the last n tokens (n = longest … 1), or none."""
    for n in range(min(longest, len(tokens) - 1), 0, -1):
        tail = list(tokens[-n:])
        for start in range(len(tokens) - n - 1, -1, -1):
            if list(tokens[start : start + n]) == tail:
                return list(tokens[start + n : start + n + count])
    return []


@torch.inference_mode()
def greedy_lookahead(model, prompt: Sequence[int], max_new_tokens: int, stop_ids: set[int]) -> Sample:
    """Greedy completion of one prompt, several tokens per forward pass where the drafts are right."""
    from transformers import DynamicCache

    sample = Sample(list(prompt))
    cache = DynamicCache()
    logits = row_logits(model, list(prompt), cache, keep=1)
    croppable = all(getattr(layer, "is_croppable", False) for layer in cache.layers)  # not sliding-window layers
    guesses: list[int] = []
    while True:
        kept = _accept(sample, logits, guesses, max_new_tokens, stop_ids)
        if sample.finish is not None:
            return sample
        if len(guesses) > kept - 1:  # the cache holds every guess; keep those the model agreed with
            cache.crop(-(len(guesses) - (kept - 1)))
        guesses = draft(sample.prompt + sample.ids)[: max_new_tokens - len(sample.ids) - 1] if croppable else []
        logits = row_logits(model, [sample.ids[-1], *guesses], cache, keep=len(guesses) + 1)


def _accept(sample: Sample, logits: torch.Tensor, guesses: list[int], max_new: int, stops: set[int]) -> int:
    """Append the model's choices while they agree with the guesses (the first one that does not is the model's own
    next token, and is kept too); returns how many were appended."""
    choices = logits.argmax(dim=-1).tolist()
    logprobs = torch.log_softmax(logits, dim=-1)
    for index, token in enumerate(choices):
        sample.ids.append(token)
        sample.logprobs.append(float(logprobs[index, token]))
        if token in stops:
            sample.finish = "stop"
        elif len(sample.ids) >= max_new:
            sample.finish = "length"
        if sample.finish is not None or index >= len(guesses) or guesses[index] != token:
            return index + 1
    return len(choices)
