"""tunelab's DPO forward (each pair's prompt computed once, the LM head only where it scores) gives TRL's loss and
gradients on the same batch, for a LoRA policy (reference = adapter disabled) and a full one (reference = a copy)."""

from __future__ import annotations

import pytest
import torch

from tunelab.train.packing import use_packed_attention
from tunelab.train.shared_prompt import pair_layout, share_trainer_prompts


def pairs() -> list[dict]:
    """Pairs with a shared prompt of varied length, answers of varied length (so rows are padded), and one pair whose
    answers share a first word (the shared prefix then runs into the answers)."""
    cities = ["Berlin", "Paris", "Beijing", "London"]
    out = []
    for index, city in enumerate(cities):
        prompt = [{"role": "user", "content": f"Send {index + 2} red shirts to Alice in {city}." + " Please." * index}]
        chosen = f'{{"customer": "Alice", "quantity": {index + 2}, "city": "{city}"}}'
        rejected = "Sure! " * (index + 1) + chosen[:10] if index != 2 else chosen[:20] + " 100"
        out.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
                    "rejected": [{"role": "assistant", "content": rejected}]})  # fmt: skip
    return out


def trainer_for(model_dir, tmp_path, lora: bool, loss_type: list[str], tunelab: bool):
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tunelab:
        assert use_packed_attention(model)
    if lora:
        config = LoraConfig(
            r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM"
        )
        model = get_peft_model(model, config)
    args = DPOConfig(output_dir=str(tmp_path), loss_type=loss_type, per_device_train_batch_size=4, bf16=False,
                     report_to="none", use_cpu=True, max_length=64)  # fmt: skip
    trainer = DPOTrainer(model=model, args=args, train_dataset=Dataset.from_list(pairs()), processing_class=tokenizer)
    if tunelab:
        assert share_trainer_prompts(trainer)
    return trainer


def loss_and_gradients(trainer):
    batch = next(iter(trainer.get_train_dataloader()))
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    gradients = {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None}
    metrics = {key: values[-1] for key, values in trainer._metrics["train"].items()}
    return loss.detach(), gradients, metrics, batch


@pytest.mark.parametrize(("lora", "loss_type"), [(True, ["sigmoid"]), (False, ["sigmoid"]), (True, ["ipo", "sft"])])
def test_loss_and_gradients_equal_trl(tiny_model_dir, tmp_path, lora, loss_type, monkeypatch):
    import tunelab.train.shared_prompt as shared_prompt

    calls = []
    original = shared_prompt.shared_prompt_logprobs
    monkeypatch.setattr(shared_prompt, "shared_prompt_logprobs", lambda *a, **k: calls.append(1) or original(*a, **k))
    trl_loss, trl_gradients, trl_metrics, batch = loss_and_gradients(
        trainer_for(tiny_model_dir, tmp_path / "trl", lora, loss_type, tunelab=False)
    )
    loss, gradients, metrics, _ = loss_and_gradients(trainer_for(tiny_model_dir, tmp_path / "t", lora, loss_type, True))
    assert len(calls) == 2  # the policy and the reference took the packed path
    assert batch["input_ids"].shape[0] == 8 and (batch["attention_mask"] == 0).any()  # 4 pairs, padded rows
    torch.testing.assert_close(loss, trl_loss, rtol=1e-5, atol=1e-5)
    assert gradients.keys() == trl_gradients.keys() and gradients
    for name, gradient in gradients.items():
        torch.testing.assert_close(gradient, trl_gradients[name], rtol=1e-5, atol=1e-5, msg=name)
    for key in ("rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected", "entropy", "logits/chosen"):
        assert metrics[key] == pytest.approx(trl_metrics[key], rel=1e-5, abs=1e-5), key


def test_the_packed_row_holds_each_prompt_once():
    ids = torch.tensor([[5, 6, 7, 8, 0], [5, 6, 9, 0, 0], [5, 6, 1, 2, 3], [4, 6, 9, 0, 0]])
    mask = (ids != 0).long()
    mask[2] = 1
    layout = pair_layout(ids, mask)  # rows: chosen 0, chosen 1, rejected 0, rejected 1
    assert layout.segments == [(2, 2, 3), (0, 3, 3)]  # pair 0 shares [5, 6]; pair 1 shares nothing
    assert layout.input_ids.tolist() == [[5, 6, 7, 8, 1, 2, 3, 5, 6, 9, 4, 6, 9]]
    assert layout.position_ids.tolist() == [[0, 1, 2, 3, 2, 3, 4, 0, 1, 2, 0, 1, 2]]
    packed = layout.input_ids[0]
    for row in range(4):
        length = int(mask[row].sum())
        assert packed[layout.index[row, :length]].tolist() == ids[row, :length].tolist()
