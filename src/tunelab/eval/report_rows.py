"""Rows and sentences of the run report, built from the data `run_report.collect` gathers; no file I/O here.

The Markdown and HTML renderings (`report_render`), the terminal tables (`tunelab.report`) and the web UI show the same
rows, so they are built once, here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.eval.bootstrap import MIN_ITEMS, SAMPLES, direction
from tunelab.eval.comparison import format_interval
from tunelab.eval.forgetting import FORGETTING, INCONCLUSIVE, VERDICT_LABELS, verdict_sentence, with_verdicts
from tunelab.eval.metrics import format_change, format_value
from tunelab.formatting import percent


def _model_line(name: str) -> str:
    """The starting model; a parent run (a stage chained after another) is named with its report."""
    if (Path(name) / "recipe.yaml").is_file():
        return f"the trained model of run {name} (its report: {Path(name) / 'eval' / 'report.html'})"
    return name


def log_prob_line(trend: dict[str, Any]) -> str:
    (c0, c1), (r0, r1) = trend["chosen"], trend["rejected"]
    line = f"chosen {c0:.1f} → {c1:.1f}, rejected {r0:.1f} → {r1:.1f} (mean per answer, first and last logged)"
    if trend["both_fell"]:
        line += (
            "; WARNING: both fell — the chosen answers became less likely too (the margin grew only because "
            "the rejected fell faster): check the generation metrics, lower the learning rate or raise beta"
        )
    return line


def _method_settings(method: dict[str, Any]) -> dict[str, Any]:
    """The method's knobs a reader needs: rank and alpha, and every setting that differs from its default."""
    from tunelab.config.schema import method_sections

    schema = method_sections().get(method.get("type"))
    if schema is None:
        return {}
    defaults = {name: field.default for name, field in schema.model_fields.items()}
    return {k: v for k, v in method.items() if k != "type" and (k in ("r", "alpha") or v != defaults.get(k))}


