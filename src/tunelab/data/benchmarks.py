"""Read public benchmark files (MMLU, CMMLU, C-Eval, ARC, GSM8K, TruthfulQA, generic) into one item shape.

People keep benchmarks in the layouts their upstream repositories ship, so tunelab reads those files as they are
instead of asking for a conversion. Every reader returns `BenchmarkItem`s; the multiple-choice benchmark command and
the contamination check both work on that one shape. The layout is detected from the content, not the file name,
because copies are often renamed.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.errors import DataError
from tunelab.jsonl import parse_lines

SUFFIXES = (".csv", ".jsonl", ".json")
LETTERS = "ABCDEFGHIJ"
SPLIT_SUFFIX = re.compile(r"[_-](dev|val|valid|validation|test|train)$", re.IGNORECASE)
SPLIT_NAMES = {"dev", "val", "valid", "validation", "test", "train"}
EXPECTED_LAYOUTS = (
    "expected one of: MMLU CSV without header (question,A,B,C,D,answer); "
    "CMMLU CSV with header ',Question,A,B,C,D,Answer'; C-Eval CSV with header 'id,question,A,B,C,D,answer'; "
    'ARC JSONL {"id","question":{"stem","choices":[{"text","label"}]},"answerKey"}; '
    'GSM8K JSONL {"question","answer": "... #### 42"}; JSONL/JSON {"question","choices":[...],"answer"}; '
    'TruthfulQA JSON [{"question","mc1_targets":{choice: 0|1}}]'
)


@dataclass
class BenchmarkItem:
    """One benchmark question. `choices` is empty for open-answer items (GSM8K), whose `answer` is the final value."""

    id: str
    subject: str
    question: str
    choices: list[str]
    labels: list[str]
    answer: str
    source: str


def read_benchmark(path: str | Path) -> list[BenchmarkItem]:
    """Read one benchmark file, or every .csv/.jsonl/.json file under a folder (recursively), in path order.

    In a folder, JSON files that are not benchmarks (such as `mapping.json`) are skipped, but a CSV in the wrong
    layout is an error: it is almost surely meant as benchmark data and silently dropping it would shrink the test.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(str(path), "benchmark file or folder not found", fix="check the path")
    if path.is_file():
        items = _read_file(path, path.name)
        if items is None:
            raise DataError(path.name, "not a recognised benchmark layout", fix=EXPECTED_LAYOUTS)
        return items
    items: list[BenchmarkItem] = []
    found = False
    for file in _benchmark_files(path):
        file_items = _read_file(file, file.relative_to(path).as_posix())
        found = found or file_items is not None
        items.extend(file_items or [])
    if not found:
        raise DataError(str(path), "no benchmark file found in this folder (.csv, .jsonl, .json)", fix=EXPECTED_LAYOUTS)
    return items


def _benchmark_files(folder: Path) -> list[Path]:
    files = (p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())
    return sorted(p for p in files if not any(part.startswith(".") for part in p.relative_to(folder).parts))


def subject_of(path: Path) -> str:
    """The subject from a file name: `anatomy_test.csv` → `anatomy`; a bare split name (`test.jsonl`) → its folder."""
    stem = path.stem
    if stem.lower() in SPLIT_NAMES:
        return path.parent.name or stem
    return SPLIT_SUFFIX.sub("", stem)


def _read_file(path: Path, name: str) -> list[BenchmarkItem] | None:
    """Items of one file, or None when its layout is not a benchmark (a CSV in a wrong layout raises instead)."""
    suffix = path.suffix.lower()
    key = f"{path.parent.name}/{path.stem}"  # `dev/agronomy`: CMMLU uses one file name for its dev and test splits
    if suffix == ".csv":
        return _read_csv(path, name, key)
    if suffix == ".jsonl":
        return _read_jsonl(path, name, key)
    if suffix == ".json":
        return _read_json(path, name, key)
    raise DataError(name, f"unsupported benchmark file type {path.suffix!r}", fix=EXPECTED_LAYOUTS)


def _text(path: Path, name: str) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(name, f"not UTF-8 text ({exc.reason})", fix="save the file as UTF-8") from exc
    except OSError as exc:
        raise DataError(name, f"cannot read the file: {exc.strerror or exc}") from exc


# --- CSV: MMLU (no header), CMMLU and C-Eval (header) -------------------------------------------------------------


