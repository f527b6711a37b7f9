"""`tunelab serve --model` takes what `tunelab export` wrote: a GGUF file and a bitsandbytes-quantised folder are
served as base models and answer (through the official `openai` client) as the same file loaded with transformers."""

from __future__ import annotations

import openai
import pytest
import torch
from serving import running_server, train_adapter

from helpers import quickstart_records
from tunelab.cli import main

MESSAGES = [{"role": "user", "content": "Please send two red shirts to Alice in Berlin."}]


@pytest.fixture(scope="module")
def exports(tmp_path_factory, tiny_model_dir):
    run = train_adapter(tmp_path_factory.mktemp("exported"), tiny_model_dir, "exp", quickstart_records("train", 48), 3)
    gguf = run / "export" / "exp-q8_0.gguf"
    assert main(["export", str(run), "--gguf", "q8_0"]) == 0
    assert main(["export", str(run), "--quantize", "int8"]) == 0
    return {"gguf": gguf, "int8": run / "export" / "int8"}


def _direct_greedy(kind: str, path, max_new_tokens: int) -> str:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    options = {"gguf_file": path.name} if kind == "gguf" else {}
    where = path.parent if kind == "gguf" else path
    tokenizer = AutoTokenizer.from_pretrained(where, **options)
    model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32 if kind == "gguf" else None, **options)
    ids = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        stops = {"eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id}
        out = model.eval().generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, **stops)
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


@pytest.mark.parametrize("kind", ["gguf", "int8"])
def test_an_exported_model_is_served_as_a_base(exports, kind):
    from tunelab.serve.app import ServeSettings, create_app
    from tunelab.serve.engine import Engine

    engine = Engine(str(exports[kind]))
    try:
        with running_server(create_app(engine, ServeSettings())) as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
            name = client.models.list().data[0].id
            answer = client.chat.completions.create(model=name, messages=MESSAGES, max_tokens=12, temperature=0)
    finally:
        engine.close()
    assert answer.choices[0].message.content == _direct_greedy(kind, exports[kind], 12)
