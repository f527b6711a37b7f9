"""The rollout decoder: greedy output equals one-prompt-at-a-time decoding however the rows are batched, joined and
dropped; log-probabilities equal a full forward pass's; sampling is reproducible; packed weights come and go."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunelab.data.tokenize import prompt_ids_for_generation
from tunelab.model import fast_linear
from tunelab.model.decode import SamplingSettings, hold_packed_weights, packed_weights, sample_completions
from tunelab.model.generate import stop_token_ids

QUESTIONS = ["hello", "Please send two red shirts", "What is the capital of France?", "谢谢", "size M to Alice"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def loaded(tiny_model_dir):
    """The tiny model with larger random weights, so that greedy outputs differ from prompt to prompt."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    torch.manual_seed(1)
    with torch.no_grad():
        for weight in model.parameters():
            if weight.ndim == 2:
                weight.normal_(0, 0.3)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = [
        prompt_ids_for_generation(tokenizer, [{"role": "user", "content": (q + " ") * (i % 3 + 1)}])
        for i, q in enumerate(QUESTIONS * 2)
    ]
    return model, tokenizer, prompts


def decode(model, tokenizer, prompts, extra_stops=(), **settings):
    stops = set(stop_token_ids(model, tokenizer)) | set(extra_stops)
    options = {"max_new_tokens": 12, "temperature": 0.0} | settings
    generator = torch.Generator().manual_seed(7) if options["temperature"] > 0 else None
    return sample_completions(model, prompts, SamplingSettings(**options), stops, tokenizer.pad_token_id, generator)


def test_greedy_rows_do_not_depend_on_their_batch(loaded):
    model, tokenizer, prompts = loaded
    # a token some rows produce early serves as a stop, so that rows finish at different steps and leave the batch
    stop = decode(model, tokenizer, prompts[:1])[0].ids[3]
    alone = [decode(model, tokenizer, [p], [stop])[0] for p in prompts]
    together = decode(model, tokenizer, prompts, [stop])
    trickling = decode(model, tokenizer, prompts, [stop], max_rows=3)  # rows join as others finish
    for one, two, three in zip(alone, together, trickling, strict=True):
        assert one.ids == two.ids == three.ids
        assert one.finish == two.finish == three.finish
        assert two.logprobs == pytest.approx(one.logprobs, abs=1e-4)
    assert {s.finish for s in together} == {"length", "stop"}
    assert len({len(s.ids) for s in together}) > 1


def test_a_prefill_token_budget_joins_rows_in_groups_with_the_same_answers(loaded, monkeypatch):
    from tunelab.model import decode as decoding

    model, tokenizer, prompts = loaded
    together = decode(model, tokenizer, prompts)
    monkeypatch.setattr(decoding, "PREFILL_TOKENS", 2 * max(len(p) for p in prompts))  # two rows a prefill
    groups = []
    real = decoding._prefill_group
    monkeypatch.setattr(decoding, "_prefill_group", lambda *a: groups.append(real(*a)[0]) or real(*a))
    grouped = decode(model, tokenizer, prompts)
    assert [one.ids for one in grouped] == [one.ids for one in together]
    assert max(len(group) for group in groups) <= 2 and sum(len(group) for group in groups) == len(prompts)


def test_log_probabilities_are_the_policys(loaded):
    """Each token's log-probability equals the one a full forward pass over prompt + completion gives it."""
    model, tokenizer, prompts = loaded
    for sample in decode(model, tokenizer, prompts[:4], temperature=0.7):
        ids = torch.tensor([sample.prompt + sample.ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(sample.prompt) - 1 : -1].float() / 0.7
        expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(sample.ids)[:, None])[:, 0]
        assert sample.logprobs == pytest.approx(expected.tolist(), abs=1e-4)


def test_repeated_prompts_sample_differently_and_reproducibly(loaded):
    model, tokenizer, prompts = loaded
    group = [prompts[1]] * 6
    first = decode(model, tokenizer, group, temperature=1.0)
    again = decode(model, tokenizer, group, temperature=1.0)
    assert [s.ids for s in first] == [s.ids for s in again]
    assert len({tuple(s.ids) for s in first}) > 1, "six samples of one prompt at temperature 1 should differ"
    assert all(s.prompt == prompts[1] for s in first)


