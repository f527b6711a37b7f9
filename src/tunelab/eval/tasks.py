"""Benchmark tasks: which files of a benchmark folder are scored, where the few-shot examples come from, and the
subjects' names and categories.

The folders are read in the layouts their upstream repositories ship (see `benchmarks.py` for the file formats):
MMLU `data/{dev,val,test}/<subject>_<split>.csv`, CMMLU `data/{dev,test}/<subject>.csv`, C-Eval
`data/{dev,val}/<subject>_<split>.csv`, ARC `ARC-Easy-{Train,Dev,Test}.jsonl`. A `mapping.json` beside the data
(LLaMA-Factory's `{subject: {name, category}}`) gives display names and categories. The built-in probe needs no files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from tunelab.data.benchmarks import BenchmarkItem, read_benchmark, subject_of
from tunelab.errors import DataError

PROBE_DIR = Path(__file__).with_name("probe")


@dataclass(frozen=True)
class TaskSpec:
    name: str
    language: str  # prompt template: "en" or "zh"
    eval_splits: tuple[str, ...]  # the first split present is scored
    fewshot_split: str | None  # None: shots are other items of the same subject
    subject_prefix: str = ""  # ARC: keep only "ARC-Easy" or "ARC-Challenge" files
    layout: str = ""  # for the error message when the folder does not hold the task
    scoring: str = "letters"  # the harness's default for the task: letters (MMLU family) or text (ARC, cloze)


TASKS = {
    "probe": TaskSpec("probe", "auto", ("",), None, layout="built in", scoring="text"),
    "mmlu": TaskSpec("mmlu", "en", ("test",), "dev", layout="data/{dev,test}/<subject>_<split>.csv (hendrycks/test)"),
    "cmmlu": TaskSpec("cmmlu", "zh", ("test",), "dev", layout="data/{dev,test}/<subject>.csv (haonan-li/CMMLU)"),
    "ceval": TaskSpec("ceval", "zh", ("val",), "dev", layout="data/{dev,val}/<subject>_<split>.csv (C-Eval)"),
    "arc_easy": TaskSpec("arc_easy", "en", ("test", "dev"), "train", "ARC-Easy", "ARC-Easy-{Train,Dev}.jsonl", "text"),
    "arc_challenge": TaskSpec(
        "arc_challenge", "en", ("test", "dev"), "train", "ARC-Challenge", "ARC-Challenge-{Train,Dev}.jsonl", "text"
    ),
}


@dataclass
class LoadedTask:
    name: str
    language: str
    items: list[BenchmarkItem]
    fewshot: dict[str, list[BenchmarkItem]]  # subject → pool; empty when shots come from the items themselves
    scoring: str = "letters"
    names: dict[str, str] = field(default_factory=dict)  # subject → display name
    categories: dict[str, str] = field(default_factory=dict)  # subject → category

    def display_name(self, subject: str) -> str:
        return self.names.get(subject) or subject.replace("_", " ")

    def category(self, subject: str) -> str:
        return self.categories.get(subject, subject if self.name == "probe" else "(none)")


def check_task(task: str, data: str | None) -> str | None:
    """A problem with a task name and data folder, found without reading the benchmark; None when fine."""
    if task in TASKS:
        if task != "probe" and data is None:
            return f"task {task} needs its benchmark folder ({TASKS[task].layout}): set data (or --data)"
        if data is not None and not Path(data).exists():
            return f"benchmark folder not found: {data}"
        return None
    if not Path(task).exists():
        return f"unknown task {task!r}: choose {', '.join(TASKS)}, or give a benchmark file or folder"
    return None


def load_task(task: str, data: str | None = None, split: str | None = None, limit: int | None = None) -> LoadedTask:
    """Items to score (at most `limit` per subject, in file order) and the few-shot pools, for a task or a path."""
    problem = check_task(task, data)
    if problem:
        raise DataError(task, problem, fix=f"e.g. --task mmlu --data path/to/mmlu, or --task {' | '.join(TASKS)}")
    if task not in TASKS:
        return _with_limit(LoadedTask(Path(task).name, "auto", read_benchmark(task), {}, "letters"), limit)
    spec = TASKS[task]
    folder = PROBE_DIR if task == "probe" else Path(data)
    if task == "probe":
        return _with_limit(LoadedTask("probe", "auto", read_benchmark(folder), {}, "text"), limit)
    splits = (split,) if split else spec.eval_splits
    chosen = next((s for s in splits if _split_files(folder, s, spec)), None)
    if chosen is None:
        raise DataError(
            str(folder), f"no {' or '.join(splits)} files of {task} found", fix=f"expected the layout {spec.layout}"
        )
    items = _read_files(_split_files(folder, chosen, spec), folder)
    pool: dict[str, list[BenchmarkItem]] = {}
    for item in _read_files(_split_files(folder, spec.fewshot_split, spec), folder):
        pool.setdefault(item.subject, []).append(item)
    names, categories = _mapping(folder)
    loaded = LoadedTask(task, spec.language, items, pool, spec.scoring, names, categories)
    if spec.subject_prefix:
        loaded.categories = {item.subject: spec.subject_prefix for item in items} | loaded.categories
    return _with_limit(loaded, limit)


def _split_files(folder: Path, split: str | None, spec: TaskSpec) -> list[Path]:
    if split is None:
        return []
    files = []
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in (".csv", ".jsonl", ".json") or path.name == "mapping.json":
            continue
        stem = path.stem.lower()
        in_split = path.parent.name.lower() == split or stem.endswith((f"_{split}", f"-{split}"))
        if in_split and path.stem.startswith(spec.subject_prefix):
            files.append(path)
    return files


def _read_files(files: list[Path], folder: Path) -> list[BenchmarkItem]:
    items: list[BenchmarkItem] = []
    for path in files:
        for item in read_benchmark(path):
            item.subject = subject_of(path)
            items.append(item)
    return items


def _mapping(folder: Path) -> tuple[dict[str, str], dict[str, str]]:
    """Display names and categories from a `mapping.json` in the folder or its parent (LLaMA-Factory's layout)."""
    for candidate in (folder / "mapping.json", folder.parent / "mapping.json"):
        if candidate.is_file():
            try:
                mapping = json.loads(candidate.read_text(encoding="utf-8"))
            except ValueError as error:
                raise DataError(str(candidate), f"not valid JSON ({error})") from None
            rows = {k: v for k, v in mapping.items() if isinstance(v, dict)}
            names = {k: str(v.get("name", k)) for k, v in rows.items()}
            return names, {k: str(v["category"]) for k, v in rows.items() if "category" in v}
    return {}, {}


def _with_limit(task: LoadedTask, limit: int | None) -> LoadedTask:
    if not task.items:
        raise DataError(task.name, "the benchmark has no items", fix="check the folder and the split")
    if limit:
        seen: dict[str, int] = {}
        kept = []
        for item in task.items:
            seen[item.subject] = seen.get(item.subject, 0) + 1
            if seen[item.subject] <= limit:
                kept.append(item)
        task.items = kept
    return task
