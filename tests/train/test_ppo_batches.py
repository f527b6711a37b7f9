"""PPO's rollout batch with several answers per prompt: minibatches keep a prompt's answers together, and the packed
forward (each prompt computed once, no padding) gives the padded forward's hidden states and log-probabilities."""

from __future__ import annotations

import torch

from tunelab.train.packing import use_packed_attention
from tunelab.train.ppo import PPOTrainer, RolloutBatch, minibatch_order


def test_minibatches_keep_a_prompts_answers_together_and_cover_each_row_once_an_epoch():
    order = minibatch_order(prompts=4, answers=3, minibatches=2, epochs=2, generator=torch.Generator().manual_seed(0))
    assert len(order) == 4 and all(len(rows) == 6 for rows in order)
    for epoch in (order[:2], order[2:]):
        assert sorted(torch.cat(epoch).tolist()) == list(range(12))
    for rows in order:
        prompts = {row // 3 for row in rows.tolist()}
        assert len(prompts) == 2 and all({p * 3, p * 3 + 1, p * 3 + 2} <= set(rows.tolist()) for p in prompts)
    assert not torch.equal(order[0], order[2])  # a new permutation every epoch


def test_one_answer_per_prompt_is_the_plain_row_permutation():
    order = minibatch_order(prompts=5, answers=1, minibatches=2, epochs=1, generator=torch.Generator().manual_seed(1))
    assert [len(rows) for rows in order] == [2, 2]  # an odd prompt out sits this epoch out, as before


def rollout_batch(tokenizer) -> RolloutBatch:
    """Two prompts of different lengths, two answers each of different lengths, padded as PPOTrainer._padded does."""
    prompts = [tokenizer("Send two red shirts to Alice in Berlin.")["input_ids"],
               tokenizer("Hi! Ship one cap to Bob.")["input_ids"]]  # fmt: skip
    texts = ['{"city": "Berlin"}', '{"city": "Berlin", "qty": 2}', '{"city": null}', '{"customer": "Bob", "city": 1}']
    answers = [tokenizer(text)["input_ids"] for text in texts]
    rows = [(prompts[0], answers[0]), (prompts[0], answers[1]), (prompts[1], answers[2]), (prompts[1], answers[3])]
    width, length = max(len(p) for p, _ in rows), max(len(a) for _, a in rows)
    ids, attention, mask = [], [], []
    for prompt, answer in rows:
        left, right = width - len(prompt), length - len(answer)
        ids.append([0] * left + prompt + answer + [0] * right)
        attention.append([0] * left + [1] * (len(prompt) + len(answer)) + [0] * right)
        mask.append([1.0] * len(answer) + [0.0] * right)
    zeros = torch.zeros(len(rows), length)
    return RolloutBatch(torch.tensor(ids), torch.tensor(attention), width, torch.tensor(mask), zeros, zeros, zeros,
                        zeros)  # fmt: skip


def test_the_packed_forward_equals_the_padded_one(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa", dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    batch = rollout_batch(tokenizer)
    padded_hidden = PPOTrainer._hidden(None, model, batch)
    padded_logprobs, _ = PPOTrainer._policy_logprobs(_Args(), model, batch)
    assert use_packed_attention(model.get_base_model())
    packed_hidden = PPOTrainer._hidden(None, model, batch)
    packed_logprobs, _ = PPOTrainer._policy_logprobs(_Args(), model, batch)
    real = batch.mask.bool()
    assert packed_hidden.shape == padded_hidden.shape
    torch.testing.assert_close(packed_hidden[real], padded_hidden[real], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(packed_logprobs, padded_logprobs, atol=1e-4, rtol=1e-4)
    assert (packed_logprobs[real] < 0).all() and (packed_logprobs[~real] == 0).all()


class _Args:
    """What PPOTrainer._policy_logprobs reads of a trainer: its _hidden and the sampling temperature."""

    _hidden = PPOTrainer._hidden

    class args:
        temperature = 0.7
