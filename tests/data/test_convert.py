"""Writers and preference readers (convert.py): round trips on real files, unrepresentable records, safe writes."""

from __future__ import annotations

import json

import pytest

from helpers import cli, shared_data, write_jsonl
from tunelab.data.convert import (
    convert_file,
    preference_to_stack_exchange,
    record_to_alpaca,
    record_to_openai,
    record_to_sharegpt,
)
from tunelab.data.load import load_source
from tunelab.data.preference import trl_pair
from tunelab.errors import DataError

TOOL_RECORD = {
    "id": "t1",
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Oslo?"},
        {"role": "assistant", "content": '{"name": "weather", "arguments": {"city": "Oslo"}}'},
        {"role": "tool", "content": '{"temp": 3}'},
        {"role": "assistant", "content": "3 degrees."},
    ],
    "tools": '[{"name": "weather"}]',
}


def read_preference(path) -> list[dict]:
    return load_source(path, "preference")


def without_source(records: list[dict]) -> list[dict]:
    return [{key: value for key, value in record.items() if key != "source"} for record in records]


def write_json(path, rows) -> str:
    path.write_text(json.dumps(rows), encoding="utf-8")
    return str(path)


# --- SFT round trips on real files --------------------------------------------------------------------------------


def test_alpaca_to_openai_to_alpaca_keeps_every_record(tmp_path):
    source = shared_data("llamafactory", "alpaca_en_demo.json")
    convert_file(source, tmp_path / "openai.jsonl", "openai")
    convert_file(tmp_path / "openai.jsonl", tmp_path / "back.json", "alpaca")
    original, back = load_source(source), load_source(tmp_path / "back.json")
    assert without_source(back) == without_source(original)
    # rows without an input come back field for field (with an input, instruction and input are one user turn)
    rows = json.loads(source.read_text(encoding="utf-8"))
    back_rows = json.loads((tmp_path / "back.json").read_text(encoding="utf-8"))
    for row, back_row in zip(rows, back_rows, strict=True):
        if not row["input"]:
            assert {key: back_row[key] for key in row} == row


def test_sharegpt_multi_turn_to_openai_to_sharegpt_keeps_all_turns(tmp_path):
    source = shared_data("fastchat_sft", "dummy_conversation.json")
    convert_file(source, tmp_path / "openai.jsonl", "openai")
    convert_file(tmp_path / "openai.jsonl", tmp_path / "back.json", "sharegpt")
    original = json.loads(source.read_text(encoding="utf-8"))
    back = json.loads((tmp_path / "back.json").read_text(encoding="utf-8"))
    assert [row["conversations"] for row in back] == [row["conversations"] for row in original]
    assert [row["id"] for row in back] == [row["id"] for row in original]
    assert max(len(row["conversations"]) for row in back) > 2


def test_tool_calls_survive_sharegpt_and_openai(tmp_path):
    row = record_to_sharegpt(TOOL_RECORD)
    assert [turn["from"] for turn in row["conversations"]] == ["human", "function_call", "observation", "gpt"]
    assert row["system"] == "Be brief." and row["tools"] == TOOL_RECORD["tools"]
    for name, convert in (("sharegpt", record_to_sharegpt), ("openai", record_to_openai)):
        path = tmp_path / f"{name}.jsonl"
        path.write_text(json.dumps(convert(TOOL_RECORD)) + "\n", encoding="utf-8")
        assert without_source(load_source(path)) == [TOOL_RECORD]


def test_multi_turn_alpaca_puts_earlier_turns_in_history():
    record = {
        "id": "m",
        "messages": [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": "Bye"},
            {"role": "assistant", "content": "Goodbye"},
        ],
        "category": "chat",
    }
    assert record_to_alpaca(record) == {
        "id": "m",
        "instruction": "Bye",
        "input": "",
        "output": "Goodbye",
        "history": [["Hi", "Hello"]],
        "category": "chat",
    }


def test_tool_turns_cannot_become_alpaca_and_the_error_names_the_record(tmp_path):
    with pytest.raises(DataError, match=r"record 't1': has tool turns.*\n  fix: convert to sharegpt or openai"):
        record_to_alpaca(TOOL_RECORD)
    source = write_json(tmp_path / "tools.json", [record_to_openai(TOOL_RECORD)])
    with pytest.raises(DataError, match=r"record 't1' \(tools\.json:0\)"):
        convert_file(source, tmp_path / "out.jsonl", "alpaca")
    assert not (tmp_path / "out.jsonl").exists()
    assert not list(tmp_path.glob(".out.jsonl*"))


# --- preference ---------------------------------------------------------------------------------------------------


def test_dpo_demo_to_alpaca_preference_and_back_is_equal(tmp_path):
    source = shared_data("llamafactory", "dpo_en_demo.json")
    records = read_preference(source)
    assert len(records) == 300
    assert any(record["prompt"][0]["role"] == "system" for record in records)
    assert any(len(record["prompt"]) > 3 for record in records)
    convert_file(source, tmp_path / "alpaca.json", "alpaca")
    rows = json.loads((tmp_path / "alpaca.json").read_text(encoding="utf-8"))
    assert set(rows[0]) >= {"instruction", "input", "chosen", "rejected"}
    assert without_source(read_preference(tmp_path / "alpaca.json")) == without_source(records)


