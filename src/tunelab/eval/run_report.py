"""One report per run: `eval/report.md` and a self-contained `eval/report.html`, built only from the run directory.

Sections: what was trained (recipe summary), the data (counts and audit), the loss curves, held-out metrics base vs
tuned (per category too), the forgetting check, pairwise A/B results, and the tuned model's best and worst test
answers beside the base model's. Sections whose files are missing are left out, so a failed or partial run still
gets a report of what it has.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from tunelab.runs import RunDir, read_json, write_atomic

EXAMPLES = 3


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


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


def collect(run: RunDir) -> dict[str, Any]:
    """Everything the report shows, read from the run directory."""
    recipe = run.read_recipe()
    rows = run.metrics()
    losses = [r["loss"] for r in rows if "loss" in r]
    evals = [r["eval_loss"] for r in rows if "eval_loss" in r]
    judge_dir = run.eval_dir / "judge"
    return {
        "name": run.name,
        "status": run.status(),
        "recipe": recipe,
        "data": read_json(run.data_dir / "summary.json"),
        "audit": (read_json(run.data_dir / "audit" / "report.json") or {}).get("summary"),
        "training": read_json(run.path / "training.json"),
        "loss": {"first": losses[0] if losses else None, "last": losses[-1] if losses else None,
                 "best_eval": min(evals) if evals else None, "steps": rows[-1]["step"] if rows else 0},
        "loss_plot": run.plots / "loss.png",
        "metrics": read_json(run.eval_dir / "metrics.json") or {},
        "by_category": {label: (read_json(run.eval_dir / f"report_{label}.json") or {}).get("by_category", {})
                        for label in ("base", "tuned")},
        "forgetting": read_json(run.eval_dir / "forgetting.json"),
        "judge": [read_json(p) for p in sorted(judge_dir.glob("*/summary.json"))] if judge_dir.is_dir() else [],
        "merge": read_json(run.merged / "verification.json"),
        "examples": examples(run),
    }  # fmt: skip


def _percent(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, int | float) else "—"


def _change(before: Any, after: Any) -> str:
    if isinstance(before, int | float) and isinstance(after, int | float):
        return f"{100 * (after - before):+.1f} pts"
    return ""


def summary_rows(data: dict[str, Any]) -> list[tuple[str, str]]:
    recipe, status = data["recipe"], data["status"]
    method = recipe.get("method", {})
    details = ", ".join(f"{k}={v}" for k, v in method.items() if k in ("r", "alpha", "trainable_layers"))
    sources = [Path(s["path"]).name for s in recipe.get("data", {}).get("sources", [])]
    sources += recipe.get("data", {}).get("datasets", [])
    rows = [
        ("state", f"{status.get('state', 'unknown')} at step {status.get('step', data['loss']['steps'])}"),
        ("model", str(recipe.get("model", {}).get("name"))),
        ("method", f"{method.get('type')} ({details})" if details else str(method.get("type"))),
        ("training data", ", ".join(sources) or "—"),
        ("test data", Path(recipe["data"]["test"]).name if recipe.get("data", {}).get("test") else "—"),
        ("seed", str(recipe.get("seed"))),
    ]
    train = data.get("data") or {}
    if train.get("train"):
        t = train["train"]
        rows.append(("examples", f"{t['kept']} trained ({t['truncated']} truncated, {t['dropped_no_target']} dropped), "
                                 f"{train.get('validation', {}).get('kept', 0)} validation, "
                                 f"{train.get('test', {}).get('total', 0)} test"))  # fmt: skip
    loss = data["loss"]
    if loss["first"] is not None:
        best = f", best eval loss {loss['best_eval']:.4f}" if loss["best_eval"] is not None else ""
        rows.append(("loss", f"{loss['first']:.4f} → {loss['last']:.4f}{best}"))
    if data.get("training"):
        switches = data["training"]
        used = [k for k in ("padding_free", "label_only_loss", "bf16", "gradient_checkpointing") if switches.get(k)]
        rows.append(("speed switches", ", ".join(used) or "none"))
    if data.get("merge"):
        merge = data["merge"]
        verdict = "identical" if merge.get("identical_outputs") else "DIFFERENT"
        rows.append(("merge check", f"{verdict} greedy outputs, max |Δlogit| {merge.get('max_abs_logit_diff', 0):.1e}"))
    return rows


def metric_rows(metrics: dict[str, dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    base, tuned = metrics.get("base", {}), metrics.get("tuned", {})
    names = sorted(set(base) | set(tuned))
    return [(n, _percent(base.get(n)), _percent(tuned.get(n)), _change(base.get(n), tuned.get(n))) for n in names]


def forgetting_rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    def row(name: str, part: dict[str, Any]) -> tuple[str, ...]:
        low, high = part["ci95"]
        interval = f"{100 * low:+.1f} to {100 * high:+.1f}"
        return (name, str(part["count"]), _percent(part["base"]), _percent(part["tuned"]),
                f"{100 * part['difference']:+.1f}", interval)  # fmt: skip

    return [row("all", report), *(row(name, part) for name, part in report["by_category"].items())]


def forgetting_verdict(report: dict[str, Any]) -> str:
    if report["flagged"]:
        return f"FORGETTING: accuracy dropped by more than {report['threshold_points']:g} points on {report['task']}."
    return f"No drop larger than {report['threshold_points']:g} points on {report['task']}."


def judge_rows(summaries: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    rows = []
    for s in summaries:
        interval = f"{s['ci95'][0]:.1%}–{s['ci95'][1]:.1%}" if s.get("ci95") else "—"
        names = f"{Path(str(s['a'])).name} vs {Path(str(s['b'])).name}"
        counts = (str(s["win"]), str(s["tie"]), str(s["loss"]), str(s["unparseable"]))
        rows.append((names, str(s["judge"]), *counts, _percent(s["win_rate"]), interval))
    return rows


def write_report(run: RunDir) -> dict[str, Path]:
    """Write eval/report.md and eval/report.html; returns their paths."""
    from tunelab.eval.report_render import render_html, render_markdown

    data = collect(run)
    paths = {"md": run.eval_dir / "report.md", "html": run.eval_dir / "report.html"}
    write_atomic(paths["md"], render_markdown(data))
    plot = data["loss_plot"]
    image = base64.b64encode(plot.read_bytes()).decode() if plot.is_file() else None
    write_atomic(paths["html"], render_html(data, image))
    return paths


def escape(text: Any) -> str:
    return html.escape(str(text), quote=True)
