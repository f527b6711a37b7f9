"""Padding-free batches (tunelab's default) keep sequences apart: packed logits equal per-sequence logits."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_packed_sequences_do_not_attend_to_each_other(tiny_model_dir, attention):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation=attention, dtype=torch.float32)
    model.eval()
    torch.manual_seed(0)
    for parameter in model.parameters():  # random weights large enough that leaking attention would show
        torch.nn.init.normal_(parameter, std=0.2)
    sequences = [torch.randint(5, 300, (n,)).tolist() for n in (7, 12, 5)]
    batch = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)([{"input_ids": s} for s in sequences])
    batch.pop("labels")
    assert "attention_mask" not in batch
    with torch.no_grad():
        packed = model(**batch, use_cache=False).logits[0]
        offset = 0
        for sequence in sequences:
            alone = model(input_ids=torch.tensor([sequence]), use_cache=False).logits[0]
            assert (packed[offset : offset + len(sequence)] - alone).abs().max() < 1e-4
            offset += len(sequence)
    # the same batch with an all-ones mask does leak: the check above would catch a broken isolation
    with torch.no_grad():
        leaky = model(**batch, attention_mask=torch.ones_like(batch["input_ids"]), use_cache=False).logits[0]
    assert (leaky[7:19] - packed[7:19]).abs().max() > 1e-3
