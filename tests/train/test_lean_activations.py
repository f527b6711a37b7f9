"""Shared autocast casts and the gated MLP's product: the same loss and gradients bit for bit, fewer bytes kept."""

from __future__ import annotations

import pytest
import torch

from tunelab.model.load import load_model
from tunelab.train.lean_activations import CAST_ATTRIBUTE, _cast_once, lean_activations
from tunelab.train.loss import label_only_loss
from tunelab.train.packing import packing_collator, use_packed_attention
from tunelab.train.speed import plan_speed


def _model(tiny_model_dir, lora: bool, dora: bool = False):
    from peft import LoraConfig, get_peft_model

    model, _, _ = load_model(str(tiny_model_dir))
    use_packed_attention(model)
    torch.manual_seed(0)
    if lora:  # dropout on: the same masks must be drawn in the same order with and without the patch
        config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1, target_modules="all-linear", init_lora_weights=False,
                            use_dora=dora)  # fmt: skip
        model = get_peft_model(model, config)
    return model.train()


def _batch():
    generator = torch.Generator().manual_seed(1)
    features = []
    for length in (11, 23, 6):
        ids = torch.randint(5, 300, (length,), generator=generator).tolist()
        features.append({"input_ids": ids, "labels": [-100] * (length // 2) + ids[length // 2 :]})
    return packing_collator()(features)


def _step(model, bf16: bool):
    """Loss, gradients and the bytes autograd kept (by storage) for one forward and backward."""
    model.zero_grad()
    kept: dict[int, int] = {}

    def pack(tensor):
        kept[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    torch.manual_seed(2)
    with (
        torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16),
        torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor),
    ):
        loss = label_only_loss(model, _batch())
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads, sum(kept.values())


@pytest.mark.parametrize("lora, bf16, dora", [(True, True, False), (True, False, False), (False, True, False),
                                              (True, True, True)])  # fmt: skip
def test_same_loss_and_gradients_bit_for_bit_with_less_kept(tiny_model_dir, lora, bf16, dora):
    model = _model(tiny_model_dir, lora, dora)
    loss, grads, kept = _step(model, bf16)
    with lean_activations(model) as changed:
        assert changed["gated_mlps"] == model.config.num_hidden_layers and changed["shared_casts"] > 0
        lean_loss, lean_grads, lean_kept = _step(model, bf16)
    assert torch.equal(loss, lean_loss)
    assert grads.keys() == lean_grads.keys() and grads
    assert all(torch.equal(grads[name], lean_grads[name]) for name in grads), "gradients differ"
    if not dora:  # DoRA with dropout computes its own base product outside the linear layers: no saving measured
        assert lean_kept < kept


def test_everything_is_put_back_after_the_block(tiny_model_dir):
    model = _model(tiny_model_dir, lora=True)
    with lean_activations(model):
        pass
    assert not any("forward" in m.__dict__ for m in model.modules())
    assert not any(m._forward_pre_hooks for m in model.modules())


class OtherGating(torch.nn.Module):
    """Looks like a gated MLP but gates the other way round: must be left alone."""

    def __init__(self):
        super().__init__()
        self.gate_proj, self.up_proj = torch.nn.Linear(4, 8), torch.nn.Linear(4, 8)
        self.down_proj, self.act_fn = torch.nn.Linear(8, 4), torch.nn.SiLU()

    def forward(self, x):
        return self.down_proj(self.gate_proj(x) * self.act_fn(self.up_proj(x)))


def test_a_module_that_computes_something_else_is_not_changed():
    model = torch.nn.Sequential(OtherGating())
    with lean_activations(model) as changed:
        assert changed["gated_mlps"] == 0 and "forward" not in model[0].__dict__


def test_an_input_changed_in_place_is_cast_again():
    layer = torch.nn.Linear(4, 4)
    x = torch.randn(2, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        (first,) = _cast_once(layer, (x,))
        x.mul_(3)
        (second,) = _cast_once(layer, (x,))
    assert torch.equal(second, (x * 1).to(torch.bfloat16)) and not torch.equal(first, second)
    assert getattr(x, CAST_ATTRIBUTE)[0] == x._version
    assert _cast_once(layer, (x,)) is None  # outside autocast: nothing to share


def test_the_switch_is_in_the_plan(tiny_model_dir):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(tiny_model_dir)
    assert plan_speed({}, config, 256).lean_activations is True
    assert plan_speed({"lean_activations": False}, config, 256).lean_activations is False
