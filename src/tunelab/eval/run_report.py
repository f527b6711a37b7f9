"""One report per run: `eval/report.md` and a self-contained `eval/report.html`, built only from the run directory.

Sections: what was trained (recipe summary), the data (counts and audit), the loss curves, held-out metrics base vs
tuned with paired-bootstrap intervals and verdicts (per category too), answers cut off at the token limit, the
forgetting check, pairwise A/B results, and the tuned model's best and worst test answers beside the base model's.
Sections whose files are missing are left out, so a failed or partial run still gets a report of what it has; runs
written before comparison.json and the verdicts existed get them computed from what they stored.
"""

from __future__ import annotations

import base64
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tunelab.errors import RunError
from tunelab.eval.baseline_report import read_baselines
from tunelab.eval.comparison import load_comparison
from tunelab.eval.continual_report import read_continual
from tunelab.eval.forgetting import with_verdicts
from tunelab.eval.lengths import truncation_counts, truncation_section
from tunelab.eval.report_render import render_html, render_markdown
from tunelab.eval.roi_report import read_roi
from tunelab.jsonl import read_jsonl, skip
from tunelab.runs import RunDir, read_json, write_atomic

EXAMPLES = 3


def _jsonl(path: Path) -> list[dict[str, Any]]:
    """The prediction rows of a file (lines that are not a complete prediction are skipped)."""
    rows = read_jsonl(path, skip, errors="replace", missing_ok=True)
    return [row for row in rows if isinstance(row, dict) and "id" in row and isinstance(row.get("scores", {}), dict)]


def record_score(scores: dict[str, Any]) -> float | None:
    """One number per answer to rank examples: field accuracy, else ROUGE-L, else exact match."""
    field = scores.get("field_accuracy")
    if isinstance(field, dict) and field.get("total"):
        return field["correct"] / field["total"]
    for name in ("rouge_l", "exact_match", "json_validity"):
        if isinstance(scores.get(name), int | float):
            return float(scores[name])
    return None


def examples(run: RunDir, count: int = EXAMPLES) -> dict[str, list[dict[str, Any]]]:
    """The tuned model's best and worst test answers (ties broken by the gain over base), with the base answer."""
    tuned = _jsonl(run.eval_dir / "predictions_tuned.jsonl")
    base = {row["id"]: row for row in _jsonl(run.eval_dir / "predictions_base.jsonl")}
    scored = []
    for row in tuned:
        score = record_score(row.get("scores", {}))
        if score is None:
            continue
        before = base.get(row["id"])
        base_score = record_score(before.get("scores", {})) if before else None
        scored.append({
            "id": row["id"], "prompt": row["prompt"], "reference": row["reference"], "tuned": row["prediction"],
            "tuned_score": score, "base": before["prediction"] if before else None, "base_score": base_score,
        })  # fmt: skip
    gain = lambda e: e["tuned_score"] - (e["base_score"] or 0.0)  # noqa: E731
    best = sorted(scored, key=lambda e: (-e["tuned_score"], -gain(e)))[:count]
    worst = sorted(scored, key=lambda e: (e["tuned_score"], gain(e)))[:count]
    return {"best": best, "worst": [e for e in worst if e not in best]}


def read_truncation(run: RunDir, recipe: dict[str, Any]) -> dict[str, Any] | None:
    """What the report says about answers cut at eval.max_new_tokens (None when none was), from the predictions."""
    rows = {label: _jsonl(run.eval_dir / f"predictions_{label}.jsonl") for label in ("base", "tuned")}
    counts = {label: truncation_counts(found) for label, found in rows.items() if found}
    reports = {label: read_json(run.eval_dir / f"report_{label}.json") or {} for label in ("base", "tuned")}
    return truncation_section(counts, reports, recipe.get("eval", {}).get("max_new_tokens"))


def read_forgetting(run: RunDir) -> dict[str, Any] | None:
    """forgetting.json with its verdicts (computed for reports written before they existed), or None."""
    report = read_json(run.eval_dir / "forgetting.json")
    return with_verdicts(report) if report else None


def read_metrics_file(path: Path) -> dict[str, dict[str, Any]]:
    """eval/metrics.json: {label: {metric: number or null}}; any other shape is a damaged file (ValueError)."""
    metrics = read_json(path) or {}
    valid = isinstance(metrics, dict) and all(
        isinstance(values, dict) and all(v is None or isinstance(v, int | float) for v in values.values())
        for values in metrics.values()
    )
    if not valid:
        raise ValueError(f"{path.name} is not {{label: {{metric: number}}}}")
    return metrics


