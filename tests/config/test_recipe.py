"""Recipes: strict schema, every problem at once with its YAML path, dotted overrides, shipped recipes valid."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from helpers import cli, tiny_recipe
from tunelab.config.load import apply_overrides
from tunelab.errors import RecipeError
from tunelab.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted(REPO.glob("examples/**/recipe*.yaml"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("recipe", SHIPPED, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_recipe_validates(recipe, capsys):
    result = cli(["validate", recipe], capsys)
    assert result.exit_code == 0, result.err
    assert "valid" in result.out


def test_shipped_recipes_exist():
    assert SHIPPED, "examples/ should ship at least the quickstart recipe"


def test_all_problems_reported_at_once_with_paths(tmp_path, tiny_model_dir, capsys):
    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    result = cli(
        ["validate", recipe, "method.r=sixteen", "train.learning_rat=0.1", "data.sources.0.path=missing.jsonl"],
        capsys,
    )
    assert result.exit_code == 2
    assert "3 problems" in result.err
    assert "method.r:" in result.err and "sixteen" in result.err
    assert "train.learning_rat: unknown key (did you mean learning_rate?)" in result.err
    assert "data.sources[0].path: file not found" in result.err and "missing.jsonl" in result.err
    assert "Traceback" not in result.err


def test_unknown_keys_in_sections_get_suggestions(tmp_path, tiny_model_dir):
    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    with pytest.raises(RecipeError) as error:
        load_recipe(recipe, ["method.alfa=3", "eval.metricz=[exact_match]", "datta=1"])
    text = str(error.value)
    assert "method.alfa: unknown key (did you mean alpha?)" in text
    assert "eval.metricz: unknown key (did you mean metrics?)" in text
    assert "datta: unknown key (did you mean data?)" in text


def test_wrong_types_and_choices(tmp_path, tiny_model_dir):
    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    with pytest.raises(RecipeError) as error:
        load_recipe(recipe, ["train.per_device_train_batch_size=eight", "method.type=lorax", "eval.metrics=[bleu9]"])
    text = str(error.value)
    assert "train.per_device_train_batch_size: expected int" in text
    assert "lorax" in text and "lora, qlora, full, freeze" in text
    assert "eval.metrics.0" in text


def test_impossible_combinations(tmp_path, tiny_model_dir):
    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    with pytest.raises(RecipeError) as error:
        load_recipe(recipe, ["data.validation=null", "train.early_stopping_patience=2", "data.registry=null"])
    assert "train.early_stopping_patience: early stopping needs validation data" in str(error.value)
    with pytest.raises(RecipeError) as error:
        load_recipe(recipe, ["data.datasets=[alpaca_en_demo]"])
    assert "data.datasets: names a registry's datasets but data.registry is not set" in str(error.value)
    with pytest.raises(RecipeError) as error:
        load_recipe(recipe, ["train.score_head=probe"])  # an sft recipe
    assert "train.score_head: a reward model's head (stage: rm); stage sft has none" in str(error.value)
    with pytest.raises(RecipeError) as error:
        load_recipe(recipe, ["stage=rm", "train.score_head=linear"])
    assert "train.score_head: 'linear' is not a choice: random (a new head) or probe" in str(error.value)


def test_inconsistent_trainer_settings_are_caught_by_sft_config(tmp_path, tiny_model_dir):
    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    with pytest.raises(RecipeError) as error:
        load_recipe(recipe, ["train.lr_scheduler_type=not-a-scheduler"])
    assert "train" in str(error.value)


def test_reserved_train_keys(tmp_path, tiny_model_dir):
    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    with pytest.raises(RecipeError) as error:
        load_recipe(recipe, ["train.output_dir=/tmp/x", "train.max_length=12"])
    assert "train.output_dir" in str(error.value) and "data.max_length" in str(error.value)


def test_overrides_parse_yaml_values_and_reject_garbage():
    raw = {"train": {"max_steps": 1}, "data": {"sources": [{"path": "a"}]}}
    apply_overrides(
        raw, ["train.max_steps=20", "train.bf16=false", "data.sources.0.path=b.jsonl", "eval.limit=null"], "r"
    )
    assert raw["train"] == {"max_steps": 20, "bf16": False}
    assert raw["data"]["sources"][0]["path"] == "b.jsonl" and raw["eval"] == {"limit": None}
    with pytest.raises(RecipeError) as error:
        apply_overrides(raw, ["no_equals_sign", "data.sources.5.path=x"], "r")
    assert "section.key=value" in str(error.value) and "not an index" in str(error.value)


def test_exponent_floats_without_a_dot_are_numbers(tmp_path, tiny_model_dir):
    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    recipe.write_text(recipe.read_text().replace("learning_rate: 0.005", "learning_rate: 5e-3"))
    assert "5e-3" in recipe.read_text()
    assert load_recipe(recipe, ["train.weight_decay=1e-2"]).train["learning_rate"] == 0.005


def test_malformed_yaml_names_the_line(tmp_path):
    path = write(tmp_path, "name: x\ndata:\n  sources: [\n")
    with pytest.raises(RecipeError) as error:
        load_recipe(path)
    assert "YAML syntax error" in str(error.value) and "line" in str(error.value)


def test_missing_and_empty_recipe(tmp_path, capsys):
    assert cli(["validate", tmp_path / "nope.yaml"], capsys).exit_code == 2
    result = cli(["validate", write(tmp_path, "")], capsys)
    assert result.exit_code == 2 and "empty" in result.err


def test_relative_paths_resolve_against_the_recipe_folder(tmp_path, tiny_model_dir, monkeypatch):
    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    raw = yaml.safe_load(recipe.read_text())
    raw["data"]["sources"][0]["path"] = "train.jsonl"
    raw["data"]["test"] = "test.jsonl"
    recipe.write_text(yaml.safe_dump(raw))
    monkeypatch.chdir("/")
    loaded = load_recipe(recipe)
    assert loaded.data.sources[0].path == str(tmp_path / "train.jsonl")


@pytest.mark.parametrize("method", ["lora", "full"])
def test_a_runs_saved_recipe_runs_again_as_it_is(tmp_path, tiny_model_dir, method):
    """`tunelab run runs/<name>/recipe.yaml --resume` (and the UI's Resume button) read what the run saved: every
    default written out plus bookkeeping keys; for a full fine-tune that once included `export.merge: true`, refused."""
    from tunelab.runs import RunDir
    from tunelab.workflow import saved_recipe

    path = tiny_recipe(tmp_path, tiny_model_dir)
    if method == "full":
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        path.write_text(yaml.safe_dump(raw | {"method": {"type": "full"}, "export": {}}), encoding="utf-8")
    recipe = load_recipe(path)
    run = RunDir(tmp_path / "runs" / "saved")
    run.path.mkdir(parents=True)
    run.write_recipe(saved_recipe(recipe), {"tunelab": "test"})
    assert "_versions" in yaml.safe_load((run.path / "recipe.yaml").read_text(encoding="utf-8"))
    again = load_recipe(run.path / "recipe.yaml")
    assert again.model_dump() == recipe.model_dump() | {"export": again.export.model_dump()}
    assert again.export.merge is (method == "lora")
