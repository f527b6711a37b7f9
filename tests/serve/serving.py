"""Helpers for the serving tests: train an adapter through the real CLI, run a server on a free loopback port."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import uvicorn

from helpers import tiny_recipe, write_jsonl
from tunelab.cli import main


def train_adapter(tmp_path: Path, model_dir: Path, name: str, records: list[dict], seed: int) -> Path:
    recipe = tiny_recipe(tmp_path, model_dir, name=name, seed=seed)
    write_jsonl(tmp_path / "train.jsonl", records)
    overrides = ["train.max_steps=6", "train.learning_rate=0.02", "eval.base=false", "eval.forgetting=false",
                 "export.merge=false", "data.validation=null"]  # fmt: skip
    assert main(["run", str(recipe), *overrides]) == 0
    return tmp_path / "runs" / name


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
