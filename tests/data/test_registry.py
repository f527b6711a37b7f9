"""LLaMA-Factory dataset_info.json registries: entry resolution, refusals, and the real demo files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import shared_data
from tunelab.data.load import load_registry_datasets, load_source
from tunelab.data.registry import registry_entries
from tunelab.errors import DataError


def make_registry(folder: Path, entries: dict, files: dict[str, list] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (files or {}).items():
        (folder / name).write_text(json.dumps(rows), encoding="utf-8")
    path = folder / "dataset_info.json"
    path.write_text(json.dumps(entries), encoding="utf-8")
    return path


QA = [{"question": "Why?", "answer": "Because.", "sys": "Be short."}]
DIALOG = [{"dialog": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}], "tools": "[]"}]


def test_entries_resolve_files_next_to_the_registry(tmp_path, monkeypatch):
    entries = {
        "qa": {"file_name": "qa.json", "columns": {"prompt": "question", "response": "answer", "system": "sys"}},
        "chat": {
            "file_name": "chat.json",
            "formatting": "sharegpt",
            "columns": {"messages": "dialog", "tools": "tools"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
        },
    }
    registry = make_registry(tmp_path / "data", entries, {"qa.json": QA, "chat.json": DIALOG})
    monkeypatch.chdir(tmp_path)  # file_name is relative to the registry, not to the current folder
    specs = registry_entries("data/dataset_info.json", "qa, chat")
    assert [Path(s["path"]).resolve() for s in specs] == [registry.parent / "qa.json", registry.parent / "chat.json"]
    assert [s["format"] for s in specs] == ["alpaca", "sharegpt"]
    assert specs[0]["tags"] is None and specs[1]["tags"]["role_tag"] == "role"
    records = load_registry_datasets("data/dataset_info.json", ["qa", "chat"])
    assert [m["role"] for m in records[0]["messages"]] == ["system", "user", "assistant"]
    assert records[0]["messages"][2]["content"] == "Because."
    assert records[1]["messages"] == DIALOG[0]["dialog"] and "tools" not in records[1]
    assert [r["id"] for r in records] == ["qa-0", "chat-0"]


def test_unknown_name_suggests_close_matches(tmp_path):
    registry = make_registry(tmp_path, {"alpaca_en_demo": {"file_name": "a.json"}, "identity": {"file_name": "i.json"}})
    with pytest.raises(DataError, match=r"^dataset_info\.json: no dataset named 'alpaca_demo'") as err:
        registry_entries(registry, ["alpaca_demo"])
    assert "did you mean: alpaca_en_demo?" in str(err.value)


def test_hub_entry_needs_a_download(tmp_path):
    registry = make_registry(tmp_path, {"gpt4": {"hf_hub_url": "llamafactory/alpaca_gpt4_en"}})
    with pytest.raises(DataError, match=r'^dataset_info\.json entry "gpt4": needs a download') as err:
        registry_entries(registry, "gpt4")
    assert "put the file next to dataset_info.json" in str(err.value) and "file_name" in str(err.value)


def test_missing_local_file_says_where_it_looked(tmp_path):
    registry = make_registry(tmp_path, {"qa": {"file_name": "qa.json"}})
    with pytest.raises(DataError, match=r'entry "qa": file_name \'qa\.json\' not found') as err:
        registry_entries(registry, "qa")
    assert str(tmp_path / "qa.json") in str(err.value)


@pytest.mark.parametrize(
    ("entry", "pattern"),
    [
        ({"file_name": "qa.json", "ranking": True, "columns": {"kto_tag": "label"}}, "is both ranking .* and KTO"),
        ({"file_name": "qa.json", "columns": {"images": "images"}}, "has images: tunelab trains on text only"),
        ({"file_name": "qa.json", "formatting": "vicuna"}, "unknown formatting 'vicuna'"),
    ],
)
def test_unsupported_entries_are_refused(tmp_path, entry, pattern):
    registry = make_registry(tmp_path, {"x": entry}, {"qa.json": QA})
    with pytest.raises(DataError, match=pattern):
        registry_entries(registry, "x")


def test_registry_that_is_not_an_object(tmp_path):
    (tmp_path / "dataset_info.json").write_text("[]", encoding="utf-8")
    with pytest.raises(DataError, match="expected a JSON object"):
        registry_entries(tmp_path / "dataset_info.json", "x")


# --- compatibility with the real LLaMA-Factory and FastChat demo files ------------------------------------------


@pytest.mark.parametrize(("name", "count"), [("alpaca_en_demo", 999), ("alpaca_zh_demo", 1000), ("identity", 91)])
def test_llamafactory_alpaca_demos(name, count):
    records = load_registry_datasets(shared_data("llamafactory", "dataset_info.json"), [name])
    assert len(records) == count
    assert all([m["role"] for m in r["messages"]] == ["user", "assistant"] for r in records)
    assert records[0]["id"] == f"{name}-0" and records[0]["source"] == f"{name}.json:0"
    raw = json.loads(shared_data("llamafactory", f"{name}.json").read_text(encoding="utf-8"))
    with_input = next(i for i, row in enumerate(raw) if row["input"]) if name != "identity" else 0
    row = raw[with_input]
    expected_user = f"{row['instruction']}\n\n{row['input']}" if row["input"] else row["instruction"]
    assert records[with_input]["messages"] == [
        {"role": "user", "content": expected_user},
        {"role": "assistant", "content": row["output"]},
    ]


def test_llamafactory_glaive_toolcall_demo():
    records = load_registry_datasets(shared_data("llamafactory", "dataset_info.json"), "glaive_toolcall_en_demo")
    raw = json.loads(shared_data("llamafactory", "glaive_toolcall_en_demo.json").read_text(encoding="utf-8"))
    assert len(records) == 300
    with_tools = [r for r in records if "tools" in r]
    assert len(with_tools) == sum(row["tools"] not in ("", "[]") for row in raw) > 0
    assert all(isinstance(json.loads(r["tools"]), list) for r in with_tools)
    role_of = {"human": "user", "gpt": "assistant", "function_call": "assistant", "observation": "tool"}
    for record, row in zip(records, raw, strict=True):
        assert [m["role"] for m in record["messages"]] == [role_of[t["from"]] for t in row["conversations"]]
        assert [m["content"] for m in record["messages"]] == [t["value"] for t in row["conversations"]]
    call = next(r for r in records if any(m["role"] == "tool" for m in r["messages"]))
    tool_at = [m["role"] for m in call["messages"]].index("tool")
    assert "name" in json.loads(call["messages"][tool_at - 1]["content"])


def test_fastchat_sharegpt_conversations_keep_every_turn():
    path = shared_data("fastchat_sft", "dummy_conversation.json")
    records = load_source(path)
    raw = json.loads(path.read_text(encoding="utf-8"))
    assert len(records) == 500
    assert [r["id"] for r in records] == [row["id"] for row in raw]
    assert [len(r["messages"]) for r in records] == [len(row["conversations"]) for row in raw]
    assert max(len(r["messages"]) for r in records) >= 6
    longest = max(records, key=lambda r: len(r["messages"]))
    assert [m["role"] for m in longest["messages"]] == ["user", "assistant"] * (len(longest["messages"]) // 2)
