"""`tunelab data preview` and recipes that read LLaMA-Factory registries and ShareGPT files."""

from __future__ import annotations

import yaml

from helpers import cli, shared_data, tiny_recipe


def registry_recipe(tmp_path, model_dir, datasets):
    recipe = tiny_recipe(tmp_path, model_dir)
    raw = yaml.safe_load(recipe.read_text())
    raw["data"] = {
        "registry": str(shared_data("llamafactory", "dataset_info.json")),
        "datasets": datasets,
        "validation": 0.1,
        "max_length": 128,
    }
    raw["eval"] = {"base": False}
    recipe.write_text(yaml.safe_dump(raw))
    return recipe


def test_preview_marks_exactly_the_assistant_answer(tmp_path, tiny_model_dir, capsys):
    result = cli(["data", "preview", tiny_recipe(tmp_path, tiny_model_dir), "--index", "2"], capsys)
    assert result.exit_code == 0, result.err
    assert "trained" in result.out and "<|im_start|>assistant" in result.out and '"customer"' in result.out


def test_preview_index_out_of_range(tmp_path, tiny_model_dir, capsys):
    result = cli(["data", "preview", tiny_recipe(tmp_path, tiny_model_dir), "--index", "999"], capsys)
    assert result.exit_code == 1 and "out of range" in result.err


def test_registry_recipe_validates_and_previews(tmp_path, tiny_model_dir, capsys):
    recipe = registry_recipe(tmp_path, tiny_model_dir, ["alpaca_en_demo", "alpaca_zh_demo", "identity"])
    assert cli(["validate", recipe], capsys).exit_code == 0
    result = cli(["data", "preview", recipe, "--index", "1500"], capsys)  # a record from alpaca_zh_demo
    assert result.exit_code == 0, result.err
    assert "alpaca_zh_demo" in result.out


def test_registry_toolcall_data_trains(tmp_path, tiny_model_dir, capsys):
    recipe = registry_recipe(tmp_path, tiny_model_dir, ["glaive_toolcall_en_demo"])
    result = cli(["run", recipe, "train.max_steps=2", "data.validation=null", "export.merge=false"], capsys)
    assert result.exit_code == 0, result.err
    summary = (tmp_path / "runs" / "tiny" / "data" / "summary.json").read_text()
    assert '"total": 300' in summary


def test_unknown_registry_name_suggests_the_close_one(tmp_path, tiny_model_dir, capsys):
    recipe = registry_recipe(tmp_path, tiny_model_dir, ["alpaca_en_dmo"])
    result = cli(["validate", recipe], capsys)  # found by validate, before anything runs
    assert result.exit_code == 2 and "data.datasets" in result.err and "alpaca_en_demo" in result.err


def test_sharegpt_multi_turn_file_trains(tmp_path, tiny_model_dir, capsys):
    source = shared_data("fastchat_sft", "dummy_conversation.json")
    recipe = tiny_recipe(tmp_path, tiny_model_dir, eval={"base": False}, export={"merge": False})
    args = ["run", recipe, f"data.sources=[{{path: {source}, format: sharegpt, limit: 40}}]", "train.max_steps=2"]
    result = cli(args, capsys)
    assert result.exit_code == 0, result.err
