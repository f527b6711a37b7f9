"""Measurement: L2-SP on the quickstart — the same LoRA run with λ = 0 and λ > 0 (same data, seed, steps) — for the
forgetting-probe change against the base model (each run's, and the paired difference between the two runs), the
distance from the pretrained weights ‖ΔW‖ (total, and per adapted module: the ratio of the λ > 0 update to the λ = 0
update, with a bootstrap interval over modules), and held-out field accuracy (paired interval).

    .venv/bin/python bench/l2sp.py --l2sp 1e-3 --out bench/results/l2sp_avx512bf16.json

Each run is the real `tunelab run examples/quickstart/recipe.yaml` (forgetting probe on, as the recipe has it); the
second takes the base model's evaluation from the first (`--base-from`). `--plain RUN` reuses a λ = 0 run of the same
recipe (compare-methods' lora run is one).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from train_throughput import cpu_line

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "examples" / "quickstart" / "recipe.yaml"


def train(name: str, out: Path, strength: float, base_from: Path | None, extra: list[str]) -> Path:
    command = [sys.executable, "-m", "tunelab.cli", "run", str(RECIPE), f"name={name}", f"output_dir={out}",
               f"method.l2sp={strength}", *extra]  # fmt: skip
    command += ["--base-from", str(base_from)] if base_from else []
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{(done.stdout + done.stderr)[-3000:]}")
    return out / name


def module_updates(adapter: Path) -> dict[str, float]:
    """‖s·B·A‖ per adapted module of a saved LoRA adapter."""
    from safetensors.torch import load_file

    config = json.loads((adapter / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    norms = {}
    for name, a in weights.items():
        if ".lora_A." in name:
            b = weights[name.replace(".lora_A.", ".lora_B.")]
            norms[name.split(".lora_A.")[0]] = float((scale * (b @ a)).norm())
    return norms


def ratio_interval(ratios: np.ndarray, samples: int = 10000, seed: int = 0) -> list[float]:
    rng = np.random.default_rng(seed)
    means = rng.choice(ratios, size=(samples, len(ratios))).mean(axis=1)
    return [float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))]


def compare(plain: Path, pulled: Path) -> dict[str, Any]:
    from tunelab.eval.comparison import compare_predictions
    from tunelab.eval.forgetting import forgetting_report
    from tunelab.eval.heldout import read_predictions
    from tunelab.jsonl import read_jsonl

    runs = {"l2sp_0": plain, "l2sp": pulled}
    forgetting = {k: json.loads((r / "eval" / "forgetting.json").read_text()) for k, r in runs.items()}
    probe = [read_jsonl(r / "eval" / "forgetting" / "tuned" / "items.jsonl") for r in runs.values()]
    predictions = [read_predictions(r / "eval" / "predictions_tuned.jsonl") for r in runs.values()]
    updates = [module_updates(r / "adapter") for r in runs.values()]
    ratios = np.array([updates[1][m] / updates[0][m] for m in updates[0]])
    training = {k: json.loads((r / "training.json").read_text()) for k, r in runs.items()}
    return {
        "forgetting_vs_base": {
            k: {f: v.get(f) for f in ("difference", "ci95", "verdict")} for k, v in forgetting.items()
        },
        "probe_l2sp_minus_plain": {f: forgetting_report(*probe, "probe", 2.0).get(f) for f in ("difference", "ci95")},
        "distance_from_pretrained": {k: t.get("distance_from_pretrained") for k, t in training.items()},
        "module_update_ratio": {
            "modules": len(ratios),
            "mean": float(ratios.mean()),
            "ci95": ratio_interval(ratios),
            "smaller_in": int((ratios < 1).sum()),
        },  # fmt: skip
        "field_accuracy_l2sp_minus_plain": compare_predictions(*predictions)["metrics"].get("field_accuracy"),
        "train_seconds": {k: t.get("train_seconds") for k, t in training.items()},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--l2sp", type=float, default=1e-3, help="λ of the second run")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--plain", type=Path, help="an existing λ = 0 run of the same recipe (e.g. compare-methods' "
                        "lora run) instead of training one")  # fmt: skip
    parser.add_argument("overrides", nargs="*", help="recipe overrides for both runs")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="tunelab-l2sp-") as scratch:
        plain = args.plain or train("l2sp-0", Path(scratch), 0.0, None, args.overrides)
        pulled = train("l2sp-on", Path(scratch), args.l2sp, plain, args.overrides)
        result = {"machine": cpu_line(), "l2sp": args.l2sp, "overrides": args.overrides} | compare(plain, pulled)
    print(json.dumps(result, indent=2))
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
