"""Unit tests of the Chat tab's helpers: the pickers' targets, the sampling form, the history, the streamed answer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tunelab.ui.chat_models import ModelCache, plain_history, sampling_of, stream_reply
from tunelab.ui.chat_targets import BASE_PREFIX, describe, resolve_pick, target_choices
from tunelab.ui.workspace import UIError, Workspace


def fake_run(workspace: Workspace, name: str, adapter: bool = True) -> Path:
    """A run directory as far as the pickers look: its recipe (base `models/tiny`) and maybe an adapter config."""
    run = workspace.runs / name
    (run / "data").mkdir(parents=True)
    (run / "recipe.yaml").write_text(yaml.safe_dump({"name": name, "model": {"name": "models/tiny"}}))
    (run / "data" / "summary.json").write_text(json.dumps({"system_prompt": "Answer in JSON."}))
    if adapter:
        (run / "adapter").mkdir()
        (run / "adapter" / "adapter_config.json").write_text("{}")
    return run


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    space = Workspace.open(tmp_path / "space")
    (space.root / "models" / "tiny").mkdir(parents=True)
    (space.root / "models" / "tiny" / "config.json").write_text("{}")
    return space


def test_picks_resolve_inside_the_workspace_only(workspace, tmp_path):
    run = fake_run(workspace, "orders")
    target = resolve_pick(workspace, "runs/orders")
    assert (target.base, target.adapter) == (str(workspace.root / "models" / "tiny"), str(run / "adapter"))
    assert "LoRA adapter on `models/tiny`" in describe(workspace, target)
    base = resolve_pick(workspace, BASE_PREFIX + "runs/orders")
    assert (base.base, base.adapter, base.run) == (str(workspace.root / "models" / "tiny"), None, None)
    assert resolve_pick(workspace, "smollm2-135m-instruct").base == "smollm2-135m-instruct"
    with pytest.raises(UIError, match="outside the workspace"):
        resolve_pick(workspace, str(tmp_path))
    with pytest.raises(UIError, match="does not exist"):
        resolve_pick(workspace, "models/none")
    with pytest.raises(UIError, match="no model is picked"):
        resolve_pick(workspace, " ")


def test_a_run_without_a_model_is_refused_in_words(workspace):
    fake_run(workspace, "early", adapter=False)
    with pytest.raises(Exception, match="no trained model yet"):
        resolve_pick(workspace, "runs/early")


def test_the_pickers_list_runs_their_bases_and_model_folders(workspace):
    fake_run(workspace, "orders")
    values = [value for _, value in target_choices(workspace)]
    assert values[:3] == ["runs/orders", BASE_PREFIX + "runs/orders", "models/tiny"]
    assert "runs/orders/adapter" not in values  # a run is picked as itself
    assert "smollm2-135m-instruct" in values


def test_sampling_settings_are_checked():
    sampling = sampling_of(0.7, 0.9, 64, "")
    assert (sampling.temperature, sampling.top_p, sampling.max_tokens, sampling.seed) == (0.7, 0.9, 64, None)
    assert sampling_of(0, 1, 8, " 12 ").seed == 12
    for bad, words in (((3, 1, 8, ""), "temperature"), ((1, 0, 8, ""), "top_p"), ((1, 1, 0, ""), "max new tokens"),
                       ((1, 1, 8, "-1"), "seed"), ((1, 1, 8, "x"), "must be numbers")):  # fmt: skip
        with pytest.raises(UIError, match=words):
            sampling_of(*bad)


def test_history_becomes_plain_messages():
    history = [{"role": "user", "content": [{"type": "text", "text": "hi"}], "metadata": None},
               {"role": "assistant", "content": "hello"}, {"role": "system", "content": "ignored"}]  # fmt: skip
    assert plain_history(history) == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert plain_history(None) == []


def test_answers_stream_and_a_seed_repeats_them(tiny_model_dir):
    from tunelab.model.targets import Target

    cache = ModelCache(size=1)
    target = Target("tiny", str(tiny_model_dir), None, None)
    loaded = cache.get(target)
    assert cache.holds(target) and cache.get(target) is loaded
    messages = [{"role": "user", "content": "Two red shirts for Alice"}]
    steps = [reply.text for reply in stream_reply(loaded, messages, sampling_of(1, 1, 12, "7"))]
    again = [reply.text for reply in stream_reply(loaded, messages, sampling_of(1, 1, 12, "7"))]
    assert steps == again and len(steps) >= 2
    assert all(steps[i + 1].startswith(steps[i].rstrip("\ufffd")) for i in range(len(steps) - 2))