@pytest.mark.parametrize("layout", ["sharegpt", "openai", "trl", "preference"])
def test_dpo_demo_round_trips_through_other_layouts(tmp_path, layout):
    source = shared_data("llamafactory", "dpo_en_demo.json")
    convert_file(source, tmp_path / "out.jsonl", layout)
    assert without_source(read_preference(tmp_path / "out.jsonl")) == without_source(read_preference(source))


def test_dpo_demo_first_pair_reads_as_trl_conversational_preference():
    record = read_preference(shared_data("llamafactory", "dpo_en_demo.json"))[0]
    row = json.loads(shared_data("llamafactory", "dpo_en_demo.json").read_text(encoding="utf-8"))[0]
    assert record["prompt"] == [{"role": "user", "content": row["conversations"][0]["value"]}]
    assert record["chosen"] == [{"role": "assistant", "content": row["chosen"]["value"]}]
    assert record["rejected"] == [{"role": "assistant", "content": row["rejected"]["value"]}]
    assert record["source"] == "dpo_en_demo.json:0"


def test_stack_exchange_j_is_chosen_and_round_trips(tmp_path):
    source = shared_data("torchtune", "stack_exchange_paired_tiny.json")
    row = json.loads(source.read_text(encoding="utf-8"))[0]
    record = read_preference(source)[0]
    assert record["prompt"] == [{"role": "user", "content": row["question"]}]
    assert record["chosen"][0]["content"] == row["response_j"]
    assert record["rejected"][0]["content"] == row["response_k"]
    convert_file(source, tmp_path / "sharegpt.jsonl", "sharegpt")
    convert_file(tmp_path / "sharegpt.jsonl", tmp_path / "back.jsonl", "stack_exchange")
    back = [json.loads(line) for line in (tmp_path / "back.jsonl").read_text(encoding="utf-8").splitlines()]
    assert {key: back[0][key] for key in ("question", "response_j", "response_k")} == row


def test_a_system_prompt_does_not_fit_stack_exchange():
    record = {
        "id": "p",
        "prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
        "chosen": [{"role": "assistant", "content": "a"}],
        "rejected": [{"role": "assistant", "content": "b"}],
    }
    with pytest.raises(DataError, match="record 'p': stack_exchange holds one user question, this prompt has system"):
        preference_to_stack_exchange(record)


def test_trl_rows_with_plain_text_are_read():
    record = trl_pair({"prompt": "2+2?", "chosen": "4", "rejected": "5"}, "x.json record 0")
    assert record["prompt"] == [{"role": "user", "content": "2+2?"}]
    assert record["chosen"] == [{"role": "assistant", "content": "4"}]
    assert record["rejected"] == [{"role": "assistant", "content": "5"}]


