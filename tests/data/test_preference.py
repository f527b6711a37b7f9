"""Preference data through the loader (preference.py, kinds.py): every layout to TRL's conversational pair or unpaired
record, the LLaMA-Factory demo sets, one kind per set, and bad rows named by file, record and field."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from helpers import shared_data, write_jsonl
from tunelab.data.kinds import check_one_kind, conversation, record_kind, sets_kind, unpair, with_system
from tunelab.data.load import load_registry_datasets, load_source
from tunelab.data.preference import detect_layout
from tunelab.errors import DataError

USER = {"role": "user", "content": "2+2?"}
SYSTEM = {"role": "system", "content": "Be exact."}
FOUR = {"role": "assistant", "content": "4"}
FIVE = {"role": "assistant", "content": "5"}
PAIR = {"prompt": [USER], "chosen": [FOUR], "rejected": [FIVE]}


def load_rows(tmp_path, rows, fmt="auto", name="data.jsonl", **kw):
    return load_source(write_jsonl(tmp_path / name, rows), fmt, **kw)


def core(record: dict) -> dict:
    return {key: value for key, value in record.items() if key not in ("id", "source")}


# --- every layout reads to the same pair --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "layout"),
    [
        ({"prompt": "2+2?", "chosen": "4", "rejected": "5"}, "trl"),  # TRL standard
        ({"prompt": [USER], "chosen": [FOUR], "rejected": [FIVE]}, "trl"),  # TRL conversational (tunelab's own)
        ({"prompt": "2+2?", "chosen": [USER, FOUR], "rejected": [USER, FIVE]}, "trl"),  # UltraFeedback's sides
        ({"chosen": [USER, FOUR], "rejected": [USER, FIVE]}, "implicit"),
        ({"chosen": "\n\nHuman: 2+2?\n\nAssistant: 4", "rejected": "\n\nHuman: 2+2?\n\nAssistant: 5"}, "hh"),
        (
            {
                "conversations": [{"from": "human", "value": "2+2?"}],
                "chosen": {"from": "gpt", "value": "4"},
                "rejected": {"from": "gpt", "value": "5"},
            },
            "sharegpt",
        ),  # fmt: skip
        ({"instruction": "2+2?", "input": "", "chosen": "4", "rejected": "5"}, "alpaca"),
        ({"question": "2+2?", "response_j": "4", "response_k": "5"}, "stack_exchange"),
    ],
)
def test_each_pair_layout_reads_as_the_canonical_pair(tmp_path, row, layout):
    assert detect_layout(row) == f"preference:{layout}"
    for fmt in ("auto", "preference", f"preference:{layout}"):
        [record] = load_rows(tmp_path, [row], fmt)
        assert core(record) == PAIR and record_kind(record) == "preference"
        assert record["id"] == "data-0" and record["source"] == "data.jsonl:1"


def test_multi_turn_and_system_prompts_stay_in_the_prompt(tmp_path):
    turns = [SYSTEM, USER, FOUR, {"role": "user", "content": "and 3+3?"}]
    six, seven = {"role": "assistant", "content": "6"}, {"role": "assistant", "content": "7"}
    expected = {"prompt": turns, "chosen": [six], "rejected": [seven]}
    implicit = {"chosen": [*turns, six], "rejected": [*turns, seven], "category": "math"}
    hh = "\n\nHuman: 2+2?\n\nAssistant: 4\n\nHuman: and 3+3?\n\nAssistant: "
    records = load_rows(tmp_path, [implicit])
    assert core(records[0]) == expected | {"category": "math"}
    [record] = load_rows(tmp_path, [{"chosen": hh + "6", "rejected": hh + "7"}])
    assert core(record) == {"prompt": turns[1:], "chosen": [six], "rejected": [seven]}


def test_text_answers_that_look_like_json_stay_text(tmp_path):
    row = {"prompt": "List two numbers as JSON.", "chosen": "[1, 2]", "rejected": '{"a": 1}'}
    [record] = load_rows(tmp_path, [row])
    assert record["chosen"] == [{"role": "assistant", "content": "[1, 2]"}]
    assert record["rejected"] == [{"role": "assistant", "content": '{"a": 1}'}]


def test_csv_pairs_with_messages_as_json_text(tmp_path):
    path = tmp_path / "pairs.csv"
    path.write_text('prompt,chosen,rejected\n"[{""role"": ""user"", ""content"": ""2+2?""}]",4,5\n', encoding="utf-8")
    assert core(load_source(path)[0]) == PAIR


def test_tools_category_and_id_are_kept(tmp_path):
    row = PAIR | {"id": "p1", "tools": [{"name": "calc"}], "category": "math"}
    [record] = load_rows(tmp_path, [row])
    assert record["id"] == "p1" and record["category"] == "math" and json.loads(record["tools"]) == [{"name": "calc"}]


# --- unpaired (KTO) -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "layout"),
    [
        ({"prompt": "2+2?", "completion": "4", "label": True}, "trl"),
        ({"prompt": [USER], "completion": [FOUR], "label": "true"}, "trl"),
        ({"messages": [USER, FOUR], "label": True}, "openai"),
        (
            {"conversations": [{"from": "human", "value": "2+2?"}, {"from": "gpt", "value": "4"}], "kto_tag": 1},
            "sharegpt",
        ),  # fmt: skip
        ({"instruction": "2+2?", "output": "4", "kto_tag": True}, "alpaca"),
    ],
)
def test_each_unpaired_layout_reads_as_the_canonical_record(tmp_path, row, layout):
    assert detect_layout(row) == f"unpaired:{layout}"
    [record] = load_rows(tmp_path, [row], "unpaired")
    assert core(record) == {"prompt": [USER], "completion": [FOUR], "label": True}
    assert record_kind(record) == "unpaired"


def test_a_text_label_on_a_conversation_stays_sft():
    row = {"messages": [USER, FOUR], "label": "arithmetic"}
    assert detect_layout(row) is None


# --- the LLaMA-Factory demo sets ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["dpo_en_demo", "dpo_zh_demo"])
def test_llamafactory_ranking_demos_load_as_pairs(name):
    registry = shared_data("llamafactory", "dataset_info.json")
    raw = json.loads(shared_data("llamafactory", f"{name}.json").read_text(encoding="utf-8"))
    invalid: list[DataError] = []
    records = load_registry_datasets(registry, name, invalid=invalid)
    assert len(records) == len(raw) == 300 and not invalid
    assert check_one_kind(records) == "preference"
    for record, row in zip(records, raw, strict=True):
        assert [m["content"] for m in record["prompt"]] == [turn["value"] for turn in row["conversations"]]
        assert record["prompt"][-1]["role"] == "user"
        assert record["chosen"] == [{"role": "assistant", "content": row["chosen"]["value"]}]
        assert record["rejected"] == [{"role": "assistant", "content": row["rejected"]["value"]}]
    assert load_source(shared_data("llamafactory", f"{name}.json")) == records  # the file alone reads the same


def test_llamafactory_kto_demo_loads_as_unpaired():
    records = load_registry_datasets(shared_data("llamafactory", "dataset_info.json"), "kto_en_demo")
    raw = json.loads(shared_data("llamafactory", "kto_en_demo.json").read_text(encoding="utf-8"))
    assert len(records) == 300 and check_one_kind(records) == "unpaired"
    assert Counter(record["label"] for record in records) == Counter(row["label"] for row in raw)
    for record, row in zip(records, raw, strict=True):
        assert record["prompt"] + record["completion"] == row["messages"]
        assert record["label"] is row["label"]
    assert load_source(shared_data("llamafactory", "kto_en_demo.json")) == records


def test_registry_entry_with_renamed_columns_and_openai_tags(tmp_path):
    rows = [{"dialog": [USER], "good": FOUR, "bad": FIVE}]
    (tmp_path / "pairs.json").write_text(json.dumps(rows), encoding="utf-8")
    entry = {"file_name": "pairs.json", "formatting": "sharegpt", "ranking": True,
             "columns": {"messages": "dialog", "chosen": "good", "rejected": "bad"},
             "tags": {"role_tag": "role", "content_tag": "content"}}  # fmt: skip
    (tmp_path / "dataset_info.json").write_text(json.dumps({"p": entry}), encoding="utf-8")
    [record] = load_registry_datasets(tmp_path / "dataset_info.json", "p")
    assert core(record) == PAIR


# --- bad input ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "pattern"),
    [
        ({"prompt": "q", "chosen": "a"}, r'bad\.jsonl line 1, field "rejected": missing'),
        ({"prompt": "q", "chosen": " ", "rejected": "r"}, r'field "chosen": is empty'),
        (
            {"prompt": "q", "chosen": [{"role": "user", "content": "a"}], "rejected": "r"},
            r'field "chosen": the answer comes from the user, not the assistant',
        ),  # fmt: skip
        ({"prompt": "q", "chosen": [FOUR, FOUR], "rejected": "r"}, r'field "chosen": expected one assistant message'),
        ({"prompt": [USER, FOUR], "chosen": "c", "rejected": "r"}, "the prompt ends with the assistant's turn"),
        ({"chosen": "a", "rejected": "b"}, r'field "chosen": is plain text, and the prompt is not given'),
        (
            {"chosen": [USER, FOUR, USER, FOUR], "rejected": [USER, FIVE, USER, FIVE]},
            "chosen and rejected differ from message 1 on",
        ),  # fmt: skip
        (
            {"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant:"},
            r'field "rejected\[1\]\.content": is empty',
        ),  # fmt: skip
        (
            {
                "conversations": [{"from": "human", "value": "q"}],
                "chosen": {"from": "human", "value": "a"},
                "rejected": {"from": "gpt", "value": "b"},
            },
            r'field "chosen": the answer comes from the user',
        ),  # fmt: skip
        ({"prompt": "q", "completion": "a", "label": "maybe"}, r'field "label": expected true or false'),
    ],
)
def test_bad_rows_name_the_file_record_and_field(tmp_path, row, pattern):
    with pytest.raises(DataError, match=pattern) as error:
        load_rows(tmp_path, [row], name="bad.jsonl")
    assert "bad.jsonl line 1" in str(error.value) and "fix:" in str(error.value)


def test_invalid_pairs_are_collected_and_the_rest_load(tmp_path):
    rows = [PAIR, {"prompt": "q", "chosen": "a"}, PAIR | {"rejected": []}, PAIR]
    invalid: list[DataError] = []
    records = load_rows(tmp_path, rows, invalid=invalid)
    assert [r["source"] for r in records] == ["data.jsonl:1", "data.jsonl:4"]
    assert [e.where.split(",")[0] for e in invalid] == ["data.jsonl line 2", "data.jsonl line 3"]


def test_a_file_declared_preference_must_hold_pairs(tmp_path):
    with pytest.raises(DataError, match=r"data\.jsonl line 1: not a preference pair \(fields: messages\)"):
        load_rows(tmp_path, [{"messages": [USER, FOUR]}], "preference")
    with pytest.raises(DataError, match="mixed formats in one file"):
        load_rows(tmp_path, [PAIR, {"messages": [USER, FOUR]}])
    with pytest.raises(DataError, match="columns.messages does not apply to preference:trl"):
        load_rows(tmp_path, [PAIR], columns={"messages": "m"})


# --- kinds --------------------------------------------------------------------------------------------------------


def test_one_kind_per_set_names_the_record_and_the_fix(tmp_path):
    pairs = load_rows(tmp_path, [PAIR], name="pairs.jsonl")
    chats = load_rows(tmp_path, [{"messages": [USER, FOUR]}], name="chats.jsonl")
    assert sets_kind({"train": pairs, "test": pairs}) == "preference" and sets_kind({}) == "messages"
    with pytest.raises(DataError) as error:
        sets_kind({"train": pairs, "test": chats})
    message = str(error.value)
    assert "record 'chats-0' (chats.jsonl:1)" in message and "is a conversation" in message
    assert "record 'pairs-0' (pairs.jsonl:1) is a preference pair" in message
    assert "tunelab data convert --to preference" in message
    with pytest.raises(DataError, match="is not a canonical record"):
        record_kind({"prompt": "q"})


def test_unpaired_training_data_may_be_held_out_on_pairs_and_nothing_else(tmp_path):
    pairs = load_rows(tmp_path, [PAIR], name="pairs.jsonl")
    chats = load_rows(tmp_path, [{"messages": [USER, FOUR]}], name="chats.jsonl")
    unpaired = unpair(pairs)
    train_test = {"train": "train", "test": "eval", "validation": "eval"}
    assert sets_kind({"train": unpaired, "test": pairs}, train_test) == "unpaired"
    assert sets_kind({"train": unpaired, "validation": unpaired, "test": pairs}, train_test) == "unpaired"
    with pytest.raises(DataError, match="is a preference pair"):  # without roles, or pairs in training: one kind
        sets_kind({"train": unpaired, "test": pairs})
    with pytest.raises(DataError, match="is a preference pair"):
        sets_kind({"train": unpaired + pairs, "test": pairs}, train_test)
    with pytest.raises(DataError, match="is an unpaired preference"):  # the other way round loses the pairs
        sets_kind({"train": pairs, "test": unpaired}, train_test)
    with pytest.raises(DataError, match="is a conversation"):
        sets_kind({"train": unpaired, "test": chats}, train_test)


def test_views_system_prompt_and_unpairing():
    record = {"id": "p", **PAIR, "category": "math"}
    assert conversation(record) == {"id": "p", "category": "math", "messages": [USER, FOUR]}
    assert with_system(record, "Be exact.")["prompt"] == [SYSTEM, USER]
    assert with_system(with_system(record, "Be exact."), "Other.")["prompt"][0] == SYSTEM
    assert unpair([record]) == [
        {"id": "p-chosen", "prompt": [USER], "completion": [FOUR], "label": True, "category": "math"},
        {"id": "p-rejected", "prompt": [USER], "completion": [FIVE], "label": False, "category": "math"},
    ]
