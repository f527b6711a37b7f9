"""Helpers for the serving tests: train an adapter through the real CLI or make a run directory without training,
run a server on a free loopback port."""

from __future__ import annotations

import json
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
import yaml

from helpers import tiny_recipe, write_jsonl
from tunelab.cli import main

KEY = {"Authorization": "Bearer test-key"}  # the main test server's API key (conftest.py)


def train_adapter(tmp_path: Path, model_dir: Path, name: str, records: list[dict], seed: int) -> Path:
    recipe = tiny_recipe(tmp_path, model_dir, name=name, seed=seed)
    write_jsonl(tmp_path / "train.jsonl", records)
    overrides = ["train.max_steps=6", "train.learning_rate=0.02", "eval.base=false", "eval.forgetting=false",
                 "export.merge=false", "data.validation=null"]  # fmt: skip
    assert main(["run", str(recipe), *overrides]) == 0
    return tmp_path / "runs" / name


def make_run(folder: Path, model_dir: Path, system_prompt: str | None, seed: int = 0) -> Path:
    """A minimal run directory without training: recipe.yaml, data/summary.json with the shared system prompt, and
    adapter/ (a LoRA with random non-zero weights, saved by peft with the tokenizer)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))  # fmt: skip
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.05)
    model.save_pretrained(folder / "adapter")
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(folder / "adapter")
    (folder / "data").mkdir()
    (folder / "data" / "summary.json").write_text(json.dumps({"system_prompt": system_prompt}), encoding="utf-8")
    (folder / "recipe.yaml").write_text(yaml.safe_dump({"name": folder.name, "model": {"name": str(model_dir)}}))
    return folder


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def running_server(app):
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def post(server, body, headers=KEY, path="/v1/chat/completions", **kwargs):
    return httpx.post(f"{server}{path}", headers=headers, timeout=60, **({"json": body} if body is not None else {}),
                      **kwargs)  # fmt: skip


def assert_error(response, status, param=None, code=None):
    """The response is `status` with exactly OpenAI's error shape (and the given param and code); returns the error."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    if param is not None:
        assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error