def log_prob_trend(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The policy's mean log-probability of the chosen and of the rejected answers, first and last logged (the
    preference stages log them); `both_fell` flags the known failure where the chosen answer gets less likely too."""
    chosen = [r["logps/chosen"] for r in rows if "logps/chosen" in r]
    rejected = [r["logps/rejected"] for r in rows if "logps/rejected" in r]
    if len(chosen) < 2 or len(rejected) < 2:
        return None
    return {"chosen": [chosen[0], chosen[-1]], "rejected": [rejected[0], rejected[-1]],
            "both_fell": chosen[-1] < chosen[0] and rejected[-1] < rejected[0]}  # fmt: skip


def latest_samples(run: RunDir, count: int = 8) -> list[dict[str, Any]]:
    """The last saved batch of an RL run's sampled answers (samples.jsonl), at most `count` of them."""
    rows = [row for row in read_jsonl(run.path / "samples.jsonl", skip, errors="replace", missing_ok=True)
            if isinstance(row, dict)]  # fmt: skip
    if not rows:
        return []
    last = max(int(row.get("step", 0)) for row in rows)
    return [row for row in rows if int(row.get("step", 0)) == last][:count]


def collect(run: RunDir) -> dict[str, Any]:
    """Everything the report shows, read from the run directory (comparison.json is computed when it is missing)."""
    recipe = run.read_recipe()
    rows = run.metrics()
    losses = [r["loss"] for r in rows if "loss" in r]
    evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
    judge_dir = run.eval_dir / "judge"
    metrics = read_metrics_file(run.eval_dir / "metrics.json")
    training = read_json(run.path / "training.json")
    baselines = read_baselines(run, recipe, metrics)
    return {
        "name": run.name,
        "status": run.status(),
        "recipe": recipe,
        "data": read_json(run.data_dir / "summary.json"),
        "audit": (read_json(run.data_dir / "audit" / "report.json") or {}).get("summary"),
        "training": training,
        "loss": {"first": losses[0] if losses else None, "last": losses[-1] if losses else None,
                 "best_eval": min(evals) if evals else None, "steps": rows[-1]["step"] if rows else 0},
        "log_probs": log_prob_trend(rows),
        "loss_plot": run.plots / "loss.png",
        "rl_plot": run.plots / "rl.png",
        "samples": latest_samples(run),
        "metrics": {label: values for label, values in metrics.items() if label in ("base", "tuned")},
        "baselines": baselines,
        "roi": read_roi(run, training, baselines, recipe.get("eval", {}).get("metrics", [])),
        "continual": read_continual(run, read_json(run.data_dir / "summary.json")),
        "by_category": {label: (read_json(run.eval_dir / f"report_{label}.json") or {}).get("by_category", {})
                        for label in ("base", "tuned")},
        "comparison": load_comparison(run.eval_dir),
        "truncation": read_truncation(run, recipe),
        "forgetting": read_forgetting(run),
        "judge": [read_json(p) for p in sorted(judge_dir.glob("*/summary.json"))] if judge_dir.is_dir() else [],
        "merge": read_json(run.merged / "verification.json"),
        "examples": examples(run),
    }  # fmt: skip


def write_report(run: RunDir) -> dict[str, Path]:
    """Write eval/report.md and eval/report.html; returns their paths."""
    with damaged_files_named(run):
        data = collect(run)
        markdown = render_markdown(data)
        images = {key: base64.b64encode(data[key].read_bytes()).decode() if data[key].is_file() else None
                  for key in ("loss_plot", "rl_plot")}  # fmt: skip
        page = render_html(data, images["loss_plot"], images["rl_plot"])
    paths = {"md": run.eval_dir / "report.md", "html": run.eval_dir / "report.html"}
    write_atomic(paths["md"], markdown)
    write_atomic(paths["html"], page)
    return paths


@contextmanager
def damaged_files_named(run: RunDir):
    """Files tunelab wrote have known shapes; one edited or damaged by hand can break reading them. Say which file
    it is (the JSON files that do not parse or hold the wrong kind of value) instead of failing somewhere inside."""
    try:
        yield
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        suspects = [str(path.relative_to(run.path)) for path in sorted(run.path.rglob("*.json"))
                    if not isinstance(read_json(path), dict | list)] or ["(no file fails to parse)"]  # fmt: skip
        raise RunError(f"{run.path}: cannot read this run's results ({type(error).__name__}: {error}); damaged or "
                       f"hand-edited files: {', '.join(suspects[:5])}. Restore them, or run the recipe again "
                       "(--resume keeps what is intact)") from None  # fmt: skip
