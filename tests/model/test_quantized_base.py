"""QLoRA's base: bitsandbytes quantisation on the CPU, the weights' bytes, LoftQ's start, and frozen weights that an
evaluation followed by a save leaves as they were."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM

from tunelab.config.schema import method_sections
from tunelab.model.methods import apply_method
from tunelab.model.quantized_base import loading_options, quantize_linear_layers, weight_bytes


def test_quantised_while_loading_equals_quantised_in_place_and_is_smaller(tiny_model_dir):
    full = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    loaded = AutoModelForCausalLM.from_pretrained(tiny_model_dir, **loading_options(4))
    in_place = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert quantize_linear_layers(in_place, 4) == 14  # 7 linear layers × 2 decoder layers; the head stays
    assert quantize_linear_layers(loaded, 4) == 0  # already quantised: left alone
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, in_place(input_ids=ids).logits)
        assert (loaded(input_ids=ids).logits - full(input_ids=ids).logits).abs().max() < 0.5
    linear_bytes = sum(m.weight.numel() * 4 for m in full.modules() if type(m) is torch.nn.Linear) - 400 * 64 * 4
    assert weight_bytes(full) - weight_bytes(loaded) > 0.8 * linear_bytes  # 4 bits instead of 32, plus scales


def test_loftq_starts_the_adapter_at_the_quantisation_error(tiny_model_dir):
    section = method_sections()["qlora"].model_validate({"type": "qlora", "r": 8, "alpha": 16, "init": "loftq"})
    model = apply_method(AutoModelForCausalLM.from_pretrained(tiny_model_dir), section)
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir).model.layers[0].mlp.up_proj.weight
    layer = model.base_model.model.model.layers[0].mlp.up_proj
    import bitsandbytes as bnb

    dequantised = bnb.functional.dequantize_4bit(layer.base_layer.weight.data, layer.base_layer.weight.quant_state)
    update = layer.scaling["default"] * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
    lost = original - dequantised
    best = torch.linalg.svdvals(lost.detach())[8:].square().sum().sqrt()  # the best rank-8 approximation leaves this
    assert torch.isclose((lost - update).norm(), best, rtol=1e-3) and best < lost.norm()


def test_an_evaluation_and_a_save_leave_the_4bit_weights_as_they_were(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, **loading_options(4))
    quantize_linear_layers(model, 4)  # settles the loaded model (bitsandbytes' in-place repacking off)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    with torch.no_grad():
        model(input_ids=torch.tensor([[5, 17, 42]]))
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
