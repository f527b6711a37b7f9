"""Recipe data section → train / validation / test splits, tokenized, with a summary in the run directory."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from tunelab.config.schema import DataSection
from tunelab.errors import DataError


@dataclass
class Splits:
    train: Any  # datasets.Dataset with input_ids, labels
    validation: Any | None
    test_records: list[dict] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


def load_training_records(data: DataSection) -> list[dict]:
    """All training records of the recipe: files first, then registry datasets, in the order given."""
    from tunelab.data.load import load_registry_datasets, load_source

    records: list[dict] = []
    for source in data.sources:
        records += load_source(source.path, source.format, source.columns, source.tags, source.limit)
    if data.registry and data.datasets:
        records += load_registry_datasets(data.registry, data.datasets)
    if not records:
        raise DataError("data", "no training records were loaded", "check data.sources and data.datasets")
    return [with_system_prompt(record, data.system) for record in records]


def with_system_prompt(record: dict, system: str | None) -> dict:
    if not system or record["messages"][0]["role"] == "system":
        return record
    return record | {"messages": [{"role": "system", "content": system}, *record["messages"]]}


def split_validation(records: list[dict], data: DataSection, seed: int) -> tuple[list[dict], list[dict]]:
    """Hold out a seeded fraction of the training records, or read the validation file."""
    from tunelab.data.load import load_source

    if data.validation is None:
        return records, []
    if isinstance(data.validation, str):
        return records, [with_system_prompt(r, data.system) for r in load_source(data.validation)]
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    count = max(1, round(len(records) * data.validation))
    if count >= len(records):
        raise DataError("data.validation", f"a fraction of {data.validation} leaves no training records")
    held = set(order[:count])
    train = [r for i, r in enumerate(records) if i not in held]
    return train, [r for i, r in enumerate(records) if i in held]


def shared_system_prompt(records: list[dict]) -> str | None:
    """The system prompt every training record carries, if they all carry the same one (chat uses it by default)."""
    prompts = {r["messages"][0]["content"] if r["messages"][0]["role"] == "system" else None for r in records}
    return prompts.pop() if len(prompts) == 1 else None


def load_test_records(data: DataSection, limit: int | None = None) -> list[dict]:
    from tunelab.data.load import load_source

    if not data.test:
        return []
    records = [with_system_prompt(r, data.system) for r in load_source(data.test)]
    return records[:limit] if limit else records


def build_splits(data: DataSection, tokenizer, seed: int, eval_limit: int | None = None) -> Splits:
    from datasets import Dataset

    from tunelab.data.tokenize import tokenize_examples

    train_records, validation_records = split_validation(load_training_records(data), data, seed)
    train_rows, train_stats = tokenize_examples(train_records, tokenizer, data.max_length)
    if not train_rows:
        raise DataError("data", "no training example has a trainable token left", "raise data.max_length")
    summary: dict[str, Any] = {"train": train_stats, "system_prompt": shared_system_prompt(train_records)}
    validation = None
    if validation_records:
        rows, summary["validation"] = tokenize_examples(validation_records, tokenizer, data.max_length)
        validation = Dataset.from_list([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows])
    test_records = load_test_records(data, eval_limit)
    summary["test"] = {"total": len(test_records)}
    summary["ids"] = {
        "train": [r["id"] for r in train_rows],
        "validation": [r["id"] for r in validation_records],
        "test": [r["id"] for r in test_records],
    }
    train = Dataset.from_list([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in train_rows])
    return Splits(train=train, validation=validation, test_records=test_records, summary=summary)
