"""Held-out evaluation: generate an answer for each test record, score it against the reference, save predictions.

The predictions file is written one batch at a time (append + flush), so an interrupted evaluation keeps its work:
a rerun reuses every complete line whose id, prompt, reference and label still match and generates only the rest.
The file belongs to one evaluation: lines for other ids or labels are dropped when it is rewritten.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from tunelab.data.tokenize import prompt_ids_for_generation
from tunelab.errors import DataError, TunelabError
from tunelab.eval.lengths import length_summary, reference_token_lengths, truncation_counts
from tunelab.eval.metrics import aggregate, aggregate_by_category, check_metrics, score_record
from tunelab.jsonl import read_jsonl, skip
from tunelab.model.generate import generate_batch

Scorer = Callable[[str, str], dict[str, Any]]


def _prepare(record: dict[str, Any], position: int) -> dict[str, Any]:
    """The parts of a canonical record that evaluation needs; the final assistant message is the reference."""
    record_id = str(record.get("id", position))
    messages = record.get("messages") or []
    if not messages or messages[-1].get("role") != "assistant":
        raise DataError(
            f"test record {record_id}",
            "the last message must be the assistant's reference answer",
            fix="end each test record with {'role': 'assistant', 'content': <expected answer>}",
        )
    users = [m.get("content", "") for m in messages[:-1] if m.get("role") == "user"]
    return {
        "id": record_id,
        "category": record.get("category"),
        "messages": messages,
        "tools": record.get("tools"),
        "prompt": users[-1] if users else "",
        "reference": messages[-1].get("content", ""),
    }


def _prepare_all(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    prepared = [_prepare(record, position) for position, record in enumerate(records)]
    seen: set[str] = set()
    for item in prepared:
        if item["id"] in seen:
            raise DataError(
                f"test record {item['id']}", "the id appears more than once", fix="give every record a unique id"
            )
        seen.add(item["id"])
    return prepared


def read_predictions(path: Path) -> list[dict[str, Any]]:
    """JSON objects from the lines that were fully written; a cut-off or damaged line is skipped (a cut-off object
    never parses: it lacks its closing brace)."""
    return [row for row in read_jsonl(path, skip, missing_ok=True) if isinstance(row, dict)]


def _reusable(path: Path, prepared: list[dict[str, Any]], label: str) -> dict[str, dict[str, Any]]:
    """Saved predictions that still answer the same question for the same model label, by id."""
    wanted = {item["id"]: item for item in prepared}
    reusable = {}
    for row in read_predictions(path):
        item = wanted.get(str(row.get("id")))
        if item is None or row.get("label") != label or not isinstance(row.get("prediction"), str):
            continue
        if row.get("prompt") == item["prompt"] and row.get("reference") == item["reference"]:
            reusable[item["id"]] = row
    return reusable


def _write_lines_atomic(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with temporary.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(temporary, path)


def _prediction_row(item: dict, result: dict, label: str, score: Scorer, prompt_tokens: int) -> dict[str, Any]:
    return {
        "id": item["id"],
        "category": item["category"],
        "label": label,
        "prompt": item["prompt"],
        "reference": item["reference"],
        "prediction": result["text"],
        "finish_reason": result["finish_reason"],
        "completion_tokens": result["completion_tokens"],
        "prompt_tokens": prompt_tokens,
        "scores": score(result["text"], item["reference"]),
    }


def _prompt_ids(tokenizer, item: dict[str, Any]) -> list[int]:
    try:
        return prompt_ids_for_generation(tokenizer, item["messages"], item["tools"])
    except DataError as error:
        raise DataError(f"test record {item['id']}", error.problem, error.fix) from None


def _generate_missing(model, tokenizer, pending, out_path, label, score: Scorer, max_new_tokens, batch_size) -> dict:
    """Generate for the pending items, appending each finished batch to the predictions file."""
    rows: dict[str, dict[str, Any]] = {}
    prompts = [_prompt_ids(tokenizer, item) for item in pending]  # template problems surface before generation
    with out_path.open("a", encoding="utf-8") as handle:

        def save_batch(indices: list[int], results: list[dict]) -> None:
            for index, result in zip(indices, results, strict=True):
                row = _prediction_row(pending[index], result, label, score, len(prompts[index]))
                rows[row["id"]] = row
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            handle.flush()

        generate_batch(model, tokenizer, prompts, max_new_tokens, batch_size=batch_size, on_batch=save_batch)
    return rows


def evaluate_model(
    model,
    tokenizer,
    records: Sequence[dict[str, Any]],
    out_path: Path,
    metrics: Iterable[str],
    max_new_tokens: int = 256,
    batch_size: int = 16,
    label: str = "tuned",
    schema_validator=None,
    extra_scores: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Generate, score and save predictions for canonical test records; resume from `out_path` if it exists.

    Returns {"metrics": {name: value}, "by_category": {category: {...}}, "count": n} plus how many predictions were
    generated, reused and cut off by `max_new_tokens` ("truncated", "truncated_by_category"), and the references'
    token lengths with this tokenizer ("reference_tokens": {"max", "p95", "mean"}, "references_over_limit",
    "suggested_max_new_tokens"; see `lengths.py`). `extra_scores(rows)` adds scores that need the whole set at once
    (an RL recipe's rewards, train/rl.py): one dict per row, merged into its scores before the file is written.
    """
    if not records:
        raise TunelabError(
            f"test set is empty: there is nothing to evaluate for {out_path}; "
            "add records to the held-out test split (or lower the share of data held out for validation)"
        )
    names = check_metrics(metrics)
    score = functools.partial(score_record, metrics=names, schema_validator=schema_validator)
    out_path = Path(out_path)
    prepared = _prepare_all(records)
    rows = _reusable(out_path, prepared, label)
    for row in rows.values():  # the requested metrics may differ from the saved run's
        row["scores"] = score(row["prediction"], row["reference"])
    reused = len(rows)
    _write_lines_atomic(out_path, (rows[item["id"]] for item in prepared if item["id"] in rows))
    pending = [item for item in prepared if item["id"] not in rows]
    started = time.monotonic()
    if pending:
        rows.update(_generate_missing(model, tokenizer, pending, out_path, label, score, max_new_tokens, batch_size))
    seconds = time.monotonic() - started
    ordered = [rows[item["id"]] for item in prepared]
    if extra_scores is not None:
        for row, extra in zip(ordered, extra_scores(ordered), strict=True):
            row["scores"] |= extra
    _write_lines_atomic(out_path, ordered)  # final file in the test set's order, easier to read and diff
    lengths = reference_token_lengths([item["reference"] for item in prepared], tokenizer)
    summary = _summary(ordered, label, generated=len(pending), reused=reused) | length_summary(lengths, max_new_tokens)
    return summary | {"generation_seconds": round(seconds, 3)} | token_cost(ordered)


def token_cost(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean prompt and completion tokens per request (what each answer cost), from the rows that recorded them."""
    cost = {}
    for name in ("prompt_tokens", "completion_tokens"):
        values = [row[name] for row in rows if isinstance(row.get(name), int)]
        cost[f"mean_{name}"] = round(sum(values) / len(values), 2) if values else None
    return cost


def _summary(rows: list[dict[str, Any]], label: str, generated: int, reused: int) -> dict[str, Any]:
    scores = [row["scores"] for row in rows]
    cut = truncation_counts(rows)
    return {
        "label": label,
        "metrics": aggregate(scores),
        "by_category": aggregate_by_category(scores, [row.get("category") for row in rows]),
        "count": len(rows),
        "generated": generated,
        "reused": reused,
        "truncated": cut["truncated"],
        "truncated_by_category": {name: group["truncated"] for name, group in cut["by_category"].items()},
    }