def summary_rows(data: dict[str, Any]) -> list[tuple[str, str]]:
    recipe, status = data["recipe"], data["status"]
    method = recipe.get("method", {})
    details = ", ".join(f"{k}={v}" for k, v in _method_settings(method).items())
    sources = [Path(s["path"]).name for s in recipe.get("data", {}).get("sources", [])]
    sources += recipe.get("data", {}).get("datasets", [])
    rows = [
        ("state", f"{status.get('state', 'unknown')} at step {status.get('step', data['loss']['steps'])}"),
        ("stage", str(recipe.get("stage", "sft"))),
        ("model", _model_line(str(recipe.get("model", {}).get("name")))),
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
    if data.get("log_probs"):
        rows.append(("log-probabilities", log_prob_line(data["log_probs"])))
    if data.get("training"):
        switches = data["training"]
        names = ("padding_free", "label_only_loss", "bf16", "frozen_bf16", "lean_activations", "gradient_checkpointing")
        used = [k for k in names if switches.get(k)]
        rows.append(("speed switches", ", ".join(used) or "none"))
        rows += _footprint_rows(switches)
    if data.get("merge"):
        merge = data["merge"]
        verdict = "identical" if merge.get("identical_outputs") else "DIFFERENT"
        line = f"{verdict} greedy outputs, max |Δlogit| {merge.get('max_abs_logit_diff', 0):.1e}"
        rows.append(("merge check", merge.get("summary") or line))  # runs before the summary was kept: the line
    else:
        rows += _no_merge_row(data["recipe"].get("method") or {})
    return rows


def _footprint_rows(training: dict[str, Any]) -> list[tuple[str, str]]:
    """Memory and the distance the training moved the weights, where training.json has them."""
    rows = []
    if training.get("peak_rss_bytes"):
        held = f", model weights {training['weight_bytes'] / 2**20:.0f} MiB" if training.get("weight_bytes") else ""
        rows.append(("peak memory", f"{training['peak_rss_bytes'] / 2**30:.2f} GiB RSS (the process){held}"))
    if training.get("distance_from_pretrained") is not None:
        rows.append(("‖θ − θ₀‖", f"{training['distance_from_pretrained']:.3g} (distance from the pretrained weights)"))
    return rows


def _no_merge_row(method: dict[str, Any]) -> list[tuple[str, str]]:
    """Why a run whose method cannot merge has no merged model (full/freeze saved one already)."""
    from tunelab.model.methods import METHODS

    spec = METHODS.get(method.get("type", "lora"))
    if spec is None or spec.can_merge or spec.saves == "model":
        return []
    return [("merge", f"none — {spec.no_merge}; `tunelab export <run>` exports the PEFT adapter")]


def intervals(comparison: dict[str, Any] | None, forgetting: dict[str, Any] | None) -> dict[str, tuple[str, str]]:
    """{metric: (95% CI in points, verdict)} for the held-out metrics, and the forgetting task's accuracy."""
    found = {
        name: (format_interval(m["ci95"], name), m["verdict"])
        for name, m in (comparison or {}).get("metrics", {}).items()
    }
    if forgetting:
        low, high = forgetting["ci95"]
        found[f"{forgetting['task']}_accuracy"] = (
            format_interval([low, high]),
            direction(low, high, forgetting["count"]),
        )
    return found


def metric_rows(metrics: dict[str, dict[str, Any]], comparison=None, forgetting=None) -> list[tuple[str, ...]]:
    """metric, base, tuned, change, 95% CI (pts; a reward's in its own units), verdict (the last two "—" and ""
    where nothing was resampled)."""
    base, tuned = metrics.get("base", {}), metrics.get("tuned", {})
    found = intervals(comparison, forgetting)
    return [(n, format_value(n, base.get(n)), format_value(n, tuned.get(n)),
             format_change(n, base.get(n), tuned.get(n)), *found.get(n, ("—", "")))
            for n in sorted(set(base) | set(tuned))]  # fmt: skip


def comparison_note(comparison: dict[str, Any]) -> str:
    unpaired = comparison.get("unpaired", {})
    extra = sum(unpaired.values())
    note = f" ({extra} records answered by only one model are left out)" if extra else ""
    return (f"Tuned vs base on the same {comparison['count']} test records{note}. 95% intervals from a paired "
            f"bootstrap ({comparison.get('samples', SAMPLES):,} resamples of records): better or worse only when the "
            f"whole interval is on one side of 0 and there are at least {MIN_ITEMS} records, otherwise "
            "inconclusive. A probe_accuracy row is the forgetting check's (its own interval and verdict); a reward "
            "row is the recipe's rewards on each held-out answer (Σ weight · value), in the rewards' own units, "
            "not points.")  # fmt: skip


def category_comparison_rows(comparison: dict[str, Any] | None) -> list[tuple[str, ...]]:
    """category, records, metric, base, tuned, change, 95% CI (pts), verdict: one row per category and metric."""
    rows = []
    for name, group in (comparison or {}).get("by_category", {}).items():
        for metric, m in group["metrics"].items():
            base, tuned = format_value(metric, m["base"]), format_value(metric, m["tuned"])
            rows.append((name, str(m["count"]), metric, base, tuned, format_change(metric, m["base"], m["tuned"]),
                         format_interval(m["ci95"], metric), m["verdict"]))  # fmt: skip
    return rows


def forgetting_rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    def row(name: str, part: dict[str, Any]) -> tuple[str, ...]:
        low, high = part["ci95"]
        interval = f"{100 * low:+.1f} to {100 * high:+.1f}"
        return (name, str(part["count"]), percent(part["base"]), percent(part["tuned"]),
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
        rows.append((names, str(s["judge"]), *counts, percent(s["win_rate"]), interval))
    return rows


def category_rows(by_category: dict[str, dict[str, dict[str, Any]]]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    base, tuned = by_category.get("base", {}), by_category.get("tuned", {})
    names = sorted(set(base) | set(tuned))
    metrics = sorted({m for group in (*base.values(), *tuned.values()) for m in group if m != "count"})
    head = ("category", *(f"{m} base → tuned" for m in metrics))
    rows = []
    for name in names:
        cells = [f"{format_value(m, base.get(name, {}).get(m))} → {format_value(m, tuned.get(name, {}).get(m))}"
                 for m in metrics]  # fmt: skip
        rows.append((name, *cells))
    return head, rows


def audit_rows(audit: dict[str, Any]) -> list[tuple[str, str]]:
    return [(key.replace("_", " "), "not checked" if value is None else str(value)) for key, value in audit.items()]


SAMPLE_HEAD = ("prompt", "sampled answer", "reward", "each reward")


def sample_rows(samples: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """An RL run's latest saved batch of sampled answers (samples.jsonl), one row each, shortened to read."""
    rows = []
    for sample in samples:
        each = ", ".join(f"{name} {_number(value)}" for name, value in (sample.get("rewards") or {}).items())
        total = sample.get("reward")
        rows.append((_short(sample.get("prompt", ""), 80), _short(sample.get("completion", ""), 200),
                     "" if total is None else f"{total:.3f}", each))  # fmt: skip
    return rows


def _short(text: Any, limit: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value: Any) -> str:
    return "—" if value is None else f"{float(value):.3f}"
