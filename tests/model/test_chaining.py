"""`model.name` may name a finished run: a stage chained after another starts from that run's trained model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import tiny_recipe
from tunelab.errors import ModelError
from tunelab.model.load import load_model, resolve_model


def finished_run(tmp_path, tiny_model_dir, **sections):
    from tunelab.recipe import load_recipe
    from tunelab.workflow import run_recipe

    sections = {"train": {"max_steps": 2}, "eval": {"base": False, "forgetting": False}} | sections
    outcome = run_recipe(load_recipe(tiny_recipe(tmp_path, tiny_model_dir, **sections)), log=lambda line: None)
    assert outcome.state == "completed"
    return outcome


def logits(model, ids=(1, 5, 9, 13)) -> torch.Tensor:
    with torch.inference_mode():
        return model(input_ids=torch.tensor([list(ids)])).logits


def test_a_run_with_a_merged_model_starts_the_next_stage_from_it(tmp_path, tiny_model_dir):
    outcome = finished_run(tmp_path, tiny_model_dir)
    assert resolve_model(str(outcome.run.path)).kind == "run"
    model, _, folder = load_model(str(outcome.run.path))
    assert Path(folder) == outcome.run.merged
    assert torch.allclose(logits(model), logits(load_model(str(outcome.run.merged))[0]))


def test_a_run_with_only_an_adapter_is_merged_once_into_a_cached_folder(tmp_path, tiny_model_dir):
    from tunelab.model.load import load_for_inference

    outcome = finished_run(tmp_path, tiny_model_dir, export={"merge": False})
    assert not outcome.run.merged.exists()
    model, _, folder = load_model(str(outcome.run.path))
    assert Path(folder).is_relative_to(tmp_path / "tunelab_home" / "runs")
    adapter_model, _ = load_for_inference(str(tiny_model_dir), str(outcome.run.adapter))
    assert torch.allclose(logits(model), logits(adapter_model), atol=1e-5)
    assert load_model(str(outcome.run.path))[2] == folder  # made once


def test_an_unfinished_run_is_refused_with_the_fix(tmp_path, tiny_model_dir):
    outcome = finished_run(tmp_path, tiny_model_dir)
    outcome.run.set_status("interrupted")
    with pytest.raises(ModelError, match="interrupted, not completed; finish it"):
        load_model(str(outcome.run.path))
