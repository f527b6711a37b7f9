"""`tunelab bench`: score a model on a multiple-choice task; accuracy per subject and category with standard errors.

Every item's scores are written to `items.jsonl` (id, subject, gold, predicted, log-likelihoods), so two models scored
on the same items can be compared item by item (the forgetting check does exactly that).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tunelab.data.benchmarks import LETTERS
from tunelab.eval.multiple_choice import accuracy_with_stderr, build_prompts, score_prompts
from tunelab.eval.tasks import LoadedTask
from tunelab.jsonl import write_jsonl
from tunelab.runs import write_json


def run_benchmark(model, tokenizer, task: LoadedTask, shots: int, scoring: str = "letters",
                  out_dir: Path | None = None, progress=None):  # fmt: skip
    """Score every item; returns the report (and writes report.json and items.jsonl to `out_dir` when given)."""
    prompts = build_prompts(task, shots, scoring)
    started = time.perf_counter()
    was_training = model.training
    model.eval()
    try:
        scores = score_prompts(model, tokenizer, prompts, on_progress=progress)
    finally:
        model.train(was_training)
    rows = []
    for prompt, choice_scores in zip(prompts, scores, strict=True):
        per_byte = [s / max(1, len(c.encode())) for s, c in zip(choice_scores, prompt.continuations, strict=True)]
        predicted, predicted_norm = _argmax(choice_scores), _argmax(per_byte)
        item = prompt.item
        rows.append({
            "id": item.id, "subject": item.subject, "category": task.category(item.subject),
            "gold": LETTERS[prompt.gold], "predicted": LETTERS[predicted], "correct": predicted == prompt.gold,
            "correct_norm": predicted_norm == prompt.gold, "loglikelihoods": [round(v, 5) for v in choice_scores],
        })  # fmt: skip
    report = summarize(rows, task, shots, scoring, time.perf_counter() - started)
    if out_dir is not None:
        out_dir = Path(out_dir)
        write_jsonl(out_dir / "items.jsonl", rows)
        write_json(out_dir / "report.json", report)
    return report, rows


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def _accuracy(rows: list[dict[str, Any]]) -> dict[str, Any]:
    result = accuracy_with_stderr([row["correct"] for row in rows])
    result["accuracy_norm"] = sum(row["correct_norm"] for row in rows) / len(rows)
    return result


def summarize(rows: list[dict[str, Any]], task: LoadedTask, shots: int, scoring: str, seconds: float):
    """Micro-averaged accuracy overall and per category, and per subject, each with its standard error."""

    def group(key: str) -> dict[str, dict[str, Any]]:
        groups: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            groups.setdefault(row[key], []).append(row)
        return {name: _accuracy(values) for name, values in sorted(groups.items())}

    return {
        "task": task.name,
        "shots": shots,
        "scoring": scoring,
        "overall": _accuracy(rows),
        "by_category": group("category"),
        "by_subject": group("subject"),
        "seconds": round(seconds, 2),
    }


def format_report(report: dict[str, Any], subjects: bool = True) -> str:
    """A plain-text table: overall, categories, then subjects."""
    head = f"{report['task']} ({report['shots']}-shot, {report['scoring']})"
    lines = [f"{head}: {_cell(report['overall'])} in {report['seconds']:.0f} s"]
    lines += [f"  {name:<40} {_cell(value)}" for name, value in report["by_category"].items()]
    if subjects:
        lines.append("  by subject:")
        lines += [f"    {name:<38} {_cell(value)}" for name, value in report["by_subject"].items()]
    return "\n".join(lines)


def _cell(value: dict[str, Any]) -> str:
    return f"{value['accuracy']:6.1%} ± {value['stderr']:.1%}  norm {value['accuracy_norm']:6.1%}  (n={value['count']})"


def default_out_dir(target, task_name: str) -> Path:
    """A run's own eval/bench/<task>, or bench/<model>-<task> in the working directory."""
    if target.run is not None:
        return target.run.eval_dir / "bench" / task_name
    return Path("bench") / f"{target.label}-{task_name}"


def bench_target(target: str, task: str, data=None, split=None, shots: int = 5, limit=None, out=None, scoring=None):
    """Load a run or model, score it on a task and write the report; returns (report, output folder)."""
    from rich.progress import Progress

    from tunelab.eval.tasks import load_task
    from tunelab.model.targets import load_target, resolve_target

    loaded = load_task(task, data, split=split, limit=limit)  # a bad task or folder fails before the model loads
    resolved = resolve_target(target)
    model, tokenizer, _ = load_target(resolved)
    folder = Path(out) if out else default_out_dir(resolved, loaded.name)
    scoring = scoring or loaded.scoring
    with Progress(transient=True) as bar:
        job = bar.add_task(f"{loaded.name} {shots}-shot", total=len(loaded.items))
        advance = lambda n: bar.advance(job, n)  # noqa: E731
        report, _ = run_benchmark(model, tokenizer, loaded, shots, scoring, folder, progress=advance)
    return report, folder
