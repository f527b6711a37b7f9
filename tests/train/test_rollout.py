"""Rollouts under a trainer's mixed precision: accelerate wraps the model's forward in bf16 autocast; a rollout takes
the model's own float32 forward on packed weights (LoRA layers merged), samples what that unwrapped policy samples,
and leaves the wrapper in place afterwards."""

from __future__ import annotations

import pytest
import torch

from tunelab.data.tokenize import prompt_ids_for_generation
from tunelab.model import fast_linear
from tunelab.model.decode import SamplingSettings, sample_completions
from tunelab.model.generate import stop_token_ids
from tunelab.train.rollout import sample_policy, without_mixed_precision

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def wrapped(tiny_model_dir):
    """A LoRA policy prepared by accelerate for bf16 mixed precision, as a TRL trainer holds it on a bf16 CPU."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    with torch.no_grad():
        for weight in model.parameters():
            if weight.ndim == 2:
                weight.normal_(0, 0.3)  # outputs that differ from prompt to prompt
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    AcceleratorState._reset_state(reset_partial_state=True)  # a process-wide singleton: other tests' trainers set it
    model = Accelerator(cpu=True, mixed_precision="bf16").prepare(get_peft_model(model, config))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = [prompt_ids_for_generation(tokenizer, [{"role": "user", "content": q}]) for q in ("hi", "two shirts")]
    yield model, tokenizer, prompts
    AcceleratorState._reset_state(reset_partial_state=True)


def autocast_seen(model, ids) -> bool:
    seen = []
    handle = model.get_base_model().lm_head.register_forward_hook(
        lambda *_: seen.append(torch.is_autocast_enabled("cpu"))
    )
    with torch.no_grad():
        model(input_ids=ids)
    handle.remove()
    return seen[0]


def test_the_mixed_precision_wrapper_is_lifted_inside_the_block_and_put_back(wrapped):
    model, _, prompts = wrapped
    ids = torch.tensor([prompts[0]])
    wrapper = model.forward
    assert autocast_seen(model, ids)  # accelerate's bf16 autocast
    with without_mixed_precision(model):
        assert not autocast_seen(model, ids)
    assert model.forward is wrapper and autocast_seen(model, ids)


@pytest.mark.skipif(not fast_linear.available(), reason="this PyTorch has no oneDNN")
def test_a_rollout_samples_the_float32_policy_and_leaves_the_model_as_it_was(wrapped):
    model, tokenizer, prompts = wrapped
    settings = SamplingSettings(max_new_tokens=10, temperature=0.0)
    rows = [p for p in prompts for _ in range(3)]
    fast = sample_policy(model, tokenizer, rows, settings, seed=0)
    stops, weights = set(stop_token_ids(model, tokenizer)), {n: p.clone() for n, p in model.named_parameters()}
    with without_mixed_precision(model), torch.no_grad():
        plain = sample_completions(model.eval(), rows, settings, stops, tokenizer.pad_token_id or 0)
    assert [s.ids for s in fast] == [s.ids for s in plain]
    for row in range(len(rows)):
        assert fast[row].logprobs == pytest.approx(plain[row].logprobs, abs=1e-4)
    assert all(torch.equal(p, weights[n]) for n, p in model.named_parameters())
    assert not any(set(m.__dict__) & {"packed_weight", "merged_weight"} for m in model.modules())
    assert autocast_seen(model, torch.tensor([prompts[0]]))  # the trainer's mixed precision is back
