"""Datasets for the preference stages: the held-out split as for SFT (near-duplicate clusters on one side), the
records handed to TRL in its conversational preference shape, which its trainers tokenise with the chat template."""

from __future__ import annotations

from typing import Any

from tunelab.config.schema import Recipe
from tunelab.data.pipeline import RecipeData, Splits, split_validation
from tunelab.errors import DataError

PAIR_COLUMNS = ("prompt", "chosen", "rejected")
UNPAIRED_COLUMNS = ("prompt", "completion", "label")
WHAT = {PAIR_COLUMNS: "preference pairs (prompt, chosen, rejected)",
        UNPAIRED_COLUMNS: "unpaired preferences (prompt, completion, label)"}  # fmt: skip


def check_columns(records: list[dict], columns: tuple[str, ...], stage: str, role: str) -> None:
    """Every record has the columns the stage reads; else a clear error naming the record and what to do."""
    for position, record in enumerate(records):
        missing = [name for name in columns if name not in record]
        if missing:
            where = f"{role} record {record.get('id', position)} ({record.get('source', 'data')})"
            raise DataError(where, f"stage {stage} reads {WHAT[columns]}, but this record has no {', '.join(missing)}",
                            fix=_fix(columns, record))  # fmt: skip


def _fix(columns: tuple[str, ...], record: dict) -> str:
    if "messages" in record:
        return "these are conversations (an sft dataset): train stage: sft on them, or give preference data"
    return f"give records with {', '.join(columns)} (see `tunelab data convert --to preference`)"


def build_preference_splits(recipe_data: RecipeData, recipe: Recipe, tokenizer, clusters, columns=PAIR_COLUMNS,
                            transform=None) -> Splits:  # fmt: skip
    """Splits of preference records (TRL's trainers tokenise them; `tokenizer` is the hook's, unused here).
    `transform` turns the split training and validation records into what the stage trains on (KTO unpairs them)."""
    from datasets import Dataset

    transform = transform or (lambda records: records)
    train, validation = recipe_data.train, recipe_data.sets.get("validation", [])
    test = recipe_data.sets.get("test", [])[: recipe.eval.limit or None]
    for role, records in (("training", train), ("validation", validation), ("test", test)):
        check_columns(transform(records), columns, recipe.stage, role)  # before splitting: the kind is what's wrong
    if isinstance(recipe.data.validation, float):
        train, validation = split_validation(train, recipe.data, clusters, recipe.seed)
    train, validation = transform(train), transform(validation)
    ids = {"train": _ids(train), "validation": _ids(validation), "test": _ids(test)}
    summary: dict[str, Any] = {"train": {"kept": len(train), "truncated": 0, "dropped_no_target": 0}, "ids": ids,
                               "validation": {"kept": len(validation)}, "test": {"total": len(test)}}  # fmt: skip
    if recipe.data.leakage == "drop":
        summary["dropped_leaked"] = recipe_data.dropped_leaked

    def dataset(records: list[dict]):
        return Dataset.from_list([{name: record[name] for name in columns} for record in records])

    return Splits(train=dataset(train), validation=dataset(validation) if validation else None, test_records=test,
                  summary=summary)  # fmt: skip


def _ids(records: list[dict]) -> list[str]:
    return [str(record.get("id", position)) for position, record in enumerate(records)]
