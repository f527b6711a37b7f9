"""Frozen base weights in bf16 while an adapter trains: the same products under autocast, the originals back after."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from tunelab.model.load import load_model
from tunelab.train.frozen_bf16 import PARKED_FILE, frozen_linear_weights, frozen_weights_in_bf16, qualifies


@pytest.fixture()
def lora_model(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    model, _, _ = load_model(str(tiny_model_dir))
    torch.manual_seed(0)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    return peft


def test_only_frozen_fp32_linear_weights_are_chosen_and_the_output_head_is_not(lora_model):
    chosen = frozen_linear_weights(lora_model)
    assert chosen and all(not p.requires_grad and p.dtype == torch.float32 for p in chosen.values())
    assert not any("lora_" in name for name in chosen)
    head = {id(p) for p in lora_model.get_output_embeddings().parameters()}
    assert not head & {id(p) for p in chosen.values()}
    projections = [n for n in chosen if n.endswith("q_proj.base_layer.weight")]
    assert len(projections) == lora_model.config.num_hidden_layers


def test_bf16_storage_gives_the_same_products_under_autocast_and_the_originals_come_back(lora_model, tmp_path):
    ids = torch.tensor([[1, 5, 9, 13, 2, 7]])
    originals = {name: p.detach().clone() for name, p in frozen_linear_weights(lora_model).items()}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = lora_model(input_ids=ids).logits
    with frozen_weights_in_bf16(lora_model, tmp_path) as count:
        assert count == len(originals) and (tmp_path / PARKED_FILE).is_file()
        assert all(p.dtype == torch.bfloat16 for p in _parameters(lora_model, originals))
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            stored_in_bf16 = lora_model(input_ids=ids).logits
    assert torch.equal(stored_in_bf16, expected)  # autocast rounds the fp32 weight to the same bf16 value
    assert not (tmp_path / PARKED_FILE).exists()
    restored = dict(lora_model.named_parameters())
    assert all(torch.equal(restored[name], weight) for name, weight in originals.items())  # bit for bit


def _parameters(model, names) -> list[torch.nn.Parameter]:
    parameters = dict(model.named_parameters())
    return [parameters[name] for name in names]


def test_qlora_holds_the_embeddings_in_bf16_too_and_their_lookups_stay_fp32(lora_model, tmp_path):
    embedding = lora_model.get_input_embeddings()
    original = embedding.weight.detach().clone()
    ids, linear = torch.tensor([[1, 5, 9, 13]]), len(frozen_linear_weights(lora_model))
    with frozen_weights_in_bf16(lora_model, tmp_path, embeddings=True) as count:
        assert count == linear + 1
        assert embedding.weight.dtype == torch.bfloat16
        looked_up = embedding(ids)
        assert looked_up.dtype == torch.float32  # the residual stream stays fp32
        assert torch.equal(looked_up, original[ids].bfloat16().float())  # only the rounding changed
    assert embedding.weight.dtype == torch.float32 and torch.equal(embedding.weight, original)
    assert not embedding._forward_hooks  # the cast is gone with the block


def test_the_originals_come_back_when_training_fails(lora_model, tmp_path):
    originals = {name: p.detach().clone() for name, p in frozen_linear_weights(lora_model).items()}
    with pytest.raises(RuntimeError, match="killed"), frozen_weights_in_bf16(lora_model, tmp_path):
        raise RuntimeError("killed")
    parameters = dict(lora_model.named_parameters())
    assert all(torch.equal(parameters[n], w) and parameters[n].dtype == torch.float32 for n, w in originals.items())
    assert not (tmp_path / PARKED_FILE).exists()


def test_trainable_weights_keep_fp32_and_a_step_changes_them(lora_model, tmp_path):
    trainable = {n: p.detach().clone() for n, p in lora_model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.AdamW([p for p in lora_model.parameters() if p.requires_grad], lr=1e-2)
    with frozen_weights_in_bf16(lora_model, tmp_path):
        assert all(p.dtype == torch.float32 for p in lora_model.parameters() if p.requires_grad)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = lora_model(input_ids=torch.tensor([[1, 5, 9, 13]]), labels=torch.tensor([[1, 5, 9, 13]])).loss
        loss.backward()
        optimizer.step()
    changed = dict(lora_model.named_parameters())
    assert all(not torch.equal(changed[n], before) for n, before in trainable.items() if "lora_B" in n)


@pytest.mark.parametrize(
    ("bf16", "method", "reads", "expected"),
    [
        (True, "lora", "messages", True),
        (True, "lora", "preference", True),
        (False, "lora", "messages", False),  # fp32 training: the weights are used as stored
        (True, "full", "messages", False),  # a full model's checkpoints would hold bf16 weights
        (True, "freeze", "messages", False),
        (True, "lora", "prompts", False),  # RL rollouts decode outside autocast, in fp32
        (True, SimpleNamespace(type="lora", use_dora=True), "messages", False),  # DoRA's norm reads the weight
    ],
)
def test_which_runs_qualify(bf16, method, reads, expected):
    assert qualifies(SimpleNamespace(reads=reads), method, SimpleNamespace(bf16=bf16)) is expected


def test_the_plan_takes_the_recipes_switch_and_needs_bf16():
    from tunelab.train.speed import plan_speed

    config = SimpleNamespace(num_hidden_layers=2, hidden_size=64)
    assert plan_speed({"bf16": True}, config, 256).frozen_bf16 is True
    assert plan_speed({"bf16": True, "frozen_bf16": False}, config, 256).frozen_bf16 is False
    assert plan_speed({"bf16": False}, config, 256).frozen_bf16 is False
