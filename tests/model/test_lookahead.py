"""Greedy decoding with drafts from the sequence's own text: generate's answers, in fewer forward passes."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, GenerationConfig

from tunelab.model.lookahead import draft, greedy_lookahead

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_draft_is_what_followed_the_latest_earlier_occurrence_of_the_tail():
    assert draft([1, 2, 3, 4, 1, 2, 3], count=3) == [4, 1, 2]
    assert draft([5, 9, 7, 9], count=2) == [7, 9]  # the last token alone when no longer tail recurs
    assert draft([1, 2, 3], count=4) == [] and draft([], count=4) == []
    assert draft([1, 2, 1, 2, 8, 1, 2], count=2, longest=2) == [8, 1]  # the latest occurrence


@pytest.mark.parametrize("scale", [0.3, 0.05])  # diverse answers; a model that repeats itself, so drafts are kept
def test_the_same_tokens_as_generate_in_fewer_passes(tiny_model_dir, scale):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    torch.manual_seed(3)
    with torch.no_grad():
        for weight in model.parameters():
            if weight.ndim == 2:
                weight.normal_(0, scale)
    config = GenerationConfig(do_sample=False, max_new_tokens=40, eos_token_id=[2], pad_token_id=0)
    passes = []
    model.register_forward_hook(lambda module, args, output: passes.append(1))
    for prompt in ([5, 17, 33, 5, 17, 9, 40], [11, 12, 13, 14, 11, 12], [7]):
        with torch.inference_mode():
            expected = model.generate(input_ids=torch.tensor([prompt]), generation_config=config)[0, len(prompt) :]
        passes.clear()
        sample = greedy_lookahead(model, prompt, 40, {2})
        assert sample.ids == expected.tolist()
        assert len(sample.logprobs) == len(sample.ids) and all(p <= 0 for p in sample.logprobs)
        assert sample.finish == ("stop" if sample.ids[-1] == 2 else "length")
        if scale == 0.05:
            assert len(passes) < len(sample.ids)  # several tokens per pass
