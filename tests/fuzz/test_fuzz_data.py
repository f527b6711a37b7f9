"""Data files fuzzed in every supported format and container: records almost right (a field of the wrong type, a
missing key, an unknown role, unicode, empty strings), arbitrary JSON, broken encodings, empty files, binary junk,
and a folder where a file should be.

Properties: the loader returns canonical records or raises a DataError that names the file; with an `invalid`
list, every invalid record is listed with its file and line/record; every record it accepts can be tokenized with
a chat template (or is refused with a DataError naming the record); `tunelab data audit` and `tunelab data convert`
on the same file exit cleanly (0, or 1 with an `error:` line) and never modify it.
"""

from __future__ import annotations

import copy
import csv
import io
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import CASES, JUNK, SCALARS, TEXT, fuzz_settings, no_traceback
from tunelab.cli import main
from tunelab.data.load import load_source
from tunelab.errors import DataError

TEMPLATES = [
    {"instruction": "Send 2 mugs to Anna", "input": "", "output": '{"qty": 2}', "system": "Be brief.",
     "history": [["hi", "hello"]]},
    {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"},
                       {"from": "function_call", "value": '{"name": "f", "arguments": {}}'},
                       {"from": "observation", "value": "42"}, {"from": "gpt", "value": "done"}],
     "system": "s", "tools": '[{"name": "f", "description": "d", "parameters": {}}]'},
    {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]},
                  {"role": "assistant", "content": "hello"}], "id": "r1", "category": "en"},
]  # fmt: skip
ROLES = st.sampled_from(["user", "assistant", "system", "tool", "human", "gpt", "robot", "", "USER", "observation"])


def paths(node, prefix=()):
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        yield node, key
        yield from paths(value, prefix + (key,))


@st.composite
def almost_right(draw):
    """A valid record of some format with one to three things wrong."""
    record = copy.deepcopy(draw(st.sampled_from(TEMPLATES)))
    for _ in range(draw(st.integers(0, 3))):
        places = list(paths(record))
        container, key = draw(st.sampled_from(places))
        action = draw(st.sampled_from(["junk", "delete", "role", "text", "empty", "add"]))
        if action == "junk":
            container[key] = draw(JUNK)
        elif action == "delete" and isinstance(container, dict):
            container.pop(key, None)
        elif action == "role" and isinstance(container, dict):
            container[key] = draw(ROLES)
        elif action == "text":
            container[key] = draw(TEXT)
        elif action == "empty":
            container[key] = draw(st.sampled_from(["", [], {}, None]))
        elif action == "add" and isinstance(container, dict):
            container[draw(TEXT)] = draw(SCALARS)
    return record


RECORDS = st.lists(almost_right() | JUNK, min_size=0, max_size=4)


def encode(records: list, suffix: str) -> bytes:
    if suffix == ".jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    if suffix == ".json":
        return json.dumps(records, ensure_ascii=False).encode("utf-8")
    if suffix == ".csv":
        rows = [r for r in records if isinstance(r, dict)]
        names = sorted({str(k) for r in rows for k in r})
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=names or ["instruction"])
        writer.writeheader()
        writer.writerows([{str(k): v if isinstance(v, str) else json.dumps(v) for k, v in r.items()} for r in rows])
        return out.getvalue().encode("utf-8")
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{str(k): json.dumps(v) for k, v in r.items()} for r in records if isinstance(r, dict)]
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows or [{"instruction": "x"}]), sink)
    return sink.getvalue()


@st.composite
def data_file(draw):
    """(file name, bytes): records in a container, sometimes damaged."""
    suffix = draw(st.sampled_from([".jsonl", ".jsonl", ".json", ".json", ".csv", ".parquet"]))
    records = draw(RECORDS)
    try:
        content = encode(records, suffix)
    except (TypeError, ValueError, OverflowError, UnicodeEncodeError):  # pyarrow/csv refusing a value: write JSONL
        suffix, content = ".jsonl", encode(records, ".jsonl")
    damage = draw(st.sampled_from(["none", "none", "none", "truncate", "bytes", "utf16", "gbk", "bom", "empty"]))
    if damage == "truncate":
        content = content[: draw(st.integers(0, len(content)))]
    elif damage == "bytes":
        content = draw(st.binary(max_size=80))
    elif damage == "utf16":
        content = content.decode("utf-8", "replace").encode("utf-16")
    elif damage == "gbk":
        content = "订单".encode("gbk") + content
    elif damage == "bom":
        content = b"\xef\xbb\xbf" + content
    elif damage == "empty":
        content = b""
    return f"fuzzed{suffix}", content, draw(st.sampled_from(["auto", "auto", "alpaca", "sharegpt", "openai"]))


@pytest.fixture(scope="module")
def tokenizer():
    from tiny_model import build_tokenizer

    return build_tokenizer()


def load_checked(path: Path, fmt: str) -> list[dict]:
    """Strict and lenient loading agree; errors name the file."""
    invalid: list[DataError] = []
    try:
        lenient = load_source(path, fmt, invalid=invalid)
    except DataError as error:
        assert path.name in str(error), str(error)
        lenient = None
    for error in invalid:
        assert path.name in error.where and ("line" in error.where or "record" in error.where), error.where
    try:
        strict = load_source(path, fmt)
    except DataError as error:
        assert path.name in str(error), str(error)
        assert lenient is None or invalid or not lenient, "strict loading refused what lenient loading accepted"
        return lenient or []
    assert not invalid and lenient == strict
    return strict


@given(case=data_file())
@fuzz_settings(examples=350)
def test_data_files_load_or_fail_clearly(tmp_path_factory, tokenizer, case):
    from tunelab.data.tokenize import tokenize_examples

    name, content, fmt = case
    path = tmp_path_factory.mktemp("data") / name
    path.write_bytes(content)
    records = load_checked(path, fmt)
    for record in records:
        assert isinstance(record["messages"], list) and record["messages"], record
        assert all(m["role"] in ("system", "user", "assistant", "tool") for m in record["messages"]), record
    try:
        tokenize_examples(records, tokenizer, max_length=64)
    except DataError as error:
        assert "fuzzed" in str(error) or "record" in str(error), str(error)
    CASES["data files (load + tokenize)"] += 1


@given(case=data_file())
@fuzz_settings(examples=150)
def test_data_commands_on_fuzzed_files(tmp_path_factory, capsys, case):
    name, content, _ = case
    folder = tmp_path_factory.mktemp("cmd")
    path = folder / name
    path.write_bytes(content)
    audit = ["data", "audit", path, "--no-lengths", "--out", folder / "audit"]
    convert = ["data", "convert", path, "--to", "openai", "--out", folder / "converted.jsonl", "--overwrite"]
    for args in (audit, convert):
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        assert code in (0, 1), (args, code, captured.err)
        no_traceback(captured.out, captured.err)
        if code:
            assert captured.err.startswith("error: ") and name in captured.err, captured.err
        CASES["data commands"] += 1
    assert path.read_bytes() == content  # inputs are never modified


def test_a_folder_or_a_missing_file_is_a_clear_error(tmp_path, capsys):
    folder = tmp_path / "records.jsonl"
    folder.mkdir()
    for path in (folder, tmp_path / "missing.jsonl", tmp_path / "data.txt"):
        if path.suffix == ".txt":
            path.write_text("hello")
        with pytest.raises(DataError) as caught:
            load_source(path)
        assert path.name in str(caught.value)
        assert main(["data", "audit", str(path), "--no-lengths", "--out", str(tmp_path / "audit")]) == 1
        assert path.name in capsys.readouterr().err
