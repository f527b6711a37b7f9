"""Prompts that begin like an earlier one reuse its keys and values (prefix caching, as vLLM and SGLang do).

Requests to one adapter usually share their beginning: the run's system prompt, a few-shot block, the chat
template's header. Prefilling a prompt on a CPU is compute-bound (~85 ms for the quickstart's ~90-token prompts on
the built-in model, and every other row of a running batch waits for it), so the shared part is computed once: per
adapter, the cache of the last prompt prefilled is kept, and a prompt that shares at least `MIN_SHARED` tokens with
it starts from a copy of those positions and prefills only the rest. The keys and values of a position depend only
on the tokens up to it (and the adapter), so the result is the same prefill, up to float rounding of products
over fewer rows.

One entry per adapter (a few MB for the built-in model), dropped when adapters change.
"""

from __future__ import annotations

import torch

MIN_SHARED = 16  # shared tokens below which a prompt is prefilled whole (the copy would cost about as much)


class PrefixStore:
    def __init__(self):
        self.entries: dict[str, tuple[list[int], list[tuple[torch.Tensor, torch.Tensor]]]] = {}
        self.reused_tokens = 0

    def shared(self, model: str, prompt: list[int]) -> int:
        """How many leading tokens of `prompt` have cached keys and values for `model` (0 below MIN_SHARED); the
        last token is always prefilled, as its logits are needed."""
        entry = self.entries.get(model)
        if entry is None:
            return 0
        tokens, limit, count = entry[0], min(len(entry[0]), len(prompt) - 1), 0
        while count < limit and tokens[count] == prompt[count]:
            count += 1
        return count if count >= MIN_SHARED else 0

    def seeded_cache(self, model: str, length: int):
        """A one-row cache holding copies of the first `length` positions of `model`'s entry."""
        from transformers import DynamicCache

        cache = DynamicCache()
        for index, (keys, values) in enumerate(self.entries[model][1]):
            cache.update(keys[:, :, :length].clone(), values[:, :, :length].clone(), index)
        self.reused_tokens += length
        return cache

    def keep(self, model: str, prompt: list[int], cache) -> None:
        """Remember a one-row cache just prefilled for `prompt` (copies: the running batch goes on writing into it)."""
        self.entries[model] = (list(prompt), [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers])

    def clear(self) -> None:
        self.entries.clear()
