"""Benchmark: single-stream greedy decoding, tunelab's decoding engine against transformers' `generate`.

    .venv/bin/python bench/decode_speed.py --out bench/results/decode_speed.json

One prompt at a time (what `tunelab chat`, a single API client or an evaluation of one long answer sees), greedy,
on the same model object, the same prompts and the same `max_new_tokens`: the quickstart's test prompts (chat
template applied), the base model's own answers. Configurations, interleaved, `--repeats` times:

- `generate`: `model.generate(do_sample=False)` with transformers' defaults (dynamic cache, sdpa attention).
- `tunelab`: `tunelab.model.generate.generate_batch`, which on a CPU decodes one greedy prompt with
  `model/lookahead.py` (drafts looked up in the prompt and the answer so far, checked by the model in one pass) and
  several with `model/decode.py`'s loop (the one RL rollouts use), on weights packed for oneDNN once for the
  session, as `tunelab chat` (`hold_packed_weights`) and `tunelab serve` pack them when they load the model; that
  one-time packing is timed and reported apart (`packing_s`), not in the tokens/s.

Reported: generated tokens per second (median over repeats; total tokens / total decoding seconds over the prompts,
first token included), milliseconds per token, the tunelab/generate ratio, the share of prompts whose greedy
answers (text and token count) are identical in both (they must all be: both compute in the model's precision), and
the floor: how long the matrix-vector products alone take per token (every weight read once), which no engine in
this precision beats on this machine while it computes one token per pass.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from serving import chat_prompts
from train_throughput import cpu_line


def prompts(tokenizer, count: int) -> list[list[int]]:
    """The quickstart's held-out orders, templated as evaluation and chat template them."""
    from tunelab.data.tokenize import prompt_ids_for_generation

    return [prompt_ids_for_generation(tokenizer, messages) for messages in chat_prompts(count)]


def run_generate(model, tokenizer, prompt_ids: list[list[int]], max_new: int) -> tuple[float, list[tuple]]:
    import torch

    from tunelab.model.generate import _completion, greedy_config

    config = greedy_config(model, tokenizer, max_new)
    outputs, seconds = [], 0.0
    with torch.inference_mode():
        for ids in prompt_ids:
            started = time.perf_counter()
            out = model.generate(input_ids=torch.tensor([ids]), generation_config=config)
            seconds += time.perf_counter() - started
            outputs.append(_completion(out[0, len(ids) :].tolist(), set(config.eos_token_id), tokenizer))
    return seconds, [(o["text"], o["completion_tokens"]) for o in outputs]


def run_tunelab(model, tokenizer, prompt_ids: list[list[int]], max_new: int) -> tuple[float, list[tuple]]:
    from tunelab.model.decode import packed_weights
    from tunelab.model.generate import generate_batch

    outputs, seconds = [], 0.0
    with packed_weights(model):  # once for the session (timed in `packing_seconds`), as chat and the server do
        for ids in prompt_ids:
            started = time.perf_counter()
            result = generate_batch(model, tokenizer, [ids], max_new)[0]
            seconds += time.perf_counter() - started
            outputs.append((result["text"], result["completion_tokens"]))
    return seconds, outputs


def packing_seconds(model) -> float:
    """What packing every weight for oneDNN costs once (best of three), the session's start-up cost."""
    from tunelab.model.decode import packed_weights

    times = []
    for _ in range(3):
        started = time.perf_counter()
        with packed_weights(model):
            times.append(time.perf_counter() - started)
    return min(times)


RUNNERS = {"generate": run_generate, "tunelab": run_tunelab}


