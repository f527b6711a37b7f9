"""Continual training, measured: the new model on the previous generation's test set and probe, against the previous
run's model and against the base model that run started from (eval/previous/).

The previous run's own answers to its test set (its predictions_tuned.jsonl and predictions_base.jsonl) are the other
sides of each paired comparison, so nothing is generated twice; the new model answers with the previous run's eval
settings (metrics, schema, token limit), so all three are scored alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.data.generations import PREVIOUS_TEST
from tunelab.eval.comparison import compare_predictions
from tunelab.eval.heldout import read_predictions
from tunelab.eval.metrics import aggregate
from tunelab.jsonl import read_jsonl, write_jsonl
from tunelab.runs import RunDir, write_json

SIDES = {"base": "predictions_base.jsonl", "previous": "predictions_tuned.jsonl"}  # label here → file in that run
PROBE_SETTINGS = ("task", "data", "shots", "scoring")


def against_previous_generation(stage, model, tokenizer, recipe_data, run: RunDir, log) -> dict[str, Any]:
    """Evaluate the trained model on the previous run's test set and compare it there and on the probe; the result
    goes to eval/previous/summary.json."""
    previous = recipe_data.previous
    folder = run.eval_dir / "previous"
    records = previous.kept_test(recipe_data.sets.get(PREVIOUS_TEST, []))
    summary: dict[str, Any] = {"run": str(previous.run), "records": len(records)}
    if records:
        stage.evaluate(model, tokenizer, records, previous.recipe, folder, "tuned")
        summary |= _test_set_comparisons(previous.run / "eval", folder, {str(r.get("id")) for r in records})
    summary["probe"] = _probe_against_first_base(previous, run)
    write_json(folder / "summary.json", summary)
    log(f"[tunelab] {describe(summary)}")
    return summary


def _test_set_comparisons(previous_eval: Path, folder: Path, ids: set[str]) -> dict[str, Any]:
    """The previous run's answers (kept ids only) beside the new model's; each metric per side, and the new model's
    change against each side with its paired-bootstrap interval."""
    rows = {"tuned": read_predictions(folder / "predictions_tuned.jsonl")}
    for label, name in SIDES.items():
        found = [row for row in read_predictions(previous_eval / name) if str(row.get("id")) in ids]
        if found:
            write_jsonl(folder / f"predictions_{label}.jsonl", found)
            rows[label] = found
    return {
        "metrics": {label: aggregate([row["scores"] for row in found]) for label, found in rows.items()},
        "vs": {label: compare_predictions(rows[label], rows["tuned"]) for label in SIDES if label in rows},
    }


def _probe_against_first_base(previous, run: RunDir) -> dict[str, Any] | None:
    """The forgetting probe: this run's tuned answers against the model the previous run started from (the probe's
    own report, eval/forgetting.json, compares with this run's start: the previous run's model)."""
    from tunelab.eval.forgetting import forgetting_report

    first = previous.run / "eval" / "forgetting" / "base" / "items.jsonl"
    tuned = run.eval_dir / "forgetting" / "tuned" / "items.jsonl"
    if not (first.is_file() and tuned.is_file()):
        return None
    mine = run.read_recipe().get("eval", {}).get("forgetting", {})
    theirs = previous.recipe.eval.forgetting.model_dump()
    differing = [key for key in PROBE_SETTINGS if mine.get(key) != theirs.get(key)]
    if differing:
        return {
            "comparable": False,
            "reason": f"eval.forgetting differs from the previous run's: {', '.join(differing)}",
        }
    try:
        report = forgetting_report(read_jsonl(first), read_jsonl(tuned), mine.get("task"), mine.get("threshold", 2.0))
    except ValueError as error:  # no item scored by both
        return {"comparable": False, "reason": str(error)}
    return {"comparable": True} | report


def describe(summary: dict[str, Any]) -> str:
    from tunelab.eval.comparison import format_interval
    from tunelab.eval.metrics import format_change

    if not summary.get("vs"):
        return f"continual: no test records of {summary['run']} to evaluate on"
    parts = []
    for label, comparison in summary["vs"].items():
        for name, m in comparison["metrics"].items():
            parts.append(f"{name} {format_change(name, m['base'], m['tuned'])} vs {label} "
                         f"(95% CI {format_interval(m['ci95'], name)}) {m['verdict']}")  # fmt: skip
    return f"previous run's test set ({summary['records']} records of {Path(summary['run']).name}): " + "; ".join(parts)


def compare_continued(with_replay: Path, without_replay: Path) -> dict[str, Any]:
    """Two runs that continued the same run (say with and without `data.replay`), on that run's test set: each one's
    drop against the previous model, and the paired difference between them (with_replay − without_replay)."""
    from tunelab.errors import RunError
    from tunelab.runs import read_json

    summaries = {}
    for path in (with_replay, without_replay):
        summary = read_json(Path(path) / "eval" / "previous" / "summary.json")
        if not isinstance(summary, dict) or not summary.get("vs"):
            raise RunError(f"{path}: no eval/previous/summary.json; it is not a finished run with continue_from")
        summaries[str(path)] = summary
    if len({s["run"] for s in summaries.values()}) != 1:
        raise RunError("the two runs continued different runs; compare runs that continued the same one")
    rows = [read_predictions(Path(p) / "eval" / "previous" / "predictions_tuned.jsonl") for p in summaries]
    drops = {p: s["vs"]["previous"]["metrics"] for p, s in summaries.items()}
    return {"previous": next(iter(summaries.values()))["run"], "drops": drops,
            "difference": compare_predictions(rows[1], rows[0])}  # fmt: skip
