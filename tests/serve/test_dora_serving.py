"""Adapters the stacked path cannot compute are served one adapter per batch, each as PEFT computes it: a DoRA
adapter (PEFT's mixed batches refuse DoRA) beside a LoRA adapter and the base model, and an IA³ adapter (no LoRA
layers to stack: once served as the base model), and a bottleneck adapter likewise."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import torch
from serving import post, running_server

MESSAGES = [{"role": "user", "content": "Please send two red shirts to Alice in Berlin."}]


def _adapter(folder, tiny_model_dir, dora: bool, seed: int):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"], use_dora=dora, init_lora_weights=False)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                parameter.normal_(0, 0.5)  # large enough to change the answers (DoRA's magnitudes stay)
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(folder)
    return folder


def _peft_greedy(tiny_model_dir, folder, max_new_tokens: int) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.model.peft_methods import load_adapter

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = (load_adapter(model, folder) if folder else model).eval()
    ids = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


def test_dora_and_lora_adapters_served_together_answer_as_peft(tiny_model_dir, tmp_path):
    from tunelab.serve.app import ServeSettings, create_app
    from tunelab.serve.engine import Engine

    folders = {"dora": _adapter(tmp_path / "dora", tiny_model_dir, True, 1),
               "lora": _adapter(tmp_path / "lora", tiny_model_dir, False, 2)}  # fmt: skip
    engine = Engine(str(tiny_model_dir), {name: str(folder) for name, folder in folders.items()})
    assert engine.decoder.path == "transformers" and engine.decoder.one_adapter_per_batch
    models = [str(tiny_model_dir), "dora", "lora", "dora", "lora"]

    async def ask(http, url, model):
        body = {"model": model, "messages": MESSAGES, "temperature": 0, "max_tokens": 10}
        response = await http.post(f"{url}/v1/chat/completions", json=body, timeout=60)
        assert response.status_code == 200, response.text
        return response.json()["choices"][0]["message"]["content"]

    async def together(url):
        async with httpx.AsyncClient() as http:
            return await asyncio.gather(*(ask(http, url, m) for m in models))

    try:
        with running_server(create_app(engine, ServeSettings())) as url:
            answers = asyncio.run(together(url))
            alone = post(url, {"model": "dora", "messages": MESSAGES, "temperature": 0, "max_tokens": 10}, headers={})
    finally:
        engine.close()
    expected = {m: _peft_greedy(tiny_model_dir, folders.get(m), 10) for m in set(models)}
    assert answers == [expected[m] for m in models]
    assert alone.json()["choices"][0]["message"]["content"] == expected["dora"]
    assert len(set(expected.values())) == 3  # the adapters really change the answers


def _ia3_config():
    from peft import IA3Config

    return IA3Config(target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"]), 4.0


def _bottleneck_config():
    from tunelab.model.bottleneck import BottleneckConfig

    return BottleneckConfig(size=8), 1.0


@pytest.mark.parametrize("kind", ["ia3", "bottleneck"])
def test_an_adapter_that_is_not_lora_is_served_as_itself(tiny_model_dir, tmp_path, kind):
    """An IA³ adapter (made elsewhere) or a bottleneck adapter (tunelab's own PEFT method) has no LoRA layers to
    stack: it must not be served as the base model."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.model import fused_decoder
    from tunelab.serve.engine import Engine

    torch.manual_seed(3)
    config, spread = {"ia3": _ia3_config, "bottleneck": _bottleneck_config}[kind]()
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir), config)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.normal_(0.0, spread)  # large enough to change the answer
    model.save_pretrained(tmp_path / kind)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / kind)
    assert not fused_decoder.supports(model)
    engine = Engine(str(tiny_model_dir), {kind: str(tmp_path / kind)})
    try:
        assert engine.decoder.path == "transformers" and engine.decoder.one_adapter_per_batch
        with running_server(create_app_for(engine)) as url:
            body = {"model": kind, "messages": MESSAGES, "temperature": 0, "max_tokens": 10}
            answer = post(url, body, headers={}).json()["choices"][0]["message"]["content"]
    finally:
        engine.close()
    expected = _peft_greedy(tiny_model_dir, tmp_path / kind, 10)
    assert answer == expected and expected != _peft_greedy(tiny_model_dir, None, 10)


def create_app_for(engine):
    from tunelab.serve.app import ServeSettings, create_app

    return create_app(engine, ServeSettings())