def test_top_k_one_is_greedy(loaded):
    model, tokenizer, prompts = loaded
    greedy = decode(model, tokenizer, prompts[:3])
    top1 = decode(model, tokenizer, prompts[:3], temperature=1.0, top_k=1)
    assert [s.ids for s in greedy] == [s.ids for s in top1]


def _held(model):
    """What a decoding block holds on the model: its fused decoder, or each packed layer's packed copy."""
    from tunelab.model.decode import FUSED

    if FUSED in model.__dict__:
        return [model.__dict__[FUSED]]
    return [m.__dict__["packed_weight"] for m in fast_linear.packed_modules(model)]


@pytest.fixture(params=["fused", "packed layers"])
def path(request, monkeypatch):
    """Both ways a decoding block packs: the fused decoder (this llama) and packed layers (other architectures)."""
    if request.param == "packed layers":
        from tunelab.model import fused_decoder

        monkeypatch.setattr(fused_decoder, "supports", lambda model, merged=False: False)
    return request.param


@pytest.mark.skipif(not fast_linear.available(), reason="this PyTorch has no oneDNN")
def test_packed_weights_give_the_same_tokens_and_are_removed_after(loaded, path):
    model, tokenizer, prompts = loaded
    plain = decode(model, tokenizer, prompts)
    with packed_weights(model) as count:
        assert count > 0 and _held(model)
        packed = decode(model, tokenizer, prompts)
    assert [s.ids for s in plain] == [s.ids for s in packed]
    assert not _held(model)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert not any("packed_weight" in m.__dict__ or "forward" in m.__dict__ for m in linears)
    model.train()
    loss = model(input_ids=torch.tensor([prompts[0]]), labels=torch.tensor([prompts[0]])).loss
    loss.backward()  # training works on the ordinary layers again
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad and p.ndim == 2)


@pytest.mark.skipif(not fast_linear.available(), reason="this PyTorch has no oneDNN")
def test_weights_held_packed_for_a_session_are_reused_and_kept_by_each_decoding_block(loaded, path):
    from tunelab.model.generate import generate_batch

    model, tokenizer, prompts = loaded
    plain = generate_batch(model, tokenizer, prompts[:3], 8)
    count = hold_packed_weights(model)
    held = _held(model)
    assert count > 0 and held
    with packed_weights(model) as reused:
        assert reused == count
    assert generate_batch(model, tokenizer, prompts[:3], 8) == plain
    assert all(a is b for a, b in zip(_held(model), held, strict=True))  # the same copies, not new ones


@pytest.mark.skipif(not fast_linear.available(), reason="this PyTorch has no oneDNN")
def test_a_lora_policy_samples_through_merged_packed_weights_and_keeps_its_weights(loaded, path):
    from peft import LoraConfig, get_peft_model

    model, tokenizer, prompts = loaded
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    model = get_peft_model(model, config).eval()
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    plain = decode(model, tokenizer, prompts)
    lora_layers = [m for m in model.modules() if hasattr(m, "lora_A")]
    with packed_weights(model) as count:
        if path == "packed layers":  # each LoRA layer as one merged matrix, and the untouched LM head
            assert count == len(lora_layers) + 1 and all(m.packed_adapters == ("default",) for m in lora_layers)
        packed = decode(model, tokenizer, prompts)
        with model.disable_adapter():  # adapters switched inside the block: PEFT's own forward, the base model
            assert [s.ids for s in decode(model, tokenizer, prompts[:2])] != [s.ids for s in plain[:2]]
    assert [s.ids for s in plain] == [s.ids for s in packed]
    for name, parameter in model.named_parameters():
        assert torch.equal(parameter, weights[name]), name  # no merge/unmerge drift
    assert not any(set(m.__dict__) & {"packed_weight", "merged_weight", "forward"} for m in model.modules())
    assert not _held(model)
