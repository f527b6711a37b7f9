"""The report's "fine-tuning vs prompting" section: the base model as asked, prompted zero-shot and k-shot, and the
tuned model, with the tuned model's paired-bootstrap change over each, and what each costs per request.

Read from the run directory (metrics.json, report_<label>.json, comparison files); rows only, no rendering here.
"""

from __future__ import annotations

from typing import Any

from tunelab.eval.comparison import format_interval, load_comparison
from tunelab.eval.metrics import format_change, format_value
from tunelab.runs import RunDir, read_json

ORDER = ("base", "zero_shot", "k_shot", "tuned")
CHANGE_HEAD = ("tuned vs", "metric", "baseline", "tuned", "change", "95% CI (pts)", "verdict")
COST_HEAD = ("model", "prompt tokens / request", "answer tokens / request", "tokens / 1k requests",
             "generation s / request (this machine)")  # fmt: skip


def label_name(label: str, k: int | None = None) -> str:
    return {"base": "base", "zero_shot": "zero-shot", "k_shot": f"{k or 'k'}-shot", "tuned": "tuned"}[label]


def read_baselines(run: RunDir, recipe: dict[str, Any], metrics: dict[str, dict]) -> dict[str, Any] | None:
    """What the section shows, or None for a run without prompted baselines (older runs, other stages)."""
    if not any(label in metrics for label in ("zero_shot", "k_shot")):
        return None
    k = recipe.get("eval", {}).get("k_shot")
    labels = [label for label in ORDER if label in metrics]
    reports = {label: read_json(run.eval_dir / f"report_{label}.json") or {} for label in labels}
    comparisons = {label: load_comparison(run.eval_dir, label) for label in labels if label != "tuned"}
    return {"k": k, "labels": labels, "metrics": metrics, "reports": reports,
            "comparisons": {label: c for label, c in comparisons.items() if c}}  # fmt: skip


def score_rows(section: dict[str, Any]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """metric | one column per model (base, zero-shot, k-shot, tuned)."""
    labels, metrics = section["labels"], section["metrics"]
    prompted = [label for label in labels if label in ("zero_shot", "k_shot")]
    names = sorted({name for label in prompted for name in metrics[label]})  # not the forgetting probe's accuracy
    head = ("metric", *(label_name(label, section["k"]) for label in labels))
    return head, [(name, *(format_value(name, metrics[label].get(name)) for label in labels)) for name in names]


def change_rows(section: dict[str, Any]) -> list[tuple[str, ...]]:
    """The tuned model's change over each baseline, per metric, with its interval and verdict."""
    rows = []
    for label, comparison in section["comparisons"].items():
        for name, m in comparison["metrics"].items():
            rows.append((label_name(label, section["k"]), name, format_value(name, m["base"]),
                         format_value(name, m["tuned"]), format_change(name, m["base"], m["tuned"]),
                         format_interval(m["ci95"], name), m["verdict"]))  # fmt: skip
    return rows


def request_cost(report: dict[str, Any]) -> dict[str, float | None]:
    """Mean prompt and answer tokens and generation seconds per request, from one evaluation's report."""
    prompt, answer = report.get("mean_prompt_tokens"), report.get("mean_completion_tokens")
    generated, seconds = report.get("generated"), report.get("generation_seconds")
    return {"prompt": prompt, "answer": answer,
            "seconds": seconds / generated if generated and seconds is not None else None}  # fmt: skip


def cost_rows(section: dict[str, Any]) -> list[tuple[str, ...]]:
    rows = []
    for label in section["labels"]:
        cost = request_cost(section["reports"][label])
        total = (cost["prompt"] or 0) + (cost["answer"] or 0) if cost["prompt"] is not None else None
        rows.append((label_name(label, section["k"]), _number(cost["prompt"], 1), _number(cost["answer"], 1),
                     _number(total and 1000 * total, 0), _number(cost["seconds"], 3)))  # fmt: skip
    return rows


def _number(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def baseline_note(section: dict[str, Any]) -> str:
    k = section["k"] or "k"
    return (
        f"The same test records asked of the untouched base model three ways: as the test set asks them (base), "
        f"with the task's instructions as the system prompt (zero-shot: the training data's system prompt, plus "
        f"the answer format when the recipe names a JSON Schema), and with the {k} training conversations most "
        f"like each question placed before it ({k}-shot; chosen from the training split only). Changes are the "
        f"tuned model's, with 95% paired-bootstrap intervals; the cost table is what each way of asking spends "
        f"per request (generation seconds are this machine's, for a reader's comparison, not a benchmark)."
    )
