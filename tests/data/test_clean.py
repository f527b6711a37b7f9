"""`--write-clean`: cleaned copies of the audited files, every removal listed, inputs never written."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from helpers import quickstart_records, write_jsonl
from tunelab.audit import audit_paths
from tunelab.data.clean import check_clean_dir, clean_lines, write_clean
from tunelab.errors import DataError


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture
def inputs(tmp_path):
    train, test = quickstart_records("train", 60), quickstart_records("test", 5)
    a = write_jsonl(tmp_path / "a.jsonl", train[:40] + [dict(train[0], id="dup")])
    with a.open("a") as handle:
        handle.write('{"messages": [{"role": "user", "content": "no answer"}]}\n')
    b = write_jsonl(tmp_path / "b.jsonl", train[40:] + [dict(train[1], id="cross")])
    t = write_jsonl(tmp_path / "test.jsonl", [dict(train[2], id="leak"), *test, dict(test[0], id="test-dup")])
    return a, b, t


def test_cleaned_files_hold_what_the_audit_accepts(tmp_path, inputs):
    a, b, t = inputs
    before = {p: digest(p) for p in inputs}
    summary = write_clean(audit_paths([a, b], [t]), tmp_path / "clean")
    out = tmp_path / "clean"
    assert sorted(p.name for p in out.iterdir()) == ["a.jsonl", "b.jsonl", "clean_summary.json", "test.jsonl"]
    assert [r["id"] for r in read_jsonl(out / "a.jsonl")] == [r["id"] for r in quickstart_records("train", 40)]
    assert "cross" not in {r["id"] for r in read_jsonl(out / "b.jsonl")}
    assert [r["id"] for r in read_jsonl(out / "test.jsonl")] == [r["id"] for r in quickstart_records("test", 5)]
    first = read_jsonl(out / "a.jsonl")[0]
    assert first["category"] == "zh" and "messages" in first and "source" not in first
    reasons = {
        (r["reason"], r.get("id"), r.get("copy_of", {}).get("id") or r.get("train_id")) for r in summary["removed"]
    }
    assert reasons == {
        ("invalid", None, None),
        ("exact_duplicate", "dup", "train-0001"),
        ("exact_duplicate", "cross", "train-0002"),
        ("leaked", "leak", "train-0003"),
        ("exact_duplicate", "test-dup", "test-0001"),
    }
    assert summary == json.loads((out / "clean_summary.json").read_text())
    assert summary["files"]["a.jsonl"]["removed"] == {"invalid": 1, "exact_duplicate": 1}
    assert {p: digest(p) for p in inputs} == before
    again = audit_paths([out / "a.jsonl", out / "b.jsonl"], [out / "test.jsonl"]).report["summary"]
    assert (again["invalid_records"], again["exact_duplicate_copies"], again["leaked_records"]) == (0, 0, 0)


def test_console_lines_say_what_was_removed(tmp_path, inputs):
    lines = [
        line.strip()
        for line in clean_lines(write_clean(audit_paths(list(inputs[:2]), [inputs[2]]), tmp_path / "clean"))
    ]
    assert "a.jsonl: 40 of 42 records kept; removed 1 invalid, 1 exact duplicate" in lines
    assert "test.jsonl: 5 of 7 records kept; removed 1 leaked from training, 1 exact duplicate" in lines
    assert lines[-1].endswith("clean_summary.json")


def test_refuses_a_non_empty_folder_unless_overwrite(tmp_path, inputs):
    out = tmp_path / "clean"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = audit_paths([inputs[0]])
    with pytest.raises(DataError, match="not empty"):
        write_clean(result, out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    write_clean(result, out, overwrite=True)
    assert (out / "a.jsonl").is_file() and (out / "notes.txt").read_text() == "mine"
    with pytest.raises(DataError, match="is a file"):
        check_clean_dir(out / "notes.txt")


def test_never_writes_over_an_input(tmp_path, inputs):
    before = digest(inputs[0])
    with pytest.raises(DataError, match="would overwrite an input file"):
        write_clean(audit_paths([inputs[0]]), tmp_path, overwrite=True)  # tmp_path holds a.jsonl itself
    assert digest(inputs[0]) == before and not (tmp_path / "clean_summary.json").exists()


def test_names_follow_the_inputs(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    alpaca = tmp_path / "x" / "orders.json"
    alpaca.write_text(json.dumps([{"instruction": "Say hi", "output": "Hi!"}, {"instruction": "Count", "output": "1"}]))
    other = write_jsonl(tmp_path / "y" / "orders.jsonl", quickstart_records("test", 2))
    summary = write_clean(audit_paths([alpaca, other]), tmp_path / "clean")
    assert [info["output"] for info in summary["files"].values()] == ["orders.jsonl", "orders-2.jsonl"]
    rows = read_jsonl(tmp_path / "clean" / "orders.jsonl")
    assert rows[0]["id"] == "orders-0" and rows[0]["messages"][-1] == {"role": "assistant", "content": "Hi!"}