def _read_csv(path: Path, name: str, key: str) -> list[BenchmarkItem]:
    # csv on a StringIO, not str.splitlines: MMLU cells contain U+0085, which splitlines treats as a line end.
    rows = [row for row in csv.reader(io.StringIO(_text(path, name), newline="")) if row]
    if not rows:
        raise DataError(name, "the CSV file is empty", fix=EXPECTED_LAYOUTS)
    header = [cell.strip() for cell in rows[0]]
    columns = _header_columns(header)
    if columns is not None:
        source = "ceval" if header[0].lower() == "id" else "cmmlu" if header[0] in ("", "Unnamed: 0") else "csv"
        return [_csv_item(row, columns, name, key, i, source) for i, row in enumerate(rows[1:], start=2)]
    if len(header) == 6 and header[5] in ("A", "B", "C", "D"):
        mmlu = {"question": 0, "choices": [1, 2, 3, 4], "labels": ["A", "B", "C", "D"], "answer": 5}
        return [_csv_item(row, mmlu, name, key, i, "mmlu") for i, row in enumerate(rows, start=1)]
    raise DataError(
        name,
        f"not a recognised benchmark CSV layout (first row has {len(header)} columns: {_preview(header)})",
        fix=EXPECTED_LAYOUTS,
    )


def _header_columns(header: list[str]) -> dict[str, Any] | None:
    """Column positions of question, A-D.. and answer when the first row is a header with those names."""
    lower = [cell.lower() for cell in header]
    if "question" not in lower or "answer" not in lower:
        return None
    labels = [letter for letter in LETTERS if letter in header]
    if len(labels) < 2:
        return None
    choices = [header.index(letter) for letter in labels]
    return {"question": lower.index("question"), "choices": choices, "labels": labels, "answer": lower.index("answer")}


def _csv_item(row: list[str], columns: dict[str, Any], name: str, key: str, number: int, source: str) -> BenchmarkItem:
    """One CSV row; `number` counts CSV rows from 1 including a header (a quoted cell may span several lines)."""
    where = f"{name} row {number}"
    needed = max(columns["question"], columns["answer"], *columns["choices"]) + 1
    if len(row) < needed:
        raise DataError(where, f"expected at least {needed} columns, found {len(row)}", fix=EXPECTED_LAYOUTS)
    labels = columns["labels"]
    answer = row[columns["answer"]].strip().upper()
    if answer not in labels:
        raise DataError(where, f"answer must be one of {', '.join(labels)}, got {answer!r}", fix=_answer_fix(source))
    return BenchmarkItem(
        id=f"{key}:{number}",
        subject=subject_of(Path(name)),
        question=row[columns["question"]].strip(),
        choices=[row[c].strip() for c in columns["choices"]],
        labels=labels,
        answer=answer,
        source=source,
    )


def _answer_fix(source: str) -> str:
    if source == "ceval":
        return "C-Eval's test split withholds its answers; use the dev or val split"
    return "the answer column must hold the letter of the correct choice"


def _preview(cells: list[str]) -> str:
    return ", ".join(repr(c[:20] + ("…" if len(c) > 20 else "")) for c in cells[:7])


# --- JSON Lines and JSON: ARC, GSM8K, TruthfulQA, generic ------------------------------------------------------------


def _read_jsonl(path: Path, name: str, key: str) -> list[BenchmarkItem] | None:
    rows = list(_jsonl_rows(path, name))
    if not rows:
        return None
    convert = _row_converter(rows[0][1])
    if convert is None:
        return None
    return [convert(row, f"{name} line {line}", f"{key}:{line}", subject_of(path)) for line, row in rows]


def _jsonl_rows(path: Path, name: str) -> Iterator[tuple[int, Any]]:
    def bad_line(line: int, error: ValueError) -> None:
        if not isinstance(error, json.JSONDecodeError):
            raise error
        where = f"{name} line {line}"
        raise DataError(where, f"not valid JSON: {error.msg}", fix="write one JSON object per line") from error

    return parse_lines(enumerate(_text(path, name).split("\n"), start=1), bad_line)


def _read_json(path: Path, name: str, key: str) -> list[BenchmarkItem] | None:
    try:
        data = json.loads(_text(path, name))
    except json.JSONDecodeError as exc:
        raise DataError(f"{name} line {exc.lineno}", f"not valid JSON: {exc.msg}") from exc
    if not isinstance(data, list) or not data:
        return None
    convert = _row_converter(data[0])
    if convert is None:
        return None
    return [convert(row, f"{name} record {i}", f"{key}:{i}", subject_of(path)) for i, row in enumerate(data)]


