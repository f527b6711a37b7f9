"""One report per run: `eval/report.md` and a self-contained `eval/report.html`, built only from the run directory.

Sections: what was trained (recipe summary), the data (counts and audit), the loss curves, held-out metrics base vs
tuned with paired-bootstrap intervals and verdicts (per category too), answers cut off at the token limit, the
forgetting check, pairwise A/B results, and the tuned model's best and worst test answers beside the base model's.
Sections whose files are missing are left out, so a failed or partial run still gets a report of what it has; runs
written before comparison.json and the verdicts existed get them computed from what they stored.
"""

from __future__ import annotations

import base64
import html
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tunelab.errors import RunError
from tunelab.eval.bootstrap import MIN_ITEMS, SAMPLES, direction
from tunelab.eval.comparison import format_interval, load_comparison
from tunelab.eval.forgetting import FORGETTING, INCONCLUSIVE, VERDICT_LABELS, verdict_sentence, with_verdicts
from tunelab.eval.lengths import truncation_counts, truncation_section
from tunelab.runs import RunDir, read_json, write_atomic

EXAMPLES = 3


def _jsonl(path: Path) -> list[dict[str, Any]]:
    """The prediction rows of a file (lines that are not a complete prediction are skipped)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "id" in row and isinstance(row.get("scores", {}), dict):
            rows.append(row)
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


def collect(run: RunDir) -> dict[str, Any]:
    """Everything the report shows, read from the run directory (comparison.json is computed when it is missing)."""
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
        "metrics": read_metrics_file(run.eval_dir / "metrics.json"),
        "by_category": {label: (read_json(run.eval_dir / f"report_{label}.json") or {}).get("by_category", {})
                        for label in ("base", "tuned")},
        "comparison": load_comparison(run.eval_dir),
        "truncation": read_truncation(run, recipe),
        "forgetting": read_forgetting(run),
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


def intervals(comparison: dict[str, Any] | None, forgetting: dict[str, Any] | None) -> dict[str, tuple[str, str]]:
    """{metric: (95% CI in points, verdict)} for the held-out metrics, and the forgetting task's accuracy."""
    found = {
        name: (format_interval(m["ci95"]), m["verdict"]) for name, m in (comparison or {}).get("metrics", {}).items()
    }
    if forgetting:
        low, high = forgetting["ci95"]
        found[f"{forgetting['task']}_accuracy"] = (
            format_interval([low, high]),
            direction(low, high, forgetting["count"]),
        )
    return found


def metric_rows(metrics: dict[str, dict[str, Any]], comparison=None, forgetting=None) -> list[tuple[str, ...]]:
    """metric, base, tuned, change, 95% CI (pts), verdict (the last two "—" and "" where nothing was resampled)."""
    base, tuned = metrics.get("base", {}), metrics.get("tuned", {})
    found = intervals(comparison, forgetting)
    return [(n, _percent(base.get(n)), _percent(tuned.get(n)), _change(base.get(n), tuned.get(n)),
             *found.get(n, ("—", ""))) for n in sorted(set(base) | set(tuned))]  # fmt: skip


def comparison_note(comparison: dict[str, Any]) -> str:
    unpaired = comparison.get("unpaired", {})
    extra = sum(unpaired.values())
    note = f" ({extra} records answered by only one model are left out)" if extra else ""
    return (f"Tuned vs base on the same {comparison['count']} test records{note}. 95% intervals from a paired "
            f"bootstrap ({comparison.get('samples', SAMPLES):,} resamples of records): better or worse only when the "
            f"whole interval is on one side of 0 and there are at least {MIN_ITEMS} records, otherwise "
            "inconclusive. A probe_accuracy row is the forgetting check's (its own interval and verdict).")  # fmt: skip


def category_comparison_rows(comparison: dict[str, Any] | None) -> list[tuple[str, ...]]:
    """category, records, metric, base, tuned, change, 95% CI (pts), verdict: one row per category and metric."""
    rows = []
    for name, group in (comparison or {}).get("by_category", {}).items():
        for metric, m in group["metrics"].items():
            rows.append((name, str(m["count"]), metric, _percent(m["base"]), _percent(m["tuned"]),
                         _change(m["base"], m["tuned"]), format_interval(m["ci95"]), m["verdict"]))  # fmt: skip
    return rows


def forgetting_rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    def row(name: str, part: dict[str, Any]) -> tuple[str, ...]:
        low, high = part["ci95"]
        interval = f"{100 * low:+.1f} to {100 * high:+.1f}"
        return (name, str(part["count"]), _percent(part["base"]), _percent(part["tuned"]),
                f"{100 * part['difference']:+.1f}", interval, VERDICT_LABELS[part["verdict"]])  # fmt: skip

    report = with_verdicts(report)
    return [row("all", report), *(row(name, part) for name, part in report["by_category"].items())]


def forgetting_verdict(report: dict[str, Any]) -> str:
    return verdict_sentence(report)


def forgetting_style(report: dict[str, Any]) -> str:
    """CSS class of the verdict: red only for established forgetting, amber when inconclusive, green otherwise."""
    verdict = with_verdicts(report)["verdict"]
    return {FORGETTING: "flag", INCONCLUSIVE: "unsure"}.get(verdict, "ok")


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

    with damaged_files_named(run):
        data = collect(run)
        markdown = render_markdown(data)
        plot = data["loss_plot"]
        image = base64.b64encode(plot.read_bytes()).decode() if plot.is_file() else None
        page = render_html(data, image)
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


def escape(text: Any) -> str:
    return html.escape(str(text), quote=True)
