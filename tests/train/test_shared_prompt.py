"""tunelab's forward for DPO and the online RL stages (each shared prompt computed once, the LM head only where it
scores) gives TRL's loss and gradients on the same batch: DPO for a LoRA policy (reference = adapter disabled) and a
full one (reference = a copy); GRPO's per-token log-probabilities and entropies of left-padded groups of samples."""

from __future__ import annotations

import pytest
import torch

from tunelab.train.packing import use_packed_attention
from tunelab.train.shared_prompt import prefix_layout, share_online_prompts, share_trainer_prompts


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
    layout = prefix_layout(ids, mask)  # rows: chosen 0, chosen 1, rejected 0, rejected 1
    # rows 1 and 2 share [5, 6] with row 0 and follow it; row 3 shares nothing and leads its own group
    assert layout.groups == [(4, ((2, 1), (2, 3))), (3, ())]
    assert layout.input_ids.tolist() == [[5, 6, 7, 8, 9, 1, 2, 3, 4, 6, 9]]
    assert layout.position_ids.tolist() == [[0, 1, 2, 3, 2, 2, 3, 4, 0, 1, 2]]
    packed = layout.input_ids[0]
    for row in range(4):
        length = int(mask[row].sum())
        assert packed[layout.index[row, :length]].tolist() == ids[row, :length].tolist()


def test_left_padded_rows_are_packed_from_their_first_real_token():
    ids = torch.tensor([[0, 0, 5, 6, 7, 0], [0, 0, 5, 6, 8, 9], [0, 4, 5, 6, 7, 0]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 0, 1, 1, 1, 1], [0, 1, 1, 1, 1, 0]])
    layout = prefix_layout(ids, mask)
    assert layout.groups == [(3, ((2, 2),)), (4, ())]
    assert layout.input_ids.tolist() == [[5, 6, 7, 8, 9, 4, 5, 6, 7]]
    assert layout.position_ids.tolist() == [[0, 1, 2, 2, 3, 0, 1, 2, 3]]
    for row in range(3):
        real = mask[row].bool()
        assert layout.input_ids[0][layout.index[row][real]].tolist() == ids[row][real].tolist()


def grpo_trainer(model_dir, tmp_path, tunelab: bool, temperature: float):
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if tunelab:
        assert use_packed_attention(model)
    config = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    args = GRPOConfig(output_dir=str(tmp_path), num_generations=3, per_device_train_batch_size=6, bf16=False,
                      report_to="none", use_cpu=True, temperature=temperature)  # fmt: skip
    dataset = Dataset.from_list([{"prompt": "Hello"}] * 6)
    trainer = GRPOTrainer(model=model, reward_funcs=[lambda completions, **_: [0.0] * len(completions)], args=args,
                          train_dataset=dataset, processing_class=AutoTokenizer.from_pretrained(model_dir))  # fmt: skip
    if tunelab:
        assert share_online_prompts(trainer)
    return trainer


def grpo_batch():
    """Two prompts of different lengths (left-padded), three completions each of different lengths (right-padded),
    two of prompt 0's completions beginning alike."""
    prompts = [[11, 12, 13, 14, 15], [21, 22, 23]]
    completions = [[31, 32, 33, 2], [31, 32, 40], [50, 2], [60, 61, 62, 63, 2], [70], [71, 72, 2]]
    width, length = max(map(len, prompts)), max(map(len, completions))
    ids, mask = [], []
    for row, completion in enumerate(completions):
        prompt = prompts[row // 3]
        pad_left, pad_right = width - len(prompt), length - len(completion)
        ids.append([0] * pad_left + prompt + completion + [0] * pad_right)
        mask.append([0] * pad_left + [1] * (len(prompt) + len(completion)) + [0] * pad_right)
    return torch.tensor(ids), torch.tensor(mask), length


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_grpo_logprobs_entropies_and_gradients_equal_trl(tiny_model_dir, tmp_path, temperature, monkeypatch):
    import tunelab.train.shared_prompt as shared_prompt

    calls = []
    original = shared_prompt.shared_prompt_logprobs
    monkeypatch.setattr(shared_prompt, "shared_prompt_logprobs", lambda *a, **k: calls.append(1) or original(*a, **k))
    ids, mask, completion_length = grpo_batch()
    results = []
    for tunelab in (False, True):
        trainer = grpo_trainer(tiny_model_dir, tmp_path / str(tunelab), tunelab, temperature)
        trainer.model.train()
        logps, entropies, _ = trainer._get_per_token_logps_and_entropies(
            trainer.model, ids, mask, completion_length, compute_entropy=True
        )
        completion_mask = mask[:, -completion_length:].bool()
        logps[completion_mask].sum().backward()
        gradients = {name: p.grad.clone() for name, p in trainer.model.named_parameters() if p.grad is not None}
        results.append((logps[completion_mask].detach(), entropies[completion_mask].detach(), gradients))
    assert len(calls) == 1  # tunelab's trainer took the packed path
    (trl_logps, trl_entropies, trl_gradients), (logps, entropies, gradients) = results
    torch.testing.assert_close(logps, trl_logps, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(entropies, trl_entropies, rtol=1e-5, atol=1e-5)
    assert gradients.keys() == trl_gradients.keys() and gradients
    for name, gradient in gradients.items():
        torch.testing.assert_close(gradient, trl_gradients[name], rtol=1e-4, atol=1e-5, msg=name)
