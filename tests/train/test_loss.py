"""The label-only head gives the loss and gradients of the full computation (fp32, 1e-5)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from tunelab.train.loss import accepts_logits_to_keep, chunked_cross_entropy, label_only_loss, target_positions
from tunelab.train.packing import packing_collator, use_packed_attention


def full_loss(model, batch) -> torch.Tensor:
    """The usual path: logits everywhere, shift, mean cross-entropy over labelled positions."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs, use_cache=False).logits
    return F.cross_entropy(logits[0, :-1].float(), batch["labels"][0, 1:], ignore_index=-100)


def batch_of(lengths, prompt_share=0.5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    features = []
    for n in lengths:
        ids = torch.randint(5, 300, (n,), generator=generator).tolist()
        cut = int(n * prompt_share)
        features.append({"input_ids": ids, "labels": [-100] * cut + ids[cut:]})
    return packing_collator()(features)


def grads(model, loss_fn, batch):
    model.zero_grad()
    loss = loss_fn(model, batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same(model, batch):
    loss_a, grads_a = grads(model, full_loss, batch)
    loss_b, grads_b = grads(model, lambda m, b: label_only_loss(m, b), batch)
    assert torch.allclose(loss_a, loss_b, atol=1e-5, rtol=1e-5)
    assert grads_a.keys() == grads_b.keys() and grads_a
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=1e-5, rtol=1e-4), name


def test_label_only_loss_equals_full_loss_and_gradients(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    use_packed_attention(model)
    assert accepts_logits_to_keep(model)
    assert_same(model, batch_of((9, 17, 4, 30)))


def test_label_only_loss_with_a_lora_adapter(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    use_packed_attention(model)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    assert accepts_logits_to_keep(model)
    assert_same(model, batch_of((12, 20, 7), seed=3))


def test_chunked_cross_entropy_matches_one_chunk_in_value_and_gradient():
    torch.manual_seed(0)
    logits = torch.randn(50, 33, requires_grad=True)
    targets = torch.randint(0, 33, (50,))
    whole = chunked_cross_entropy(logits, targets, chunk_rows=1000)
    (grad_whole,) = torch.autograd.grad(whole, logits)
    chunked = chunked_cross_entropy(logits, targets, chunk_rows=7)
    (grad_chunked,) = torch.autograd.grad(chunked, logits)
    assert torch.allclose(whole, chunked, atol=1e-5) and torch.allclose(grad_whole, grad_chunked, atol=1e-6)


def test_targets_never_cross_a_sequence_boundary():
    batch = batch_of((5, 6), prompt_share=0.0)
    keep, targets = target_positions(batch["labels"])
    # the last token of the first sequence does not predict the first token of the second
    assert not keep[0, 4] and keep[0, 3] and not keep[0, -1]
    assert targets.tolist() == batch["input_ids"][0, 1:5].tolist() + batch["input_ids"][0, 6:].tolist()


def test_normalised_by_the_accumulation_window_when_given(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    batch = batch_of((10, 10))
    own = label_only_loss(model, batch)
    _, targets = target_positions(batch["labels"])
    window = label_only_loss(model, batch, num_items_in_batch=4 * targets.numel())
    assert torch.allclose(window * 4, own, atol=1e-6)


def test_the_decoder_and_head_run_apart_only_where_that_is_the_models_own_computation(tiny_model_dir):
    from peft import PromptTuningConfig

    from tunelab.train.loss import split_head

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    decoder, head = split_head(model)
    assert decoder is model.model and head is model.lm_head
    assert split_head(get_peft_model(model, LoraConfig(r=4, target_modules="all-linear")))[1] is model.lm_head
    prompted = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    prompted = get_peft_model(prompted, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=3))
    assert split_head(prompted) is None  # PEFT adds the virtual tokens in its own forward
    capped = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    capped.config.final_logit_softcapping = 30.0
    assert split_head(capped) is None


def test_the_models_own_forward_gives_the_same_loss_where_the_head_cannot_run_apart(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    use_packed_attention(model)
    batch = batch_of((9, 17, 4, 30))
    apart = label_only_loss(model, batch, chunk_rows=8)
    model.config.logits_scaling = 1.0  # not a plain head as far as split_head can tell (llama ignores it)
    assert torch.equal(apart, label_only_loss(model, batch, chunk_rows=8))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the same bf16 head product on both paths
        whole = label_only_loss(model, batch, chunk_rows=8)
        model.config.logits_scaling = None
        assert torch.equal(whole, label_only_loss(model, batch, chunk_rows=8))


def test_linear_cross_entropy_gradients_of_rows_weight_and_bias_match_the_plain_computation():
    from tunelab.train.loss import head_cross_entropy

    torch.manual_seed(0)
    head = torch.nn.Linear(12, 40)
    hidden = torch.randn(23, 12, requires_grad=True)
    targets = torch.randint(0, 40, (23,))
    plain = F.cross_entropy(head(hidden), targets, reduction="sum") * 0.3
    expected = torch.autograd.grad(plain, (hidden, head.weight, head.bias))
    fused = head_cross_entropy(hidden, head, targets, chunk_rows=5) * 0.3
    got = torch.autograd.grad(fused, (hidden, head.weight, head.bias))
    assert torch.allclose(fused, plain, rtol=1e-6)
    for a, b in zip(got, expected, strict=True):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-5)
    with torch.no_grad():  # evaluation: the value only
        assert torch.allclose(head_cross_entropy(hidden, head, targets, chunk_rows=5) * 0.3, plain, rtol=1e-6)
