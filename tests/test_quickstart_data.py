"""Checks on the committed quickstart data: reproducible, well-formed, balanced, and with a clean held-out split."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart"
FILES = ("train.jsonl", "test.jsonl", "schema.json")
JSON_TYPES = {
    "string": str,
    "integer": int,
    "boolean": bool,
    "null": type(None),
    "object": dict,
}


def load_jsonl(name: str) -> list[dict]:
    """Records of one committed split."""
    with (QUICKSTART / name).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads((QUICKSTART / "schema.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def splits() -> dict[str, list[dict]]:
    return {"train": load_jsonl("train.jsonl"), "test": load_jsonl("test.jsonl")}


def type_ok(value: object, expected: str | list[str]) -> bool:
    """JSON Schema 'type' check; bool is not an integer in JSON, so it is excluded explicitly."""
    names = [expected] if isinstance(expected, str) else expected
    for name in names:
        python_type = JSON_TYPES[name]
        if name == "integer" and isinstance(value, bool):
            continue
        if isinstance(value, python_type):
            return True
    return False


def schema_errors(answer: object, schema: dict) -> list[str]:
    """A hand-written validator for the subset of JSON Schema the quickstart schema uses (no jsonschema needed)."""
    if not isinstance(answer, dict):
        return ["answer is not an object"]
    properties = schema["properties"]
    errors = [f"missing {key}" for key in schema["required"] if key not in answer]
    if schema.get("additionalProperties") is False:
        errors += [f"unexpected {key}" for key in answer if key not in properties]
    for key, rule in properties.items():
        if key not in answer:
            continue
        value = answer[key]
        if not type_ok(value, rule["type"]):
            errors.append(f"{key}: wrong type {type(value).__name__}")
            continue
        if "enum" in rule and value not in rule["enum"]:
            errors.append(f"{key}: {value!r} not in enum")
        if ("minimum" in rule and value < rule["minimum"]) or ("maximum" in rule and value > rule["maximum"]):
            errors.append(f"{key}: {value} out of range")
        if "minLength" in rule and len(value) < rule["minLength"]:
            errors.append(f"{key}: too short")
    return errors


def test_regenerating_gives_identical_files(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(QUICKSTART / "generate.py"), "--out-dir", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (QUICKSTART / name).read_bytes(), f"{name} is stale; rerun generate.py"


def test_counts(splits: dict[str, list[dict]]) -> None:
    assert len(splits["train"]) >= 600
    assert len(splits["test"]) >= 100


def test_record_shape(splits: dict[str, list[dict]]) -> None:
    system_prompts = set()
    for name, records in splits.items():
        ids = [r["id"] for r in records]
        assert len(set(ids)) == len(ids), f"duplicate ids in {name}"
        for record in records:
            assert record["id"].startswith(f"{name}-")
            assert record["category"] in ("en", "zh")
            assert [m["role"] for m in record["messages"]] == ["system", "user", "assistant"]
            assert all(isinstance(m["content"], str) and m["content"] for m in record["messages"])
            system_prompts.add(record["messages"][0]["content"])
    assert len(system_prompts) == 1, "the system prompt must be one fixed instruction"


def test_answers_are_compact_json_matching_schema(splits: dict[str, list[dict]], schema: dict) -> None:
    key_order = list(schema["properties"])
    for records in splits.values():
        for record in records:
            content = record["messages"][-1]["content"]
            answer = json.loads(content)
            assert schema_errors(answer, schema) == [], (record["id"], schema_errors(answer, schema))
            assert list(answer) == key_order, record["id"]
            assert content == json.dumps(answer, ensure_ascii=False), record["id"]


def test_copied_fields_appear_verbatim(splits: dict[str, list[dict]]) -> None:
    """customer and city are copied from the text, which is what makes them learnable by a small model."""
    for records in splits.values():
        for record in records:
            text = record["messages"][1]["content"]
            answer = json.loads(record["messages"][-1]["content"])
            assert answer["customer"] in text, record["id"]
            assert answer["city"] in text, record["id"]


@pytest.mark.parametrize("split", ["train", "test"])
def test_both_languages_balanced(splits: dict[str, list[dict]], split: str) -> None:
    records = splits[split]
    share_en = sum(r["category"] == "en" for r in records) / len(records)
    assert 0.4 <= share_en <= 0.6


def test_test_texts_are_held_out(splits: dict[str, list[dict]]) -> None:
    train_texts = {r["messages"][1]["content"] for r in splits["train"]}
    test_texts = [r["messages"][1]["content"] for r in splits["test"]]
    assert not train_texts.intersection(test_texts)
    assert len(set(test_texts)) == len(test_texts)


def test_some_test_customers_are_unseen(splits: dict[str, list[dict]]) -> None:
    """Names reserved for test check that the model copies names rather than recalling them."""
    train_names = {json.loads(r["messages"][-1]["content"])["customer"] for r in splits["train"]}
    test_names = [json.loads(r["messages"][-1]["content"])["customer"] for r in splits["test"]]
    unseen = [n for n in test_names if n not in train_names]
    assert len(unseen) >= len(test_names) // 4