Converter = Callable[[Any, str, str, str], BenchmarkItem]


def _row_converter(row: Any) -> Converter | None:
    """Pick the converter for a file from its first row; None when the row is not a known benchmark shape."""
    if not isinstance(row, dict):
        return None
    question = row.get("question")
    if isinstance(question, dict) and "stem" in question and "answerKey" in row:
        return _arc_item
    if isinstance(question, str) and isinstance(row.get("mc1_targets"), dict):
        return _truthfulqa_item
    if isinstance(question, str) and "choices" in row and "answer" in row:
        return _generic_item
    if isinstance(question, str) and isinstance(row.get("answer"), str) and "####" in row["answer"]:
        return _gsm8k_item
    return None


def _field(row: Any, key: str, where: str, kind: type) -> Any:
    value = row.get(key) if isinstance(row, dict) else None
    if not isinstance(value, kind):
        raise DataError(where, f"field {key!r} is missing or not a {kind.__name__}", fix=EXPECTED_LAYOUTS)
    return value


def _arc_item(row: Any, where: str, default_id: str, subject: str) -> BenchmarkItem:
    question = _field(row, "question", where, dict)
    choices = _field(question, "choices", where, list)
    labels = [str(c.get("label", "")) if isinstance(c, dict) else "" for c in choices]
    answer = str(row.get("answerKey", "")).strip()
    if answer not in labels:
        raise DataError(where, f"answerKey {answer!r} is not one of the choice labels {labels}")
    return BenchmarkItem(
        id=str(row.get("id") or default_id),
        subject=subject,
        question=str(question.get("stem", "")).strip(),
        choices=[str(c.get("text", "")).strip() for c in choices],
        labels=labels,
        answer=answer,
        source="arc",
    )


def _gsm8k_item(row: Any, where: str, default_id: str, subject: str) -> BenchmarkItem:
    solution = _field(row, "answer", where, str)
    if "####" not in solution:
        raise DataError(where, "the answer has no final value after '####'", fix=EXPECTED_LAYOUTS)
    final = solution.rsplit("####", 1)[1].strip().replace(",", "")
    question = _field(row, "question", where, str).strip()
    return BenchmarkItem(str(row.get("id") or default_id), subject, question, [], [], final, "gsm8k")


def _truthfulqa_item(row: Any, where: str, default_id: str, subject: str) -> BenchmarkItem:
    targets = _field(row, "mc1_targets", where, dict)
    choices = [str(text) for text in targets]
    labels = list(LETTERS[: len(choices)]) if len(choices) <= len(LETTERS) else [str(i) for i in range(len(choices))]
    correct = [label for label, score in zip(labels, targets.values(), strict=True) if score == 1]
    if len(correct) != 1:
        raise DataError(where, f"mc1_targets must mark exactly one choice with 1, found {len(correct)}")
    question = _field(row, "question", where, str).strip()
    return BenchmarkItem(str(row.get("id") or default_id), subject, question, choices, labels, correct[0], "truthfulqa")


def _generic_item(row: Any, where: str, default_id: str, subject: str) -> BenchmarkItem:
    """{"question", "choices": [...], "answer"}; answer is a label, a 0-based index or the text of a choice."""
    choices = [str(c) for c in _field(row, "choices", where, list)]
    labels = [str(x) for x in row.get("labels") or LETTERS[: len(choices)]]
    if len(labels) != len(choices):
        raise DataError(where, f"{len(choices)} choices but {len(labels)} labels")
    answer = row.get("answer")
    if isinstance(answer, int) and not isinstance(answer, bool) and 0 <= answer < len(choices):
        answer = labels[answer]
    elif isinstance(answer, str) and answer.strip() not in labels and answer.strip() in choices:
        answer = labels[choices.index(answer.strip())]
    if not isinstance(answer, str) or answer.strip() not in labels:
        raise DataError(where, f"answer {answer!r} is not a label, index or text of a choice", fix=EXPECTED_LAYOUTS)
    return BenchmarkItem(
        id=str(row.get("id") or default_id),
        subject=str(row.get("subject") or subject),
        question=_field(row, "question", where, str).strip(),
        choices=choices,
        labels=labels,
        answer=answer.strip(),
        source=str(row.get("source") or "jsonl"),
    )
