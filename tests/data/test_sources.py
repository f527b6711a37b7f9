"""Reading data files (sources.py) and turning them into records (load.py): formats on disk and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunelab.data import sources
from tunelab.data.load import load_source
from tunelab.data.sources import read_rows
from tunelab.errors import DataError

ALPACA = {"instruction": "Add 2 and 3.", "input": "", "output": "5"}
OPENAI = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def test_jsonl_rows_carry_their_line_numbers_and_skip_blank_lines(tmp_path):
    path = tmp_path / "orders.jsonl"
    path.write_text(json.dumps(ALPACA) + "\n\n" + json.dumps(OPENAI) + "\n", encoding="utf-8")
    rows = read_rows(path)
    assert [where for where, _ in rows] == ["orders.jsonl line 1", "orders.jsonl line 3"]
    assert rows[1][1] == OPENAI


def test_json_list_rows_are_numbered_from_zero(tmp_path):
    path = tmp_path / "data.json"
    path.write_text(json.dumps([ALPACA, ALPACA]), encoding="utf-8")
    assert [where for where, _ in read_rows(path)] == ["data.json record 0", "data.json record 1"]


def test_json_lines_saved_as_json_are_detected(tmp_path):
    path = write_jsonl(tmp_path / "chat.json", [OPENAI, OPENAI, OPENAI])
    rows = read_rows(path)
    assert len(rows) == 3 and rows[2][0] == "chat.json line 3"


def test_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(ALPACA).encode())
    assert read_rows(path)[0][1] == ALPACA


def test_missing_file_names_the_resolved_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="file not found") as err:
        read_rows("nowhere/orders.jsonl")
    assert str(tmp_path / "nowhere" / "orders.jsonl") in str(err.value)


def test_malformed_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "orders.jsonl"
    path.write_text(json.dumps(ALPACA) + "\n" + json.dumps(ALPACA) + "\n" + '{"instruction": "x",\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"^orders\.jsonl line 3: invalid JSON: Expecting"):
        read_rows(path)


def test_malformed_json_list_names_the_line(tmp_path):
    path = tmp_path / "data.json"
    path.write_text('[\n  {"a": 1},\n  {"a": 2,}\n]', encoding="utf-8")
    with pytest.raises(DataError, match=r"^data\.json line 3: invalid JSON"):
        read_rows(path)


@pytest.mark.parametrize("name", ["legacy.jsonl", "legacy.json", "legacy.csv"])
def test_non_utf8_file_says_so_and_suggests_iconv(tmp_path, name):
    path = tmp_path / name
    text = "instruction,output\n" if name.endswith(".csv") else ""
    path.write_bytes(text.encode() + '{"instruction": "café", "output": "ok"}\n'.encode("latin-1"))
    with pytest.raises(DataError) as err:
        read_rows(path)
    message = str(err.value)
    expected_line = 2 if name.endswith(".csv") else 1
    assert message.startswith(f"{name} line {expected_line}: the file is not valid UTF-8 (byte 0xe9)")
    assert "iconv" in message


@pytest.mark.parametrize("name", ["empty.jsonl", "empty.json", "empty.csv"])
def test_empty_file_has_no_records(tmp_path, name):
    path = tmp_path / name
    path.write_text("\n" if name.endswith("l") else "", encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{name}: no records"):
        read_rows(path)


def test_empty_json_list_has_no_records(tmp_path):
    (tmp_path / "empty.json").write_text("[]", encoding="utf-8")
    with pytest.raises(DataError, match="no records"):
        read_rows(tmp_path / "empty.json")


def test_unsupported_extension_lists_the_supported_ones(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello", encoding="utf-8")
    with pytest.raises(DataError, match=r"^notes\.txt: unsupported file type '\.txt'") as err:
        read_rows(path)
    assert all(ext in str(err.value) for ext in (".json", ".jsonl", ".csv", ".parquet"))


def test_top_level_object_is_refused_with_a_hint(tmp_path):
    path = tmp_path / "wrapped.json"
    path.write_text(json.dumps({"data": [ALPACA]}, indent=2), encoding="utf-8")
    with pytest.raises(DataError, match=r"^wrapped\.json: the top level is an object, expected a list") as err:
        read_rows(path)
    assert 'under "data"' in str(err.value)


def test_non_object_rows_are_refused(tmp_path):
    (tmp_path / "list.json").write_text(json.dumps([ALPACA, "oops"]), encoding="utf-8")
    with pytest.raises(DataError, match=r"^list\.json record 1: expected a JSON object .*, got a string"):
        read_rows(tmp_path / "list.json")
    (tmp_path / "lines.jsonl").write_text(json.dumps(ALPACA) + "\n[1, 2]\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"^lines\.jsonl line 2: expected a JSON object .*, got a list"):
        read_rows(tmp_path / "lines.jsonl")


def test_overlong_jsonl_line_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "MAX_LINE_BYTES", 100)
    path = write_jsonl(tmp_path / "big.jsonl", [ALPACA, {"instruction": "x" * 200, "output": "y"}])
    with pytest.raises(DataError, match=r"^big\.jsonl line 2: line is longer than"):
        read_rows(path)


def test_csv_round_trip_through_pandas(tmp_path):
    pd = pytest.importorskip("pandas")
    rows = [ALPACA, {"instruction": "Translate", "input": "bonjour", "output": "hello", "system": "Be brief."}]
    path = tmp_path / "pairs.csv"
    pd.DataFrame(rows).to_csv(path, index=False, encoding="utf-8-sig")
    records = load_source(path)
    assert [r["source"] for r in records] == ["pairs.csv:0", "pairs.csv:1"]
    assert records[0]["messages"] == [
        {"role": "user", "content": "Add 2 and 3."},
        {"role": "assistant", "content": "5"},
    ]
    assert records[1]["messages"][0] == {"role": "system", "content": "Be brief."}
    assert records[1]["messages"][1]["content"] == "Translate\n\nbonjour"


def test_csv_with_messages_as_json_text(tmp_path):
    pd = pytest.importorskip("pandas")
    path = tmp_path / "chat.csv"
    pd.DataFrame([{"id": "a1", "messages": json.dumps(OPENAI["messages"])}]).to_csv(path, index=False)
    [record] = load_source(path)
    assert record["id"] == "a1" and record["messages"] == OPENAI["messages"]


def test_csv_ragged_row_is_refused(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text("instruction,output\nhi,hello\nmore,fields,than,header\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"^ragged\.csv record 1 \(line 3\): the row has a different number"):
        read_rows(path)


def test_parquet_round_trip_keeps_nested_messages(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [
        {**OPENAI, "category": None},
        {"messages": [{"role": "system", "content": "S"}, *OPENAI["messages"]], "category": "greet"},
    ]
    path = tmp_path / "chat.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    records = load_source(path)
    assert [r["id"] for r in records] == ["chat-0", "chat-1"]
    assert records[0]["messages"] == OPENAI["messages"]
    assert records[1]["messages"][0]["role"] == "system" and records[1]["category"] == "greet"
    assert records[1]["source"] == "chat.parquet:1"


def test_not_a_parquet_file(tmp_path):
    (tmp_path / "fake.parquet").write_text("hello", encoding="utf-8")
    with pytest.raises(DataError, match=r"^fake\.parquet: cannot read as Parquet"):
        read_rows(tmp_path / "fake.parquet")


# --- load_source --------------------------------------------------------------------------------------------------


def test_load_source_stamps_id_and_source(tmp_path):
    path = write_jsonl(tmp_path / "orders.jsonl", [ALPACA, {**ALPACA, "id": 42}])
    records = load_source(path)
    assert [r["id"] for r in records] == ["orders-0", "42"]
    assert [r["source"] for r in records] == ["orders.jsonl:1", "orders.jsonl:2"]
    assert list(records[0]) == ["id", "messages", "source"]


def test_load_source_limit(tmp_path):
    path = write_jsonl(tmp_path / "orders.jsonl", [ALPACA] * 5)
    assert len(load_source(path, limit=2)) == 2


def test_mixed_formats_in_one_file_name_the_line(tmp_path):
    path = write_jsonl(tmp_path / "mixed.jsonl", [ALPACA, ALPACA, OPENAI])
    with pytest.raises(DataError, match=r"^mixed\.jsonl line 3: mixed formats in one file: this record is openai"):
        load_source(path)


def test_explicit_format_with_renamed_columns(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": "Why?", "answer": "Because."}])
    [record] = load_source(path, "alpaca", columns={"prompt": "question", "response": "answer"})
    assert record["messages"][1] == {"role": "assistant", "content": "Because."}


def test_undetectable_format_names_the_record(tmp_path):
    path = write_jsonl(tmp_path / "qa.jsonl", [{"question": "Why?", "answer": "Because."}])
    with pytest.raises(DataError, match=r"^qa\.jsonl line 1: cannot tell the data format from the fields question"):
        load_source(path)


def test_record_errors_name_file_line_and_field(tmp_path):
    bad = {"messages": [{"role": "user", "content": "Hi"}, {"role": "bot", "content": "Hello"}]}
    path = write_jsonl(tmp_path / "orders.jsonl", [OPENAI] * 11 + [bad])
    with pytest.raises(DataError, match=r'^orders\.jsonl line 12, field "messages\[1\]\.role": unknown role \'bot\''):
        load_source(path)
