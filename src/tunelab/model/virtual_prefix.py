"""Virtual-token adapters (prefix tuning, prompt tuning, P-tuning) in a decoding loop of our own: the server's, the
web chat's, the RL rollouts'.

Their trained tokens come before every prompt, the same for every sequence: a prefix all sequences share. So it is
computed once, as a key/value cache (prefix tuning: PEFT's own trained keys and values; prompt and P-tuning: the base
model run over the trained input embeddings, at positions 0…n−1), each prefill starts from a copy of it with the
prompt's positions after it, and decoding runs the base model on that cache. PEFT's own forward would put the tokens
in front again at every step (its `generate` avoids that with a special first step). The logits equal PEFT's forward
(tests/serve/test_virtual_prefix.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

VIRTUAL_TOKEN_TYPES = ("PROMPT_TUNING", "PREFIX_TUNING", "P_TUNING")


def virtual_tokens(model) -> bool:
    """A prompt-learning adapter (prefix, prompt, P-tuning): PEFT puts its virtual tokens (or prefix keys and values)
    in front at the first step of its own `generate` only; a decoding loop that calls the forward itself would add
    them at every step, or not at all."""
    config = getattr(model, "active_peft_config", None)
    return bool(config is not None and config.is_prompt_learning)


def virtual_adapters(model) -> set[str]:
    """Names of the model's virtual-token adapters (none for a plain model)."""
    types = {name: getattr(config, "peft_type", None) for name, config in getattr(model, "peft_config", {}).items()}
    return {name for name, kind in types.items() if getattr(kind, "value", kind) in VIRTUAL_TOKEN_TYPES}


class VirtualPrefix:
    """One virtual-token adapter's prefix: per layer (keys, values) of one row."""

    def __init__(self, layers: list[tuple[torch.Tensor, torch.Tensor]]):
        self.layers = layers

    @classmethod
    @torch.inference_mode()
    def of(cls, model, adapter: str | None = None) -> VirtualPrefix:
        """The prefix of the PEFT model's `adapter` (default: the active one); the caller holds the model."""
        from transformers import DynamicCache

        previous = model.active_adapter
        model.set_adapter(adapter or previous)
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
        return cls([(layer.keys.detach(), layer.values.detach()) for layer in prompt.layers])

    @property
    def length(self) -> int:
        """How many virtual tokens come before the prompt."""
        return self.layers[0][0].shape[2]

    def seeded_cache(self, rows: int):
        """A cache holding the prefix in each of `rows` rows, to prefill after."""
        from transformers import DynamicCache

        cache = DynamicCache()
        for index, (keys, values) in enumerate(self.layers):
            cache.update(keys.expand(rows, -1, -1, -1).clone(), values.expand(rows, -1, -1, -1).clone(), index)
        return cache

    def prefill(self, prompts: list[list[int]], pad: int, forward: Callable):
        """(last-position logits, cache, mask, last positions) of left-padded prompts after the virtual tokens, from a
        copy of the prefix cache; `forward(ids, mask, positions, cache)` runs the base model."""
        ids, mask, positions = prefill_inputs(prompts, self.length, pad)
        cache = self.seeded_cache(len(prompts))
        return forward(ids, mask, positions, cache), cache, mask, positions[:, -1:]


def prefill_inputs(prompts: list[list[int]], virtual: int, pad: int):
    """(ids, attention mask, positions) of left-padded prompts after `virtual` prefix tokens (0: none): the mask covers
    the prefix (every row sees it), the positions continue after it (as generate() computes them for left padding)."""
    width = max(len(prompt) for prompt in prompts)
    ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts])
    own = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    positions = virtual + (own.cumsum(-1) - 1).clamp(min=0)
    mask = torch.cat([torch.ones(len(prompts), virtual, dtype=own.dtype), own], dim=1)
    return ids, mask, positions
