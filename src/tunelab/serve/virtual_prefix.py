"""Virtual-token adapters (prefix tuning, prompt tuning, P-tuning) in the server.

Their trained tokens come before every prompt, the same for every request: a prefix all their requests share. So
each adapter's prefix is computed once, as a key/value cache (prefix tuning: PEFT's own trained keys and values;
prompt and P-tuning: the base model run over the trained input embeddings, at positions 0…n−1), and every prefill
starts from a copy of it, with the prompt's positions after it. Decoding then runs the base model on that cache —
PEFT's own forward would put the tokens in front again at every step (its `generate` avoids that with a special
first step; the server's loop is its own). The outputs equal PEFT's `generate` (tests/serve/test_virtual_prefix.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

VIRTUAL_TOKEN_TYPES = ("PROMPT_TUNING", "PREFIX_TUNING", "P_TUNING")


def virtual_adapters(model) -> set[str]:
    """Names of the model's virtual-token adapters (none for a plain model)."""
    types = {name: getattr(config, "peft_type", None) for name, config in getattr(model, "peft_config", {}).items()}
    return {name for name, kind in types.items() if getattr(kind, "value", kind) in VIRTUAL_TOKEN_TYPES}


class VirtualPrefixes:
    """The prefix cache of each virtual-token adapter the server holds: per layer (keys, values) of one row."""

    def __init__(self):
        self.layers: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def length(self, adapter: str) -> int:
        """How many virtual tokens come before the prompt under `adapter` (0: not a virtual-token adapter)."""
        layers = self.layers.get(adapter)
        return layers[0][0].shape[2] if layers else 0

    @torch.inference_mode()
    def compute(self, model, adapter: str) -> None:
        """Compute and keep `adapter`'s prefix (the caller holds the model's lock)."""
        from transformers import DynamicCache

        previous = model.active_adapter
        model.set_adapter(adapter)
        try:
            prompt = model.get_prompt(batch_size=1)
        finally:
            model.set_adapter(previous)
        if isinstance(prompt, torch.Tensor):  # prompt / P-tuning: trained input embeddings
            base = model.get_base_model()
            cache = DynamicCache()
            positions = torch.arange(prompt.shape[1]).unsqueeze(0)
            base(inputs_embeds=prompt.to(base.dtype), position_ids=positions, past_key_values=cache, use_cache=True)
            prompt = cache
        self.layers[adapter] = [(layer.keys.detach(), layer.values.detach()) for layer in prompt.layers]

    def seeded_cache(self, adapter: str, rows: int):
        """A cache holding `adapter`'s prefix in each of `rows` rows, to prefill after."""
        from transformers import DynamicCache

        cache = DynamicCache()
        for index, (keys, values) in enumerate(self.layers[adapter]):
            cache.update(keys.expand(rows, -1, -1, -1).clone(), values.expand(rows, -1, -1, -1).clone(), index)
        return cache

    def prefill(self, adapter: str, prompts: list[list[int]], pad: int, forward: Callable):
        """(last-position logits, cache, mask, last positions) of left-padded prompts after `adapter`'s virtual
        tokens, from a copy of its prefix cache; `forward(ids, mask, positions, cache)` runs the model."""
        ids, mask, positions = prefill_inputs(prompts, self.length(adapter), pad)
        cache = self.seeded_cache(adapter, len(prompts))
        return forward(ids, mask, positions, cache), cache, mask, positions[:, -1:]

    def forget(self, adapter: str) -> None:
        self.layers.pop(adapter, None)


def prefill_inputs(prompts: list[list[int]], virtual: int, pad: int):
    """(ids, attention mask, positions) of left-padded prompts after `virtual` prefix tokens: the mask covers the
    prefix (every row sees it), the positions continue after it."""
    width = max(len(prompt) for prompt in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    own = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    positions = virtual + (own.cumsum(-1) - 1).clamp(min=0)
    mask = torch.cat([torch.ones(len(prompts), virtual, dtype=own.dtype), own], dim=1)
    return ids, mask, positions
