"""Prefix, prompt and P-tuning adapters are served: their virtual tokens are a prefix cache computed once, every
prefill starts from a copy, and the answers equal PEFT's own `generate` — for prompts of different lengths in one
batch (left padding after the prefix), for a request that joins a running batch, and beside the base model."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import torch
from serving import running_server

QUESTIONS = [
    "Please send two red shirts to Alice in Berlin.",
    "Hi",
    "Order: 3 blue mugs, 1 teapot, shipped to Bob at 12 Long Street, Springfield, as soon as you can please.",
]


def _virtual_adapter(folder, tiny_model_dir, method: str):
    from peft import PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(5)
    config = {"prefix": PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4),
              "prompt": PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4),
              "ptuning": PromptEncoderConfig(task_type="CAUSAL_LM", num_virtual_tokens=4,
                                             encoder_hidden_size=16)}[method]  # fmt: skip
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.normal_(0, 2.0)  # virtual tokens that change the answers
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return folder


def _peft_answers(tiny_model_dir, folder, max_new_tokens: int) -> list[str]:
    """PEFT's generate, one question at a time (no padding), greedy."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.model.peft_methods import load_adapter

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = (load_adapter(model, folder) if folder else model).eval()
    answers = []
    for question in QUESTIONS:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)  # fmt: skip
        with torch.no_grad():
            out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
        answers.append(tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True))
    return answers


async def _ask_all(url, models: list[str], questions: list[str], stagger: float = 0.0) -> list[str]:
    async def ask(http, model, question, delay):
        await asyncio.sleep(delay)
        body = {"model": model, "messages": [{"role": "user", "content": question}], "temperature": 0,
                "max_tokens": 12}  # fmt: skip
        response = await http.post(f"{url}/v1/chat/completions", json=body, timeout=120)
        assert response.status_code == 200, response.text
        return response.json()["choices"][0]["message"]["content"]

    pairs = list(zip(models, questions, strict=True))
    async with httpx.AsyncClient() as http:
        return await asyncio.gather(*(ask(http, m, q, i * stagger) for i, (m, q) in enumerate(pairs)))


@pytest.mark.parametrize("method", ["prefix", "prompt", "ptuning"])
def test_a_virtual_token_adapter_is_served_as_peft_generates(tiny_model_dir, tmp_path, method):
    from tunelab.serve.app import ServeSettings, create_app
    from tunelab.serve.engine import Engine

    folder, name = _virtual_adapter(tmp_path / method, tiny_model_dir, method), f"orders-{method}"
    engine = Engine(str(tiny_model_dir), {name: str(folder)})
    base = str(tiny_model_dir)
    try:
        assert engine.virtual[name].length == 4 and engine.decoder.one_adapter_per_batch
        with running_server(create_app(engine, ServeSettings())) as url:
            together = asyncio.run(_ask_all(url, [name] * 3, QUESTIONS))  # one batch, left-padded after the prefix
            joining = asyncio.run(_ask_all(url, [name] * 3, QUESTIONS, stagger=0.05))  # rows join a running batch
            plain = asyncio.run(_ask_all(url, [base] * 3, QUESTIONS))
        engine.unload_adapter(name)
        assert name not in engine.virtual and not hasattr(engine.model, "peft_config")
    finally:
        engine.close()
    expected = _peft_answers(tiny_model_dir, folder, 12)
    assert together == expected and joining == expected
    assert plain == _peft_answers(tiny_model_dir, None, 12)


@pytest.mark.parametrize("method", ["prefix", "prompt", "ptuning"])
def test_rl_rollouts_sample_a_virtual_token_policy_as_peft_generates(tiny_model_dir, tmp_path, method):
    """The RL stages sample from the policy with tunelab's decoding loop: a prompt-tuned policy's greedy samples are
    PEFT's `generate` answers (the loop would otherwise add the virtual tokens at every step)."""
    from transformers import AutoModelForCausalLM

    from tunelab.model.decode import SamplingSettings, sample_completions
    from tunelab.model.peft_methods import load_adapter

    folder = _virtual_adapter(tmp_path / method, tiny_model_dir, method)
    model = load_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), folder).eval()
    prompts = [[5, 17, 42, 99, 7, 3], [11, 12], [40, 41, 42, 43]]
    samples = sample_completions(model, prompts, SamplingSettings(max_new_tokens=6, temperature=0.0), set(), 0)
    with torch.no_grad():
        for prompt, sample in zip(prompts, samples, strict=True):
            ids = torch.tensor([prompt])
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=6,
                                 do_sample=False, pad_token_id=0, output_logits=True,
                                 return_dict_in_generate=True)  # fmt: skip
            assert sample.ids == out.sequences[0, len(prompt) :].tolist()
            # the tiny model repeats tokens whatever comes first: its log-probabilities tell the decodings apart
            steps = zip(out.logits, sample.ids, strict=True)
            expected = [float(torch.log_softmax(step[0].float(), -1)[token]) for step, token in steps]
            assert sample.logprobs == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize("method", ["prefix", "prompt", "ptuning"])
def test_the_prefix_cache_gives_the_logits_of_peft_forward(tiny_model_dir, tmp_path, method):
    """Left-padded prompts after a copy of the prefix cache give, at their last position, the logits PEFT's forward
    gives each prompt alone (it puts the virtual tokens in front itself) — and not the base model's."""
    from transformers import AutoModelForCausalLM

    from tunelab.model.peft_methods import load_adapter
    from tunelab.model.virtual_prefix import VirtualPrefix, prefill_inputs

    folder = _virtual_adapter(tmp_path / method, tiny_model_dir, method)
    model = load_adapter(AutoModelForCausalLM.from_pretrained(tiny_model_dir), folder).eval()
    prompts = [[5, 17, 42, 99, 7, 3], [11, 12], [40, 41, 42, 43]]
    prefix = VirtualPrefix.of(model)
    ids, mask, positions = prefill_inputs(prompts, prefix.length, pad=0)
    with torch.no_grad():
        served = model.get_base_model()(input_ids=ids, attention_mask=mask, position_ids=positions,
                                        past_key_values=prefix.seeded_cache(3)).logits[:, -1]  # fmt: skip
        alone = torch.cat([model(input_ids=torch.tensor([p])).logits[:, -1] for p in prompts])
        with model.disable_adapter():
            base = torch.cat([model(input_ids=torch.tensor([p])).logits[:, -1] for p in prompts])
    assert torch.allclose(served, alone, atol=1e-4)
    assert (served - base).abs().max() > 1e-2  # the virtual tokens really change the logits


def test_prefill_inputs_put_the_prompts_after_the_virtual_tokens():
    from tunelab.model.virtual_prefix import prefill_inputs

    ids, mask, positions = prefill_inputs([[7, 8, 9], [5]], virtual=4, pad=0)
    assert ids.tolist() == [[7, 8, 9], [0, 0, 5]]
    assert mask.tolist() == [[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0, 1]]
    assert positions.tolist() == [[4, 5, 6], [4, 4, 4]]  # a padded row's first real token is at position 4