def test_bad_preference_rows_name_the_field(tmp_path):
    bad = [{"conversations": [{"from": "human", "value": "q"}], "chosen": {"from": "gpt", "value": ""}, "rejected": {}}]
    with pytest.raises(DataError, match=r'bad\.json record 0, field "chosen\.value": is empty'):
        read_preference(write_json(tmp_path / "bad.json", bad))
    ends_with_answer = [{"prompt": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]
    ends_with_answer[0] |= {"chosen": "c", "rejected": "r"}
    with pytest.raises(DataError, match="the prompt ends with the assistant's turn"):
        read_preference(write_json(tmp_path / "trl.json", ends_with_answer))
    with pytest.raises(DataError, match="not a preference pair"):
        read_preference(write_json(tmp_path / "sft.json", [{"instruction": "q", "output": "a"}]))


PAIRS = [
    {"id": "a", "prompt": [{"role": "user", "content": "2+2?"}], "chosen": [{"role": "assistant", "content": "4"}],
     "rejected": [{"role": "assistant", "content": "5"}], "category": "math"},
    {"id": "b", "prompt": [{"role": "user", "content": "Capital of France?"}],
     "chosen": [{"role": "assistant", "content": "Paris."}], "rejected": [{"role": "assistant", "content": "Lyon."}]},
]  # fmt: skip


def read_rows_of(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("layout", ["sharegpt", "alpaca", "trl_standard", "stack_exchange", "preference"])
def test_canonical_pairs_round_trip_through_every_layout(tmp_path, layout):
    source = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    assert convert_file(source, tmp_path / "out.jsonl", layout) == 2
    convert_file(tmp_path / "out.jsonl", tmp_path / "back.jsonl", "preference")
    assert read_rows_of(tmp_path / "back.jsonl") == PAIRS


def test_trl_standard_rows_are_texts_and_hold_single_questions_only(tmp_path):
    convert_file(write_jsonl(tmp_path / "pairs.jsonl", PAIRS), tmp_path / "std.jsonl", "trl_standard")
    assert read_rows_of(tmp_path / "std.jsonl")[0] == {"id": "a", "prompt": "2+2?", "chosen": "4", "rejected": "5",
                                                       "category": "math"}  # fmt: skip
    source = shared_data("llamafactory", "dpo_en_demo.json")
    with pytest.raises(DataError, match=r"record 'dpo_en_demo-\d+' \(dpo_en_demo\.json:\d+\): trl_standard holds one"):
        convert_file(source, tmp_path / "demo.jsonl", "trl_standard")
    assert not (tmp_path / "demo.jsonl").exists()


def test_anthropic_and_implicit_pairs_convert_to_canonical_and_to_llamafactory(tmp_path):
    hh = [{"chosen": "\n\nHuman: 2+2?\n\nAssistant: 4", "rejected": "\n\nHuman: 2+2?\n\nAssistant: 5"}]
    implicit = [{"chosen": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
                 "rejected": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5"}]}]  # fmt: skip
    for name, rows in (("hh", hh), ("implicit", implicit)):
        source = write_jsonl(tmp_path / f"{name}.jsonl", rows)
        convert_file(source, tmp_path / f"{name}-pref.jsonl", "preference", from_format=name)
        assert read_rows_of(tmp_path / f"{name}-pref.jsonl") == [{"id": f"{name}-0", **{k: PAIRS[0][k] for k in
                                                                 ("prompt", "chosen", "rejected")}}]  # fmt: skip
        convert_file(source, tmp_path / f"{name}-lf.json", "sharegpt")
        row = json.loads((tmp_path / f"{name}-lf.json").read_text(encoding="utf-8"))[0]
        assert row["conversations"] == [{"from": "human", "value": "2+2?"}] and row["rejected"]["value"] == "5"


def test_kto_demo_round_trips_and_pairs_unpair(tmp_path):
    source = shared_data("llamafactory", "kto_en_demo.json")
    convert_file(source, tmp_path / "kto.jsonl", "unpaired")
    convert_file(tmp_path / "kto.jsonl", tmp_path / "lf.json", "sharegpt")
    assert json.loads((tmp_path / "lf.json").read_text(encoding="utf-8"))[0]["kto_tag"] in (True, False)
    assert without_source(load_source(tmp_path / "lf.json")) == without_source(load_source(source))
    pairs = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    assert convert_file(pairs, tmp_path / "unpaired.jsonl", "unpaired") == 4
    labels = [(row["id"], row["label"]) for row in read_rows_of(tmp_path / "unpaired.jsonl")]
    assert labels == [("a-chosen", True), ("a-rejected", False), ("b-chosen", True), ("b-rejected", False)]


def test_cli_converts_llamafactory_ranking_to_preference_jsonl(tmp_path, capsys):
    source = shared_data("llamafactory", "dpo_zh_demo.json")
    result = cli(["data", "convert", source, "--to", "preference", "--out", tmp_path / "pairs.jsonl"], capsys)
    assert result.exit_code == 0 and "300 records written" in result.out
    rows = read_rows_of(tmp_path / "pairs.jsonl")
    assert set(rows[0]) == {"id", "prompt", "chosen", "rejected"} and len(rows) == 300
    result = cli(["data", "convert", tmp_path / "pairs.jsonl", "--to", "alpaca", "--out", tmp_path / "a.json"], capsys)
    assert result.exit_code == 0
    assert without_source(load_source(tmp_path / "a.json")) == without_source(load_source(source))
    sft = write_json(tmp_path / "sft.json", [{"instruction": "q", "output": "a"}])
    result = cli(["data", "convert", sft, "--to", "preference", "--out", tmp_path / "x.jsonl"], capsys)
    assert result.exit_code == 1 and "cannot write SFT conversations in this format" in result.err


# --- file safety --------------------------------------------------------------------------------------------------


def test_refuses_to_overwrite_the_input_or_an_existing_output(tmp_path):
    source = write_json(tmp_path / "in.json", [{"instruction": "q", "output": "a"}])
    with pytest.raises(DataError, match="is the input file"):
        convert_file(source, source, "openai")
    with pytest.raises(DataError, match="is the input file"):
        convert_file(source, tmp_path / "sub" / ".." / "in.json", "openai")
    (tmp_path / "out.jsonl").write_text("keep me", encoding="utf-8")
    with pytest.raises(DataError, match="already exists"):
        convert_file(source, tmp_path / "out.jsonl", "openai")
    assert (tmp_path / "out.jsonl").read_text(encoding="utf-8") == "keep me"
    assert convert_file(source, tmp_path / "out.jsonl", "openai", overwrite=True) == 1
    assert json.loads((tmp_path / "out.jsonl").read_text(encoding="utf-8"))["messages"][0]["content"] == "q"


def test_unknown_target_format_lists_the_choices(tmp_path):
    source = write_json(tmp_path / "in.json", [{"instruction": "q", "output": "a"}])
    with pytest.raises(
        DataError, match="cannot write SFT conversations.*\n  fix: use one of: alpaca, sharegpt, openai"
    ):
        convert_file(source, tmp_path / "out.jsonl", "stack_exchange")
    with pytest.raises(DataError, match="unsupported output file type"):
        convert_file(source, tmp_path / "out.csv", "openai")
