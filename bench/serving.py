"""Shared pieces of the serving benchmarks: adapters to serve, a `tunelab serve` subprocess, request bodies.

Not a benchmark itself; `serve_load.py` and `serve_soak.py` import it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
QUICKSTART_TEST = REPO / "examples" / "quickstart" / "test.jsonl"


def make_adapters(base: str, folder: Path, count: int, seed: int = 0) -> dict[str, str]:
    """`count` LoRA adapters (r=16, all linear layers) with distinct random weights, saved in PEFT format.

    Their answers differ from each other and from the base model, which is all a throughput benchmark needs; trained
    adapters (`--adapter name=runs/x`) can be given instead.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    from tunelab.model.load import load_model

    adapters = {}
    for index in range(count):
        target = folder / f"adapter{index}"
        if not (target / "adapter_config.json").is_file():
            model, tokenizer, _ = load_model(base)
            torch.manual_seed(seed + index)
            config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights="gaussian")
            peft_model = get_peft_model(model, config)
            for name, parameter in peft_model.named_parameters():
                if "lora_B" in name:
                    torch.nn.init.normal_(parameter, std=0.02)
            peft_model.save_pretrained(target)
            tokenizer.save_pretrained(target)
        adapters[f"a{index}"] = str(target)
    return adapters


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def tunelab_server(base: str, adapters: dict[str, str], extra: list[str] = (), env: dict[str, str] | None = None):
    """`tunelab serve` in a subprocess on a free loopback port; yields (base URL, process)."""
    port = free_port()
    command = [sys.executable, "-m", "tunelab.cli", "serve", "--model", base, "--port", str(port),
               "--log-level", "warning", *extra]  # fmt: skip
    for name, path in adapters.items():
        command += ["--adapter", f"{name}={path}"]
    process = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, process)
        yield url, process
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def _wait_healthy(url: str, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tunelab serve exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).json()["status"] == "ok":
                return
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.5)
    raise RuntimeError("tunelab serve did not become healthy")


def chat_prompts(count: int) -> list[list[dict[str, str]]]:
    """Realistic chat requests: the quickstart's held-out orders (system prompt + customer message)."""
    records = [json.loads(line) for line in QUICKSTART_TEST.read_text(encoding="utf-8").splitlines()]
    return [records[i % len(records)]["messages"][:-1] for i in range(count)]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]
