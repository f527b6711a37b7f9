"""Recipe data section → audited sets → leakage-free train / validation split → tokenized splits with a summary.

Loading, the audit checks, leakage and the validation split work for every kind of record (`kinds.py`); `build_splits`
tokenizes conversations (SFT). The preference stages build their datasets from the same `RecipeData`.
"""

from __future__ import annotations

from collections import Counter
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


@dataclass
class RecipeData:
    """The records a recipe names, before splitting: what the audit looks at."""

    sets: dict[str, list[dict]]  # "train", and "validation" / "test" when they are files
    roles: dict[str, str]
    invalid: list[DataError]
    mix_report: list[dict] | None = None
    dropped_leaked: list[dict] = field(default_factory=list)  # evaluation records left out (`data.leakage: drop`)
    kind: str = "messages"  # what every record is: "messages", "preference" or "unpaired" (`kinds.py`)
    previous: Any = None  # continual training: the previous generation (`generations.py`)
    continual: dict[str, Any] | None = None  # what was replayed from it, for data/summary.json

    @property
    def train(self) -> list[dict]:
        return self.sets["train"]


def with_system_prompt(record: dict, system: str | None) -> dict:
    """The record with `data.system` first (in its prompt, for preference records), unless it has a system prompt."""
    from tunelab.data.kinds import with_system

    return with_system(record, system)


def load_recipe_sets(data: DataSection, seed: int = 42, stage: str = "sft") -> RecipeData:
    """Read every file the recipe names; invalid records are collected (the audit decides), not raised.

    Every record of every set must be of one kind (conversations, preference pairs or unpaired preferences), save
    unpaired training data with held-out pairs (`kinds.sets_kind`). An RL `stage` reads prompts with a reference
    answer, which a conversation and a preference pair both give: its pairs become conversations (the prompt and the
    chosen answer; held out, one per distinct prompt, as the generation metrics score them), so pairs and
    conversations mix (pairs to train on, the SFT test set to score, say).
    """
    from tunelab.config.schema import RL_STAGES
    from tunelab.data.kinds import sets_kind
    from tunelab.data.load import load_registry_datasets, load_source

    invalid: list[DataError] = []
    per_source = [load_source(s.path, s.format, s.columns, s.tags, s.limit, invalid) for s in data.sources]
    mix_report = None
    if data.sources and all(s.ratio is not None for s in data.sources):
        from tunelab.data.mix import mix_sources

        named = [(s.path, rows, s.ratio) for s, rows in zip(data.sources, per_source, strict=True)]
        train, mix_report = mix_sources(named, seed=seed, total=data.mix_total)
    else:
        train = [record for rows in per_source for record in rows]
    if data.registry and data.datasets:
        train += load_registry_datasets(data.registry, data.datasets, invalid=invalid)
    sets = {"train": [with_system_prompt(r, data.system) for r in train]}
    roles = {"train": "train"}
    for name, path in (("validation", data.validation), ("test", data.test)):
        if isinstance(path, str):
            sets[name] = [with_system_prompt(r, data.system) for r in load_source(path, invalid=invalid)]
            roles[name] = "eval"
    if not sets["train"] and not invalid:
        raise DataError("data", "no training records were loaded", "check data.sources and data.datasets")
    if stage in RL_STAGES:
        sets = {name: _pairs_as_conversations(rows, roles[name]) for name, rows in sets.items()}
    return RecipeData(sets, roles, invalid, mix_report, kind=sets_kind(sets, roles))


def _pairs_as_conversations(rows: list[dict], role: str) -> list[dict]:
    from tunelab.data.kinds import as_conversations, conversation

    if role == "train":
        return [conversation(record) if "chosen" in record else record for record in rows]
    return [record for record in rows if "chosen" not in record] + as_conversations([r for r in rows if "chosen" in r])


def check_audit(audit, data: DataSection, total_records: int) -> None:
    """Refuse to train on leaking or invalid data, saying what to fix and how to override."""
    invalid = audit.invalid()
    share = invalid / max(1, total_records + invalid)
    if invalid and share > data.max_invalid_fraction:
        listed = "\n".join(f"  {i['where']}: {i['problem']}" for i in audit.report["invalid"][:5])
        more = f"\n  … and {invalid - 5} more" if invalid > 5 else ""
        raise DataError(
            "data",
            f"{invalid} invalid record{'s' if invalid != 1 else ''} ({share:.1%} of the data):\n{listed}{more}",
            "fix the records listed (all are in the audit report), or skip them with "
            f"data.max_invalid_fraction={min(1.0, round(share + 0.005, 3))}",
        )
    if audit.leaks() and data.leakage == "refuse":
        pairs = audit.report["leakage"]["listed"][:5]
        listed = "\n".join(
            f"  {p['eval']['set']} {p['eval']['id']} ≈ train {p['train']['id']} ({p['kind']})" for p in pairs
        )
        sft = audit.report.get("kind", "messages") == "messages"
        what = "records duplicate training records" if sft else "records share the prompt of a training record"
        raise DataError(
            "data",
            f"{audit.leaks()} evaluation {what} (leakage):\n{listed}",
            "leave them out of evaluation and train with data.leakage=drop, remove them from the test/validation "
            "file yourself (the audit report lists all; `tunelab data audit <recipe> --write-clean DIR` writes "
            "cleaned files), or keep them with data.leakage=allow",
        )


