"""Benchmark: tunelab's batched multi-adapter server against one-request-at-a-time serving, under concurrent load.

    .venv/bin/python bench/serve_load.py                                  # 8 clients, 4 adapters, 48 requests
    .venv/bin/python bench/serve_load.py --clients 8 --requests 64 --max-tokens 64 --out bench/results/serve.json

Both configurations are the real `tunelab serve` in a subprocess with the built-in model and the same adapters:
(a) the batched engine (requests for any adapter share a batch through PEFT's mixed-adapter batches), and (b) the
baseline `--one-at-a-time`: one request at a time, switching the active adapter between requests, as a simple
server does. `--clients` concurrent clients (the official `openai` async client) send `--requests` chat requests
spread over the adapters round robin, greedy, with a fixed `max_tokens`; each configuration runs `--repeats` times,
interleaved, and medians are reported: requests/s, generated tokens/s, p50/p95 latency, and the batched/baseline
throughput ratio. Decoding is greedy, so both configurations should give the same answers; the share that agree is
reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from serving import chat_prompts, make_adapters, percentile, tunelab_server

CONFIGURATIONS = {"batched": [], "one_at_a_time": ["--one-at-a-time"]}


async def _load(url: str, models: list[str], prompts, clients: int, max_tokens: int) -> dict[str, Any]:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600)
    work = list(enumerate(prompts))
    latencies: list[float] = []
    answers: dict[int, str] = {}
    tokens = 0

    async def worker():
        nonlocal tokens
        while work:
            index, messages = work.pop(0)
            started = time.perf_counter()
            reply = await client.chat.completions.create(
                model=models[index % len(models)], messages=messages, temperature=0, max_tokens=max_tokens
            )
            latencies.append(time.perf_counter() - started)
            answers[index] = reply.choices[0].message.content
            tokens += reply.usage.completion_tokens

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    wall = time.perf_counter() - started
    await client.close()
    return {
        "seconds": wall,
        "requests_per_s": len(prompts) / wall,
        "tokens_per_s": tokens / wall,
        "generated_tokens": tokens,
        "p50_latency_s": percentile(latencies, 0.5),
        "p95_latency_s": percentile(latencies, 0.95),
        "answers": [answers[i] for i in range(len(prompts))],
    }


def _warm_up(url: str, models: list[str]) -> None:
    """One request per model first, so the measured run does not include lazy first-call costs."""
    prompts = chat_prompts(len(models))
    asyncio.run(_load(url, models, prompts, clients=1, max_tokens=4))


def run(base: str, adapters: dict[str, str], args) -> dict[str, Any]:
    prompts = chat_prompts(args.requests)
    models = list(adapters)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGURATIONS}
    for repeat in range(args.repeats):
        for name, flags in CONFIGURATIONS.items():
            with tunelab_server(base, adapters, [*flags, "--max-batch", str(args.max_batch)]) as (url, _):
                _warm_up(url, models)
                result = asyncio.run(_load(url, models, prompts, args.clients, args.max_tokens))
            print(f"  {name:<14} run {repeat + 1}: {result['requests_per_s']:.2f} req/s, "
                  f"{result['tokens_per_s']:.1f} tok/s, p50 {result['p50_latency_s']:.1f} s", flush=True)  # fmt: skip
            results[name].append(result)
    return summarize(results)


def summarize(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    keys = ("requests_per_s", "tokens_per_s", "p50_latency_s", "p95_latency_s", "seconds")
    medians = {name: {k: statistics.median(r[k] for r in runs) for k in keys} for name, runs in results.items()}
    # greedy answers of a batched run against the one-at-a-time run: equal unless float rounding in a padded batch
    # tips a near-tie between two tokens
    pairs = list(zip(results["batched"][0]["answers"], results["one_at_a_time"][0]["answers"], strict=True))
    same = sum(a == b for a, b in pairs) / len(pairs)
    ratio = medians["batched"]["requests_per_s"] / medians["one_at_a_time"]["requests_per_s"]
    return {"medians": medians, "throughput_ratio": ratio, "identical_answer_share": same,
            "generated_tokens": results["batched"][0]["generated_tokens"]}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--adapters", type=int, default=4, help="random LoRA adapters to make and serve")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--adapter-dir", help="where to keep the generated adapters (default: a temporary folder)")
    parser.add_argument("--out", help="write the figures to this JSON file")
    args = parser.parse_args(argv)
    folder = Path(args.adapter_dir or tempfile.mkdtemp(prefix="tunelab-adapters-"))
    adapters = make_adapters(args.model, folder, args.adapters)
    print(f"{args.clients} clients, {args.requests} requests over {len(adapters)} adapters, max_tokens "
          f"{args.max_tokens}, {args.repeats} repeats", flush=True)  # fmt: skip
    summary = run(args.model, adapters, args) | {"settings": {k: v for k, v in vars(args).items() if k != "out"}}
    for name, values in summary["medians"].items():
        print(f"{name:<14} {values['requests_per_s']:6.2f} req/s  {values['tokens_per_s']:7.1f} tok/s  "
              f"p50 {values['p50_latency_s']:5.1f} s  p95 {values['p95_latency_s']:5.1f} s")  # fmt: skip
    print(f"batched / one-at-a-time throughput: {summary['throughput_ratio']:.2f}x; identical answers: "
          f"{summary['identical_answer_share']:.0%}")  # fmt: skip
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
