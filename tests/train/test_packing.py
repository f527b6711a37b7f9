"""Padding-free batches keep sequences apart: packed logits equal per-sequence logits, for every attention
implementation tunelab may select (its own per-sequence SDPA, and transformers' sdpa and eager, which detect packing
from the position ids)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from tunelab.train.packing import PACKED_ATTENTION, packing_collator, register_packed_attention, use_packed_attention

SEQUENCE_LENGTHS = (7, 12, 5, 1, 9)


def random_model(model_dir, attention: str):
    register_packed_attention()
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation=attention, dtype=torch.float32)
    model.eval()
    torch.manual_seed(0)
    for parameter in model.parameters():  # random weights large enough that leaking attention would show
        torch.nn.init.normal_(parameter, std=0.2)
    return model


def packed_batch(sequences):
    batch = packing_collator()([{"input_ids": s, "labels": s} for s in sequences])
    batch.pop("labels")
    return batch


@pytest.mark.parametrize("attention", [PACKED_ATTENTION, "sdpa", "eager"])
def test_packed_sequences_do_not_attend_to_each_other(tiny_model_dir, attention):
    model = random_model(tiny_model_dir, attention)
    sequences = [torch.randint(5, 300, (n,)).tolist() for n in SEQUENCE_LENGTHS]
    batch = packed_batch(sequences)
    assert "attention_mask" not in batch and batch["input_ids"].shape == (1, sum(SEQUENCE_LENGTHS))
    with torch.no_grad():
        packed = model(**batch, use_cache=False).logits[0]
        offset = 0
        for sequence in sequences:
            alone = model(input_ids=torch.tensor([sequence]), use_cache=False).logits[0]
            assert (packed[offset : offset + len(sequence)] - alone).abs().max() < 1e-4
            offset += len(sequence)
    # the same row with an all-ones mask and no boundaries does leak: the check above would catch broken isolation
    plain = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"]}
    with torch.no_grad():
        leaky = model(**plain, attention_mask=torch.ones_like(batch["input_ids"]), use_cache=False).logits[0]
    assert (leaky[7:19] - packed[7:19]).abs().max() > 1e-3


def test_packed_attention_gradients_equal_per_sequence_gradients(tiny_model_dir):
    model = random_model(tiny_model_dir, PACKED_ATTENTION)
    sequences = [torch.randint(5, 300, (n,)).tolist() for n in (6, 10)]

    def gradients(run):
        model.zero_grad()
        run().backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    packed = gradients(lambda: model(**packed_batch(sequences), use_cache=False).logits.square().sum())
    alone = gradients(
        lambda: sum(model(input_ids=torch.tensor([s]), use_cache=False).logits.square().sum() for s in sequences)
    )
    assert torch.allclose(packed, alone, rtol=1e-4, atol=1e-4)


def test_padded_batches_and_generation_are_plain_sdpa(tiny_model_dir):
    """Without sequence boundaries the packed implementation is transformers' sdpa, masks included."""
    packed_model = random_model(tiny_model_dir, "sdpa")
    reference = random_model(tiny_model_dir, "sdpa")
    assert use_packed_attention(packed_model)
    ids = torch.tensor([[0, 0, 11, 12, 13], [21, 22, 23, 24, 25]])
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    with torch.no_grad():
        got = packed_model(input_ids=ids, attention_mask=mask).logits
        want = reference(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(got[mask.bool()], want[mask.bool()], atol=1e-5)
    generated = packed_model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False)
    expected = reference.generate(input_ids=ids, attention_mask=mask, max_new_tokens=4, do_sample=False)
    assert torch.equal(generated, expected)
