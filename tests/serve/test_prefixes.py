"""The prefix store: what counts as a shared beginning, copies rather than views, one entry per served model."""

from __future__ import annotations

import torch
from transformers import DynamicCache

from tunelab.serve.prefixes import MIN_SHARED, PrefixStore


def _cache(length: int) -> DynamicCache:
    cache = DynamicCache()
    for index in range(2):
        cache.update(torch.randn(1, 2, length, 4), torch.randn(1, 2, length, 4), index)
    return cache


def test_a_shared_beginning_is_found_and_copied():
    store, prompt = PrefixStore(), list(range(40))
    assert store.shared("a", prompt) == 0  # nothing kept yet
    kept = _cache(40)
    store.keep("a", prompt, kept)
    assert store.shared("a", prompt[:30] + [999] * 5) == 30
    assert store.shared("a", prompt) == 39  # the last token is always prefilled: its logits are needed
    assert store.shared("a", prompt[: MIN_SHARED - 1] + [999] * 20) == 0  # too short to be worth a copy
    assert store.shared("b", prompt) == 0  # entries are per served model (adapters change keys and values)
    seeded = store.seeded_cache("a", 30)
    assert seeded.get_seq_length() == 30 and store.reused_tokens == 30
    assert torch.equal(seeded.layers[1].values, kept.layers[1].values[:, :, :30])
    kept.layers[0].keys.zero_()  # the running batch writing into its cache does not change the entry
    assert store.entries["a"][1][0][0].abs().sum() > 0
    store.clear()
    assert store.shared("a", prompt) == 0


def test_rows_prefilled_together_each_start_from_the_prefix_kept_just_before(tiny_model_dir):
    """Two prompts for one model admitted at once: the first replaces the kept entry, so the second must measure its
    shared beginning against that one, not the entry there was when the batch began (it once copied positions the
    new entry did not have, and the batch's cache and mask disagreed)."""
    import asyncio

    from tunelab.serve.engine import Engine
    from tunelab.serve.jobs import Job
    from tunelab.serve.sampling import Sampling

    engine = Engine(str(tiny_model_dir))
    engine.close()
    model, loop = str(tiny_model_dir), asyncio.new_event_loop()
    start = list(range(10, 40))
    long_prompt, short_prompt, other = start + list(range(50, 80)), start[:20] + [7, 8], start + list(range(90, 95))

    def rows(*prompts):
        jobs = [Job(model, [prompt], Sampling(max_tokens=4, temperature=0.0), 1, loop, 60) for prompt in prompts]
        return engine._rows(jobs)

    alone = [engine._prefill_together(rows(prompt))[0] for prompt in (short_prompt, other)]
    engine._prefill(rows(long_prompt))  # kept: the long prompt
    logits, cache, mask, _ = engine._prefill(rows(short_prompt, other))
    assert engine.stats["reused_prompt_tokens"] >= 20 + 20  # both reused a prefix: 20 of the long, 20 of the short
    assert cache.get_seq_length() == mask.shape[1] and mask.sum(dim=1).tolist() == [22, 35]
    assert torch.allclose(logits, torch.cat(alone), atol=1e-5)
    loop.close()
