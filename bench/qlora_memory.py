"""Benchmark: QLoRA against LoRA on the quickstart — same recipe, data, seed and steps — for the memory the base
model's weights take in the process, the process's peak RSS while training, the training time, and held-out field
accuracy (with the paired-bootstrap interval of the difference).

    .venv/bin/python bench/qlora_memory.py                               # lora, qlora (4-bit NF4)
    .venv/bin/python bench/qlora_memory.py --methods lora,qlora,qlora8 --out bench/results/qlora_memory.json

Each method is the real `tunelab run examples/quickstart/recipe.yaml` in a subprocess (forgetting probe off, no
merge). Its RSS is polled every 0.1 s and attributed to the phase status.json names, so "peak while training" is
the training phase alone; the weights' bytes while training come from training.json (`weight_bytes`: parameters
and buffers as held during training — LoRA's frozen weights in bf16 when it trains in bf16, QLoRA's packed 4-bit
weights with their scales).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
from train_throughput import cpu_line

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "examples" / "quickstart" / "recipe.yaml"
METHODS = {
    "lora": [],
    "qlora": ["method.type=qlora", "export.merge=false"],
    "qlora8": ["method.type=qlora", "method.bits=8", "export.merge=false"],
    "qlora_loftq": ["method.type=qlora", "method.init=loftq", "export.merge=false"],
}


def run_method(name: str, out: Path, extra: list[str]) -> dict[str, Any]:
    command = [sys.executable, "-m", "tunelab.cli", "run", str(RECIPE), f"name=bench-{name}", f"output_dir={out}",
               "eval.forgetting.enabled=false", *METHODS[name], *extra]  # fmt: skip
    run = out / f"bench-{name}"
    peaks: dict[str, int] = {}
    started = time.perf_counter()
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as process:
        watched = psutil.Process(process.pid)
        log = []
        while process.poll() is None:
            phase = _phase(run)
            try:
                peaks[phase] = max(peaks.get(phase, 0), watched.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.1)
        log.append(process.stdout.read())
    if process.returncode != 0:
        raise SystemExit(f"{name} failed:\n{''.join(log)[-3000:]}")
    training = json.loads((run / "training.json").read_text())
    metrics = json.loads((run / "eval" / "metrics.json").read_text())["tuned"]
    return {
        "method": name,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "train_seconds": round(training["train_seconds"], 1),
        "weight_bytes": training["weight_bytes"],
        "peak_rss_training": peaks.get("training"),
        "peak_rss_overall": max(peaks.values()),
        "field_accuracy": metrics.get("field_accuracy"),
        "exact_match": metrics.get("exact_match"),
        "run": str(run),
    }


def _phase(run: Path) -> str:
    try:
        return json.loads((run / "status.json").read_text()).get("phase") or "starting"
    except (OSError, ValueError):
        return "starting"


def paired_field_accuracy(reference: dict, other: dict) -> dict[str, Any]:
    from tunelab.eval.comparison import compare_predictions
    from tunelab.eval.heldout import read_predictions

    rows = [read_predictions(Path(r["run"]) / "eval" / "predictions_tuned.jsonl") for r in (reference, other)]
    return compare_predictions(*rows)["metrics"]["field_accuracy"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", default="lora,qlora")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("overrides", nargs="*", help="recipe overrides for every run, e.g. train.max_steps=60")
    args = parser.parse_args(argv)
    names = args.methods.split(",")
    with tempfile.TemporaryDirectory(prefix="tunelab-qlora-bench-") as scratch:
        results = [run_method(name, Path(scratch), args.overrides) for name in names]
        reference = results[0]
        for result in results[1:]:
            result["field_accuracy_vs_" + reference["method"]] = paired_field_accuracy(reference, result)
    for result in results:
        result["weight_ratio"] = round(result["weight_bytes"] / reference["weight_bytes"], 3)
        result["peak_rss_training_ratio"] = round(result["peak_rss_training"] / reference["peak_rss_training"], 3)
        result.pop("run")
    summary = {"machine": cpu_line(), "recipe": str(RECIPE.relative_to(ROOT)), "overrides": args.overrides,
               "results": results}  # fmt: skip
    print(json.dumps(summary, indent=2))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
