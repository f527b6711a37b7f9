"""Benchmark: `tunelab run --nproc 2` (DDP over gloo, 1 thread per process) against one process with 2 threads, on
the quickstart recipe and the built-in model — same data, seed, steps and global batch (2 × 4 against 1 × 8).

    .venv/bin/python bench/ddp_throughput.py --steps 20 --out bench/results/ddp_throughput.json

Each is the real `tunelab run` in a subprocess with evaluation, the forgetting probe and the merge off, so only the
training is timed (training.json: train_seconds, tokens_seen). Reports tokens/s of each, their ratio, and the largest
relative difference between the two loss curves.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from train_throughput import cpu_line

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "examples" / "quickstart" / "recipe.yaml"
QUIET = ["eval.base=false", "eval.forgetting.enabled=false", "export.merge=false", "data.test=null",
         "train.eval_steps=1000", "train.save_steps=1000", "train.logging_steps=1"]  # fmt: skip
SETUPS = {
    "2 processes x 1 thread": ["--nproc", "2", "train.per_device_train_batch_size=4"],
    "1 process x 2 threads": ["train.per_device_train_batch_size=8"],
}


def run(name: str, out: Path, steps: int, extra: list[str]) -> dict:
    run_name = name.split()[0] + "proc"
    command = [sys.executable, "-m", "tunelab", "run", str(RECIPE), f"name={run_name}", f"output_dir={out}",
               f"train.max_steps={steps}", *QUIET, *extra]  # fmt: skip
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - started
    folder = out / run_name
    training = json.loads((folder / "training.json").read_text())
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return {"train_seconds": round(training["train_seconds"], 1), "tokens_seen": training["tokens_seen"],
            "tokens_per_second": round(training["tokens_seen"] / training["train_seconds"], 1),
            "torch_threads": training["torch_threads"], "processes": training.get("processes", 1),
            "wall_seconds": round(wall, 1), "losses": [row["loss"] for row in rows if "loss" in row]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        results = {name: run(name, Path(scratch), args.steps, extra) for name, extra in SETUPS.items()}
    ddp, single = results.values()
    worst = max(abs(a - b) / abs(b) for a, b in zip(ddp["losses"], single["losses"], strict=True))
    report = {"cpu": cpu_line(), "steps": args.steps, "results": results,
              "ddp_vs_threads_tokens_per_second": round(ddp["tokens_per_second"] / single["tokens_per_second"], 3),
              "loss_curves_max_relative_difference": worst}  # fmt: skip
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
