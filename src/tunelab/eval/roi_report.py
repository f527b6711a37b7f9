"""The report's "cost and return" section: `tunelab estimate`'s figures beside what the run measured, and what
fine-tuning returns over prompting — the gain over the k-shot prompt (with its interval), the training cost, and
the inference cost per 1k requests with and without the k-shot prompt (tokens, and this machine's generation time).

Prices: this machine's hour and the GPU table's (train/gpus.py), both named where they are used. Rows only.
"""

from __future__ import annotations

from typing import Any

from tunelab.eval.comparison import format_interval
from tunelab.eval.metrics import format_change
from tunelab.runs import RunDir, read_json

ESTIMATE_HEAD = ("", "estimated", "measured", "measured / estimated")
INFERENCE_HEAD = ("per 1k requests", "k-shot prompt", "tuned model", "saved by fine-tuning")


def read_roi(run: RunDir, training: dict[str, Any] | None, baselines: dict[str, Any] | None, metrics: list[str]):
    """What the section shows; None when there is neither an estimate nor a prompted baseline to weigh against."""
    estimate = read_json(run.path / "estimate.json")
    estimate = estimate if isinstance(estimate, dict) else None
    if estimate is None and not (baselines and "k_shot" in baselines.get("reports", {})):
        return None
    return {"estimate": estimate, "training": training or {}, "baselines": baselines, "metrics": metrics}


def estimate_rows(section: dict[str, Any]) -> list[tuple[str, ...]]:
    estimate, training = section["estimate"] or {}, section["training"]
    here = estimate.get("this_machine")
    if not here or not training.get("train_seconds"):
        return []
    rows = []
    pairs = (
        ("training time (s)", here["train_seconds"], training["train_seconds"], 1),
        ("peak memory (GiB)", here["peak_rss_bytes"] / 2**30, (training.get("peak_rss_bytes") or 0) / 2**30, 2),
    )
    for name, predicted, actual, digits in pairs:
        ratio = f"{actual / predicted:.2f}" if predicted and actual else "—"
        rows.append((name, f"{predicted:,.{digits}f}", f"{actual:,.{digits}f}" if actual else "—", ratio))
    return rows


def _key_metric(comparison: dict[str, Any], metrics: list[str]) -> str | None:
    """The metric the return is stated in: field accuracy where scored, else the recipe's first compared metric."""
    found = comparison.get("metrics", {})
    for name in ("field_accuracy", *metrics):
        if name in found:
            return name
    return next(iter(found), None)


def gain_sentence(section: dict[str, Any]) -> str | None:
    """The tuned model's change over the better-scoring prompted baseline, on the key metric."""
    from tunelab.eval.baseline_report import label_name

    baselines = section["baselines"] or {}
    found = {label: c for label, c in baselines.get("comparisons", {}).items() if label in ("zero_shot", "k_shot")}
    scored = [(label, c, _key_metric(c, section["metrics"])) for label, c in found.items()]
    scored = [(label, c["metrics"][name], name) for label, c, name in scored if name is not None]
    if not scored:
        return None
    label, m, name = max(scored, key=lambda item: item[1]["base"])
    interval = format_interval(m["ci95"], name)
    return (f"Gain over the best prompt ({label_name(label, baselines.get('k'))}) on {name}: "
            f"{format_change(name, m['base'], m['tuned'])} (95% CI {interval}, {m['verdict']}).")  # fmt: skip


def inference_rows(section: dict[str, Any]) -> list[tuple[str, ...]]:
    """Tokens and this machine's generation seconds per 1k requests, k-shot prompt vs tuned model."""
    from tunelab.eval.baseline_report import request_cost

    reports = (section["baselines"] or {}).get("reports", {})
    if "k_shot" not in reports or "tuned" not in reports:
        return []
    shot, tuned = request_cost(reports["k_shot"]), request_cost(reports["tuned"])
    rows = []
    for name, key in (("prompt tokens", "prompt"), ("answer tokens", "answer")):
        if shot[key] is not None and tuned[key] is not None:
            rows.append((name, f"{1000 * shot[key]:,.0f}", f"{1000 * tuned[key]:,.0f}",
                         f"{1000 * (shot[key] - tuned[key]):,.0f}"))  # fmt: skip
    if shot["seconds"] and tuned["seconds"]:
        saved = shot["seconds"] - tuned["seconds"]
        rows.append(("generation seconds (this machine)", f"{1000 * shot['seconds']:,.0f}",
                     f"{1000 * tuned['seconds']:,.0f}", f"{1000 * saved:,.0f}"))  # fmt: skip
    return rows


def cost_sentences(section: dict[str, Any]) -> list[str]:
    """Training cost (estimated and measured) and when the inference saving pays it back."""
    from tunelab.eval.baseline_report import request_cost
    from tunelab.train.gpus import CPU_HOURLY_USD

    lines = []
    seconds = section["training"].get("train_seconds")
    measured = seconds / 3600 * CPU_HOURLY_USD if seconds else None
    estimate = section["estimate"] or {}
    if measured is not None:
        planned = estimate.get("this_machine", {}).get("cost_usd")
        planned_text = f" (estimated ${planned:.4f})" if planned is not None else ""
        lines.append(f"Training cost on this machine: {seconds / 60:.1f} min, ${measured:.4f} at ${CPU_HOURLY_USD}/h"
                     f"{planned_text}; an assumed price for a 2-vCPU cloud instance, not a bill.")  # fmt: skip
    fitting = [r for r in estimate.get("gpu", {}).get("rows", []) if r["fits"] != "no"]
    if fitting:
        cheapest = min(fitting, key=lambda r: r["cost_usd"])
        lines.append(f"Cheapest GPU of the estimate that fits: {cheapest['gpu']}, ≈ ${cheapest['cost_usd']:.4f} "
                     f"({cheapest['seconds']:.1f} s at ${cheapest['hourly_usd']}/h, MFU {estimate['gpu']['mfu']:.0%} "
                     "assumed).")  # fmt: skip
    reports = (section["baselines"] or {}).get("reports", {})
    if measured and "k_shot" in reports and "tuned" in reports:
        saved = request_cost(reports["k_shot"])["seconds"], request_cost(reports["tuned"])["seconds"]
        if saved[0] and saved[1] and saved[0] > saved[1]:
            per_request = (saved[0] - saved[1]) / 3600 * CPU_HOURLY_USD
            lines.append(f"Fine-tuning pays back its training after ≈ {measured / per_request:,.0f} requests served "
                         "instead of the k-shot prompt (this machine's generation time, same price).")  # fmt: skip
    return lines