def weight_read_floor(model, repeats: int = 3) -> dict[str, Any]:
    """Milliseconds per token that the matrix-vector products alone take: every linear layer and the output head
    applied to one row, in the model's precision, the faster of MKL's matrix-vector path and oneDNN on pre-packed
    weights (the best of `repeats`). Decoding one token per forward pass reads every weight once per token, so no such
    engine in this precision decodes faster than this on this machine."""
    import torch

    from tunelab.model.fast_linear import available, pack

    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    inputs = [torch.randn(1, m.in_features, dtype=m.weight.dtype) for m in layers]
    products = {"mkl": [lambda x, m=m: torch.nn.functional.linear(x, m.weight) for m in layers]}
    if available():
        packed = [pack(m.weight) for m in layers]
        products["onednn_packed"] = [
            lambda x, w=w: torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "") for w in packed
        ]
    best = {name: float("inf") for name in products}
    with torch.inference_mode():
        for _ in range(repeats):
            for name, calls in products.items():
                started = time.perf_counter()
                for call, row in zip(calls, inputs, strict=True):
                    call(row)
                best[name] = min(best[name], time.perf_counter() - started)
    fastest = min(best, key=best.get)
    weight_bytes = sum(m.weight.numel() * m.weight.element_size() for m in layers)
    return {"ms_per_token": 1000 * best[fastest], "path": fastest, "ms_by_path": {k: 1000 * v for k, v in best.items()},
            "weight_mib": weight_bytes / 2**20, "gb_per_s": weight_bytes / best[fastest] / 1e9}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out")
    args = parser.parse_args(argv)

    from tunelab.allocator import prepare_process

    prepare_process()
    import torch

    from tunelab.hardware import physical_cores
    from tunelab.model.load import load_model

    torch.set_num_threads(args.threads or physical_cores())
    model, tokenizer, _ = load_model(args.model)
    model.eval()
    prompt_ids = prompts(tokenizer, args.prompts)
    machine = f"{cpu_line()}; torch threads {torch.get_num_threads()}"
    print(machine, flush=True)
    RUNNERS["generate"](model, tokenizer, prompt_ids[:1], 8)  # warm-up: first-call costs are not decoding speed
    RUNNERS["tunelab"](model, tokenizer, prompt_ids[:1], 8)
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in RUNNERS}
    outputs: dict[str, list[tuple]] = {}
    for repeat in range(args.repeats):
        for name, runner in RUNNERS.items():
            seconds, outputs[name] = runner(model, tokenizer, prompt_ids, args.max_new_tokens)
            tokens = sum(count for _, count in outputs[name])
            results[name].append({"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds})
            print(f"  {name:<9} run {repeat + 1}: {tokens / seconds:6.1f} tok/s "
                  f"({1000 * seconds / tokens:.1f} ms/token, {tokens} tokens)", flush=True)  # fmt: skip
    floor = weight_read_floor(model)
    packing = packing_seconds(model)
    print(f"packing the weights once per session: {1000 * packing:.0f} ms", flush=True)
    print(f"matrix-vector products alone: {floor['ms_per_token']:.1f} ms/token ({floor['weight_mib']:.0f} MiB of "
          f"weights read at {floor['gb_per_s']:.1f} GB/s, {floor['path']}; by path: "
          + ", ".join(f"{k} {v:.1f} ms" for k, v in floor["ms_by_path"].items()) + ")", flush=True)  # fmt: skip
    table = {name: {"tokens_per_s": statistics.median(r["tokens_per_s"] for r in runs),
                    "ms_per_token": 1000 / statistics.median(r["tokens_per_s"] for r in runs),
                    "runs": [r["tokens_per_s"] for r in runs]} for name, runs in results.items()}  # fmt: skip
    identical = sum(a == b for a, b in zip(outputs["generate"], outputs["tunelab"], strict=True)) / len(prompt_ids)
    ratio = table["tunelab"]["tokens_per_s"] / table["generate"]["tokens_per_s"]
    print(f"tunelab / generate: {ratio:.2f}x; identical greedy outputs: {identical:.0%}")
    report = {"table": table, "ratio_tunelab_vs_generate": ratio, "identical_output_share": identical,
              "weight_read_floor": floor, "packing_s": packing,
              "machine": machine, "settings": {k: v for k, v in vars(args).items() if k != "out"},
              "command": "bench/decode_speed.py " + " ".join(argv if argv is not None else sys.argv[1:])}  # fmt: skip
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
