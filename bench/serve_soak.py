"""Soak test: minutes of mixed valid, invalid and disconnecting clients against `tunelab serve`.

    .venv/bin/python bench/serve_soak.py --minutes 3 --out bench/results/serve_soak.json

The server (a subprocess, built-in model, two adapters, API key on) must end healthy, every valid request must be
answered with 200 and a finish reason, every invalid one with its 4xx and never a 5xx, and the server's memory must be
flat: resident memory sampled every few seconds, compared between the end of the warm-up and the end of the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
from serving import chat_prompts, make_adapters, tunelab_server

KEY = "soak-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}


def _invalid_requests(models: list[str]) -> list[tuple[str, dict[str, Any], int]]:
    """(content or JSON marker, headers, expected status) for each kind of bad request."""
    ok = {"model": models[0], "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    return [
        ('{"model": "a0", "messages": [', HEADERS, 400),
        (json.dumps(ok | {"model": "missing"}), HEADERS, 404),
        (json.dumps(ok | {"max_tokens": 100_000}), HEADERS, 400),
        (json.dumps(ok | {"messages": []}), HEADERS, 400),
        (json.dumps(ok | {"n": 1000}), HEADERS, 400),
        (json.dumps(ok), {"Authorization": "Bearer wrong"}, 401),
        ("x" * 2_000_000, HEADERS, 413),
    ]


async def valid_client(http, url, models, prompts, stop_at, tally, rng):
    while time.monotonic() < stop_at:
        body = {"model": rng.choice(models), "messages": rng.choice(prompts), "max_tokens": rng.randint(4, 32),
                "temperature": rng.choice([0, 0.7])}  # fmt: skip
        if rng.random() < 0.5:
            response = await http.post(f"{url}/v1/chat/completions", json=body, headers=HEADERS)
            done = response.status_code == 200 and response.json()["choices"][0]["finish_reason"] in ("stop", "length")
        else:
            async with http.stream("POST", f"{url}/v1/chat/completions", json=body | {"stream": True},
                                   headers=HEADERS) as response:  # fmt: skip
                lines = [line async for line in response.aiter_lines() if line]
            done = response.status_code == 200 and lines[-1] == "data: [DONE]"
        tally["valid"] += 1
        tally["valid_answered"] += int(done)


async def invalid_client(http, url, models, stop_at, tally, rng):
    cases = _invalid_requests(models)
    while time.monotonic() < stop_at:
        content, headers, expected = rng.choice(cases)
        response = await http.post(f"{url}/v1/chat/completions", content=content, headers=headers)
        tally["invalid"] += 1
        tally["invalid_as_expected"] += int(response.status_code == expected)
        tally["server_errors"] += int(response.status_code >= 500)
        await asyncio.sleep(0.05)


async def disconnecting_client(http, url, models, prompts, stop_at, tally, rng):
    while time.monotonic() < stop_at:
        body = {"model": rng.choice(models), "messages": rng.choice(prompts), "max_tokens": 200, "stream": True}
        async with http.stream("POST", f"{url}/v1/chat/completions", json=body, headers=HEADERS) as response:
            async for _ in response.aiter_lines():
                break  # hang up after the first chunk
        tally["disconnected"] += 1
        await asyncio.sleep(0.2)


async def sample_memory(process: psutil.Process, stop_at: float, samples: list[tuple[float, int]]):
    started = time.monotonic()
    while time.monotonic() < stop_at:
        samples.append((round(time.monotonic() - started, 1), process.memory_info().rss))
        await asyncio.sleep(5)


async def soak(url: str, pid: int, models: list[str], seconds: float, clients: int) -> dict[str, Any]:
    tally = dict.fromkeys(("valid", "valid_answered", "invalid", "invalid_as_expected", "server_errors",
                           "disconnected"), 0)  # fmt: skip
    prompts, samples = chat_prompts(40), []
    stop_at = time.monotonic() + seconds
    rng = random.Random(0)
    async with httpx.AsyncClient(timeout=300) as http:
        tasks = [valid_client(http, url, models, prompts, stop_at, tally, random.Random(i)) for i in range(clients)]
        tasks += [invalid_client(http, url, models, stop_at, tally, rng),
                  disconnecting_client(http, url, models, prompts, stop_at, tally, rng),
                  sample_memory(psutil.Process(pid), stop_at, samples)]  # fmt: skip
        await asyncio.gather(*tasks)
        health = (await http.get(f"{url}/health")).json()
    return {"tally": tally, "health": health, "memory_samples": samples}


def verdict(result: dict[str, Any], warmup_s: float) -> dict[str, Any]:
    samples = result["memory_samples"]
    after_warmup = next((rss for t, rss in samples if t >= warmup_s), samples[0][1])
    growth = (samples[-1][1] - after_warmup) / after_warmup
    tally = result["tally"]
    return {
        "healthy": result["health"]["status"] == "ok",
        "all_valid_answered": tally["valid"] == tally["valid_answered"],
        "no_server_errors": tally["server_errors"] == 0,
        "invalid_all_as_expected": tally["invalid"] == tally["invalid_as_expected"],
        "memory_growth_after_warmup": round(growth, 4),
        "memory_flat": growth < 0.05,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=4, help="concurrent valid clients")
    parser.add_argument("--warmup", type=float, default=45.0, help="seconds before the memory baseline is taken")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    adapters = make_adapters(args.model, Path(tempfile.mkdtemp(prefix="tunelab-soak-")), 2)
    extra = ["--api-key-env", "SOAK_KEY", "--max-queue", "32"]
    with tunelab_server(args.model, adapters, extra, env={"SOAK_KEY": KEY}) as (url, process):
        result = soak(url, process.pid, list(adapters), args.minutes * 60, args.clients)
        result = asyncio.run(result)
    result["verdict"] = verdict(result, args.warmup)
    print(json.dumps({"tally": result["tally"], "verdict": result["verdict"], "stats": result["health"]["stats"]},
                     indent=2))  # fmt: skip
    mb = [round(rss / 2**20) for _, rss in result["memory_samples"]]
    print(f"server RSS (MB) every 5 s: {mb}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