def drop_leaked(recipe_data: RecipeData, audit, data: DataSection, log=print) -> None:
    """`data.leakage: drop`: leave the leaked evaluation records out of the validation and test sets.

    They are listed in `recipe_data.dropped_leaked` (which `build_splits` puts in the data summary) and in the audit
    report. An evaluation set left empty is refused: there would be nothing to evaluate on.
    """
    if audit is None or data.leakage != "drop":
        return
    from tunelab.data.audit import mark_dropped

    leaked = audit.leaked_records()
    left_out = {id(audit.records[item["index"]]) for item in leaked}
    evaluation = [name for name, role in recipe_data.roles.items() if role == "eval"]
    kept = {name: [r for r in recipe_data.sets[name] if id(r) not in left_out] for name in evaluation}
    for name in evaluation:
        if not kept[name] and recipe_data.sets[name]:
            raise DataError(
                f"data.{name}",
                f"all {len(recipe_data.sets[name])} records duplicate training records, so data.leakage=drop "
                "leaves nothing to evaluate on",
                f"use a {name} file with records unlike the training data, or set data.{name}=null",
            )
    recipe_data.sets |= kept
    recipe_data.dropped_leaked = [{k: v for k, v in item.items() if k != "index"} for item in leaked]
    mark_dropped(audit.report, leaked)
    if not leaked:
        log("[tunelab] data.leakage=drop: no evaluation record duplicates a training record; none left out")
        return
    counts = ", ".join(f"{name} {n}" for name, n in Counter(item["set"] for item in leaked).items())
    log(f"[tunelab] data.leakage=drop: left out {len(leaked)} leaked evaluation records ({counts}); "
        "listed in data/summary.json and the audit report")  # fmt: skip


def split_validation(records: list[dict], data: DataSection, clusters: list[list[int]], seed: int):
    """Carve a validation fraction out of training records; near-duplicate clusters stay on one side."""
    from tunelab.data.split import generated_links, split_records

    fraction = data.validation
    clusters = [*clusters, *generated_links(records)]
    assignment = split_records(records, {"train": 1 - fraction, "validation": fraction}, clusters, seed)
    if not assignment["train"] or not assignment["validation"]:
        raise DataError("data.validation", f"a fraction of {fraction} leaves one side empty", "change the fraction")
    return [records[i] for i in assignment["train"]], [records[i] for i in assignment["validation"]]


def train_clusters(clusters: list[list[int]], count: int) -> list[list[int]]:
    """The clusters restricted to the first `count` records (the training set comes first in the audit)."""
    restricted = [[i for i in cluster if i < count] for cluster in clusters]
    return [c for c in restricted if len(c) > 1]


def shared_system_prompt(records: list[dict]) -> str | None:
    """The system prompt every training record carries, if they all carry the same one (chat uses it by default)."""
    firsts = [(r["messages"] if "messages" in r else r["prompt"])[0] for r in records]
    prompts = {first["content"] if first["role"] == "system" else None for first in firsts}
    return prompts.pop() if len(prompts) == 1 else None


def build_splits(recipe_data: RecipeData, data: DataSection, tokenizer, seed: int, clusters, limit=None) -> Splits:
    from datasets import Dataset

    from tunelab.data.tokenize import tokenize_examples

    train_records = recipe_data.train
    validation_records = recipe_data.sets.get("validation", [])
    if isinstance(data.validation, float):
        train_records, validation_records = split_validation(train_records, data, clusters, seed)
    train_rows, train_stats = tokenize_examples(train_records, tokenizer, data.max_length)
    if not train_rows:
        raise DataError("data", "no training example has a trainable token left", "raise data.max_length")
    summary: dict[str, Any] = {"train": train_stats, "system_prompt": shared_system_prompt(train_records)}
    if recipe_data.mix_report is not None:
        summary["mix"] = recipe_data.mix_report
    if recipe_data.continual is not None:
        summary["continual"] = recipe_data.continual
    validation = None
    if validation_records:
        rows, summary["validation"] = tokenize_examples(validation_records, tokenizer, data.max_length)
        validation = Dataset.from_list([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows])
    test_records = recipe_data.sets.get("test", [])[:limit] if limit else recipe_data.sets.get("test", [])
    summary["test"] = {"total": len(test_records)}
    if data.leakage == "drop":
        summary["dropped_leaked"] = recipe_data.dropped_leaked
    summary["ids"] = {
        "train": [r["id"] for r in train_rows],
        "validation": [r["id"] for r in validation_records],
        "test": [r["id"] for r in test_records],
    }
    train = Dataset.from_list([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in train_rows])
    return Splits(train=train, validation=validation, test_records=test_records, summary=summary)
