"""Paraphrases from a local model for `tunelab data augment` (what to ask and what to keep is `data/augment.py`).

Imports of torch and the model code are deferred to first use, so `tunelab data augment --base-url ...` does not pay
for them.
"""

from __future__ import annotations

from typing import Any

from tunelab.data.augment import Completion


class LocalParaphraser:
    """A local model (alias, folder, .gguf or hub id), prompted through its chat template, generating in batches."""

    def __init__(self, model_name: str, max_new_tokens: int = 128, batch_size: int = 8, temperature: float = 0.8):
        from tunelab.data.tokenize import ensure_chat_template
        from tunelab.model.decode import hold_packed_weights
        from tunelab.model.load import load_model

        self.name = model_name
        self.model, self.tokenizer, _ = load_model(model_name)
        hold_packed_weights(self.model)  # once, not at every batch of paraphrases
        ensure_chat_template(self.tokenizer)
        self.max_new_tokens, self.batch_size, self.temperature = max_new_tokens, batch_size, temperature

    def complete(self, prompts: list[str], sample: bool = False, seed: int = 0) -> list[Completion]:
        from tunelab.data.tokenize import prompt_ids_for_generation
        from tunelab.model.generate import generate_batch

        ids = [prompt_ids_for_generation(self.tokenizer, [{"role": "user", "content": p}]) for p in prompts]
        if sample:
            results = self._sampled(ids, seed)
        else:
            results = generate_batch(self.model, self.tokenizer, ids, self.max_new_tokens, self.batch_size)
        return [Completion(text=result["text"]) for result in results]

    def _sampled(self, ids: list[list[int]], seed: int) -> list[dict[str, Any]]:
        """Sampled generation under a forked RNG, so a seed reproduces and the caller's random state is untouched."""
        import torch

        from tunelab.model.generate import _generate_one_batch, eval_mode, greedy_config

        config = greedy_config(self.model, self.tokenizer, self.max_new_tokens)
        config.do_sample, config.temperature, config.top_p = True, self.temperature, 0.95
        stops, results, size = set(config.eos_token_id), [], max(1, self.batch_size)
        with torch.random.fork_rng(devices=[]), eval_mode(self.model), torch.inference_mode():
            torch.manual_seed(seed)
            for start in range(0, len(ids), size):
                results += _generate_one_batch(self.model, self.tokenizer, ids[start : start + size], config, stops)
        return results
