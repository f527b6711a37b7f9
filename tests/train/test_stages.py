"""Stages and methods are tables: the registry is the only dispatch, and it agrees with the recipe schema."""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from pathlib import Path

import pytest
import yaml

import tunelab
from helpers import cli, tiny_recipe
from tunelab.config.schema import StageName, method_sections
from tunelab.model.methods import METHODS
from tunelab.train.stages import STAGES, get_stage

WORKFLOW = Path(tunelab.__file__).parent / "workflow.py"


def test_the_registry_and_the_schema_name_the_same_stages():
    assert list(STAGES) == list(typing.get_args(StageName))
    for name in STAGES:
        stage = get_stage(name)
        assert stage.name == name and stage.produces in ("policy", "reward_model")
        assert dataclasses.is_dataclass(stage.config_class())  # a TRL config class the train section is checked against


def test_the_method_table_and_the_schema_name_the_same_methods():
    assert set(METHODS) == set(method_sections())
    for name, spec in METHODS.items():
        assert spec.name == name and spec.saves in ("adapter", "model")
        assert not spec.can_merge or spec.saves == "adapter"  # only an adapter has a base model to merge into


def test_the_workflow_names_no_stage_and_no_method():
    source = WORKFLOW.read_text(encoding="utf-8")
    code = re.sub(r'""".*?"""|#[^\n]*', "", source, flags=re.S)  # docstrings and comments may explain
    for name in [*STAGES, *METHODS]:
        assert not re.search(rf"\b{name}\b", code), f"workflow.py names {name!r}: dispatch through the tables instead"


def test_an_unknown_stage_is_refused_with_the_choices(tmp_path, tiny_model_dir, capsys):
    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    result = cli(["validate", recipe, "stage=dpoo"], capsys)
    assert result.exit_code == 2 and "Traceback" not in result.err
    assert "stage" in result.err and "'sft'" in result.err


def test_a_new_stage_needs_only_a_registry_entry(tmp_path, tiny_model_dir, monkeypatch):
    """A toy stage that trains with SFT under another name runs the whole workflow without any change elsewhere."""
    from tunelab.recipe import load_recipe
    from tunelab.workflow import run_recipe

    sft = get_stage("sft")
    calls: list[str] = []

    def counted(hook_name: str):
        hook = getattr(sft, hook_name)

        def call(*args, **kwargs):
            calls.append(hook_name)
            return hook(*args, **kwargs)

        return call

    hooks = ("build_datasets", "build_trainer", "evaluate", "test_warnings")
    toy = dataclasses.replace(sft, name="toy", **{hook: counted(hook) for hook in hooks})
    monkeypatch.setitem(STAGES, "toy", lambda: toy)
    recipe = load_recipe(tiny_recipe(tmp_path, tiny_model_dir, train={"max_steps": 2}, eval={"forgetting": False}))
    outcome = run_recipe(recipe.model_copy(update={"stage": "toy"}), log=lambda line: None)

    assert outcome.state == "completed"
    evaluations = ["evaluate"] * 4  # base, zero-shot and k-shot (sft's prompted baselines), tuned
    assert sorted(calls) == sorted(["build_datasets", "test_warnings", "build_trainer", *evaluations])
    training = json.loads((outcome.run.path / "training.json").read_text())
    assert training["stage"] == "toy" and training["completed"] and training["global_step"] == 2
    assert set(outcome.metrics) == {"base", "zero_shot", "k_shot", "tuned"}
    assert outcome.merge_check is not None and outcome.merge_check["identical_outputs"]


@pytest.mark.parametrize("method", sorted(METHODS))
def test_each_method_saves_where_its_entry_says(tmp_path, tiny_model_dir, method):
    from tunelab.recipe import load_recipe
    from tunelab.workflow import run_recipe

    path = tiny_recipe(tmp_path, tiny_model_dir, train={"max_steps": 1}, eval={"base": False, "forgetting": False})
    raw = yaml.safe_load(path.read_text())
    raw["method"] = {"type": method} | ({"trainable_layers": 1} if method == "freeze" else {})
    raw["export"] = {"verify_prompts": 1}  # merge left at its default: on, and a no-op for a full model
    path.write_text(yaml.safe_dump(raw))
    recipe = load_recipe(path)
    outcome = run_recipe(recipe, log=lambda line: None)
    spec = METHODS[method]
    assert spec.saved_marker(outcome.run).is_file()
    assert (outcome.run.merged / "verification.json").is_file() == spec.can_merge


def test_the_bradley_terry_probe_finds_the_direction_that_ranks_the_pairs():
    import torch

    from tunelab.train.score_probe import _scored_positions, fit_bradley_terry

    generator = torch.Generator().manual_seed(0)
    direction = torch.randn(16, generator=generator)
    differences = torch.randn(400, 16, generator=generator)
    differences *= torch.sign(differences @ direction).unsqueeze(1)  # every chosen side ahead along `direction`
    weight = fit_bradley_terry(differences)
    assert ((differences @ weight) > 0).float().mean() == 1.0
    assert torch.nn.functional.cosine_similarity(weight, direction, dim=0) > 0.9
    # the position a sequence classifier reads: the last token that is not padding (pad id 0 here)
    assert _scored_positions(torch.tensor([[5, 6, 7, 0, 0], [5, 6, 7, 8, 9]]), 0).tolist() == [2, 4]
