"""The report's continual-training section, from eval/previous/summary.json (written by tunelab.continual): the
previous generation's test set answered by the base model, the previous run's model and this run's, with this run's
paired-bootstrap change against each, and the probe against the base model; rows only, no rendering here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.eval.comparison import format_interval
from tunelab.eval.forgetting import VERDICT_LABELS
from tunelab.eval.metrics import format_change, format_value
from tunelab.formatting import percent
from tunelab.runs import RunDir, read_json

HEAD = ("metric", "base", "previous run", "this run", "vs previous", "95% CI (pts)", "verdict", "vs base",
        "95% CI (pts)", "verdict")  # fmt: skip


def read_continual(run: RunDir, data_summary: dict[str, Any] | None) -> dict[str, Any] | None:
    summary = read_json(run.eval_dir / "previous" / "summary.json")
    if not isinstance(summary, dict):
        return None
    return summary | {"data": (data_summary or {}).get("continual")}


def continual_rows(section: dict[str, Any]) -> list[tuple[str, ...]]:
    metrics, vs = section.get("metrics", {}), section.get("vs", {})
    rows = []
    for name in sorted(metrics.get("tuned", {})):
        labels = ("base", "previous", "tuned")
        cells = [name, *(format_value(name, metrics.get(label, {}).get(name)) for label in labels)]
        for label in ("previous", "base"):
            m = vs.get(label, {}).get("metrics", {}).get(name)
            cells += ([format_change(name, m["base"], m["tuned"]), format_interval(m["ci95"], name), m["verdict"]]
                      if m else ["—", "—", ""])  # fmt: skip
        rows.append(tuple(cells))
    return rows


def continual_sentences(section: dict[str, Any]) -> list[str]:
    previous = Path(section["run"]).name
    lines = []
    data = section.get("data")
    if data:
        lines.append(f"This run continues {previous}: it started from that run's model and trained on "
                     f"{data['new']} new records plus {data['replayed']} replayed from {previous}'s training split "
                     f"({percent(data['share'])} of the training set; data.replay {data['replay']}).")  # fmt: skip
    lines.append(
        f"{previous}'s test set ({section['records']} records; the audit checks them against both "
        "generations' training data): the base model's and the previous run's answers are that run's own, "
        "this run's were scored with the previous run's eval settings. 'vs previous' is forgetting of "
        "what the previous generation learnt; 'vs base' is what remains of the gain over the base model."
    )
    probe = section.get("probe")
    if probe and probe.get("comparable"):
        o = probe  # forgetting_report: the overall comparison at the top level
        low, high = o["ci95"]
        lines.append(f"Forgetting probe ({probe.get('task')}) against the base model {previous} started from: "
                     f"{percent(o['base'])} → {percent(o['tuned'])}, {100 * o['difference']:+.1f} points (95% CI "
                     f"{100 * low:+.1f} to {100 * high:+.1f}): {VERDICT_LABELS[o['verdict']]}. Against this run's "
                     "start (the previous run's model) see the forgetting check.")  # fmt: skip
    elif probe:
        lines.append(f"Probe against the first base model: not compared ({probe.get('reason')}).")
    return lines
