"""LoRA+ and layer-wise learning rates in the optimizer, progressive unfreezing, and L2-SP's gradient."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

from tunelab.config.schema import method_sections
from tunelab.model.methods import apply_method
from tunelab.train import method_training
from tunelab.train.method_training import L2SP, ProgressiveUnfreezing, _lora_pull, lora_modules


def _method(section: dict):
    return method_sections()[section["type"]].model_validate(section)


def _trainer(model, tmp_path, **args) -> Trainer:
    settings = {"learning_rate": 1e-3, "weight_decay": 0.01, "report_to": [], "use_cpu": True} | args
    return Trainer(model=model, args=TrainingArguments(output_dir=str(tmp_path), **settings))


def _lr_of(optimizer, parameter) -> float:
    return next(g["lr"] for g in optimizer.param_groups if any(p is parameter for p in g["params"]))


def test_loraplus_gives_b_matrices_the_ratio_times_the_learning_rate(tiny_model_dir, tmp_path):
    method = _method({"type": "lora", "r": 4, "alpha": 8, "loraplus_lr_ratio": 16})
    model = apply_method(AutoModelForCausalLM.from_pretrained(tiny_model_dir), method)
    trainer = _trainer(model, tmp_path)
    method_training.install(trainer, method)
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert _lr_of(trainer.optimizer, layer.lora_A["default"].weight) == pytest.approx(1e-3)
    assert _lr_of(trainer.optimizer, layer.lora_B["default"].weight) == pytest.approx(16e-3)
    assert trainer.create_optimizer() is trainer.optimizer  # the trainer keeps it


def test_layer_wise_decay_slows_lower_layers_and_the_embeddings(tiny_model_dir, tmp_path):
    method = _method({"type": "full", "layer_lr_decay": 0.5})
    model = apply_method(AutoModelForCausalLM.from_pretrained(tiny_model_dir), method)
    trainer = _trainer(model, tmp_path)
    method_training.install(trainer, method)
    layers = model.model.layers
    assert _lr_of(trainer.optimizer, layers[1].mlp.up_proj.weight) == pytest.approx(1e-3)
    assert _lr_of(trainer.optimizer, layers[0].mlp.up_proj.weight) == pytest.approx(5e-4)
    assert _lr_of(trainer.optimizer, model.model.embed_tokens.weight) == pytest.approx(2.5e-4)
    assert _lr_of(trainer.optimizer, model.model.norm.weight) == pytest.approx(1e-3)
    norm_group = next(g for g in trainer.optimizer.param_groups if any(p is layers[1].input_layernorm.weight
                                                                        for p in g["params"]))  # fmt: skip
    assert norm_group["weight_decay"] == 0.0  # the trainer's own no-decay rule still applies


def test_progressive_unfreezing_thaws_layers_on_schedule(tiny_model_dir):
    method = _method({"type": "freeze", "trainable_layers": 1, "unfreeze_every": 3, "unfreeze_layers": 1})
    model = apply_method(AutoModelForCausalLM.from_pretrained(tiny_model_dir), method)
    assert all(p.requires_grad for p in model.model.layers[0].parameters())  # in the optimizer from the start
    schedule = ProgressiveUnfreezing(model, method)
    assert [schedule.unfrozen_at(step) for step in (0, 2, 3, 6, 100)] == [1, 1, 2, 2, 2]
    schedule.on_train_begin(None, type("State", (), {"global_step": 0})(), None)
    assert not any(p.requires_grad for p in model.model.layers[0].parameters())
    assert all(p.requires_grad for p in model.model.layers[1].parameters())
    schedule.on_step_begin(None, type("State", (), {"global_step": 3})(), None)
    assert all(p.requires_grad for p in model.model.layers[0].parameters())


REFUSED_COUNTS = [
    {"trainable_layers": 3},
    {"max_trainable_layers": 5, "unfreeze_every": 2},
    {"trainable_layers": 2, "max_trainable_layers": 1, "unfreeze_every": 2},
]


@pytest.mark.parametrize("problem", REFUSED_COUNTS)
def test_freeze_layer_counts_the_model_cannot_have_are_refused(tiny_model_dir, problem):
    from tunelab.errors import RecipeError

    with pytest.raises(RecipeError) as raised:
        apply_method(AutoModelForCausalLM.from_pretrained(tiny_model_dir), _method({"type": "freeze"} | problem))
    assert "method." in str(raised.value.problems)


def test_l2sp_lora_gradient_is_the_penalty_gradient(tiny_model_dir):
    model = apply_method(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                         _method({"type": "lora", "r": 4, "alpha": 8}))  # fmt: skip
    module, adapter = lora_modules(model)[0]
    with torch.no_grad():
        module.lora_B[adapter].weight.normal_()
    a, b, s = module.lora_A[adapter].weight, module.lora_B[adapter].weight, module.scaling[adapter]
    (0.3 * ((s * (b @ a)) ** 2).sum()).backward()
    expected = a.grad.clone(), b.grad.clone()
    a.grad, b.grad = torch.zeros_like(a), torch.zeros_like(b)
    _lora_pull(module, adapter, 0.3)
    assert torch.allclose(a.grad, expected[0], rtol=1e-4, atol=1e-6)
    assert torch.allclose(b.grad, expected[1], rtol=1e-4, atol=1e-6)


def test_l2sp_full_pulls_toward_the_starting_weights(tiny_model_dir):
    model = apply_method(AutoModelForCausalLM.from_pretrained(tiny_model_dir), _method({"type": "full"}))
    pull = L2SP(model, 0.5)
    weight = model.model.layers[0].mlp.up_proj.weight
    start = weight.detach().clone()
    with torch.no_grad():
        weight.add_(1.0)
    weight.grad = torch.zeros_like(weight)
    pull.on_pre_optimizer_step(None, None, None)
    assert torch.allclose(weight.grad, torch.full_like(weight, 2 * 0.5 * 1.0))
    assert pull.distance() == pytest.approx(float(((weight - start) ** 2).sum().sqrt()), rel=1e-5)
