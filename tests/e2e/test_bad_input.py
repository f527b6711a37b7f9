"""Bad input through the real CLI: a clear error naming file/record/field, a non-zero exit, earlier runs intact."""

from __future__ import annotations

import json

import pytest

from helpers import cli, quickstart_records, tiny_recipe, write_jsonl


def data_override(path) -> str:
    return f"data.sources=[{{path: {path}}}]"


def run_with_data(tmp_path, model_dir, capsys, text: str, name: str = "bad.jsonl"):
    bad = tmp_path / name
    bad.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    recipe = tiny_recipe(tmp_path, model_dir)
    return cli(["run", recipe, data_override(bad)], capsys)


def test_empty_dataset(tmp_path, tiny_model_dir, capsys):
    result = run_with_data(tmp_path, tiny_model_dir, capsys, "")
    assert result.exit_code == 1 and "bad.jsonl" in result.err and "no records" in result.err


def test_malformed_json_line_names_the_line(tmp_path, tiny_model_dir, capsys):
    good = json.dumps(quickstart_records("train", 1)[0])
    result = run_with_data(tmp_path, tiny_model_dir, capsys, f'{good}\n{good}\n{{"messages": [\n')
    assert result.exit_code == 1 and "bad.jsonl line 3" in result.err


def test_record_without_assistant_turn(tmp_path, tiny_model_dir, capsys):
    record = {"messages": [{"role": "user", "content": "hello"}]}
    result = run_with_data(tmp_path, tiny_model_dir, capsys, json.dumps(record) + "\n")
    assert result.exit_code == 1 and "bad.jsonl line 1" in result.err and "assistant" in result.err


def test_wrong_role_names_the_field(tmp_path, tiny_model_dir, capsys):
    record = {"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "beep"}]}
    result = run_with_data(tmp_path, tiny_model_dir, capsys, json.dumps(record) + "\n")
    assert result.exit_code == 1 and "messages[1].role" in result.err and "robot" in result.err


def test_not_utf8(tmp_path, tiny_model_dir, capsys):
    result = run_with_data(tmp_path, tiny_model_dir, capsys, "订单".encode("gbk") + b"\n")
    assert result.exit_code == 1 and "bad.jsonl" in result.err and "UTF-8" in result.err


@pytest.mark.parametrize(
    "override, expected",
    [
        ("train.learning_rat=1", "did you mean learning_rate"),
        ("method.r=sixteen", "method.r"),
        ("data.test=nowhere.jsonl", "file not found"),
    ],
)
def test_recipe_errors_exit_2(tmp_path, tiny_model_dir, capsys, override, expected):
    result = cli(["run", tiny_recipe(tmp_path, tiny_model_dir), override], capsys)
    assert result.exit_code == 2 and expected in result.err and "Traceback" not in result.err


def test_bad_input_never_destroys_an_earlier_run(tmp_path, tiny_model_dir, capsys):
    recipe = tiny_recipe(tmp_path, tiny_model_dir, eval={"base": False}, export={"merge": False})
    assert cli(["run", recipe, "train.max_steps=2", "data.validation=null"], capsys).exit_code == 0
    run = tmp_path / "runs" / "tiny"
    snapshot = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"messages": [{"role": "user", "content": "no answer"}]}])
    for args in (["--overwrite", data_override(bad)], ["--overwrite", "method.r=0"], [data_override(bad)]):
        assert cli(["run", recipe, *args], capsys).exit_code != 0
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == snapshot


def test_unknown_model_is_a_clear_error(tmp_path, tiny_model_dir, capsys):
    result = cli(["run", tiny_recipe(tmp_path, tiny_model_dir), "model.name=no-such-model"], capsys)
    assert result.exit_code == 1 and "no-such-model" in result.err and "built-in alias" in result.err


def test_hub_id_without_network_is_a_clear_error(tmp_path, tiny_model_dir, capsys):
    result = cli(["chat", "someorg/some-model-that-is-not-cached", "--prompt", "hi"], capsys)
    assert result.exit_code == 1 and "hub" in result.err and "Traceback" not in result.err
