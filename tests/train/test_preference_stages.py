"""Every preference stage trains on the tiny model and is evaluated on held-out pairs, through the shared `fit`."""

from __future__ import annotations

import json

import pytest
import yaml

from helpers import quickstart_records, tiny_recipe
from tunelab.data.pipeline import RecipeData
from tunelab.errors import DataError
from tunelab.train.stages import STAGES, get_stage

PREFERENCE_STAGES = [name for name in STAGES if get_stage(name).reads in ("preference", "unpaired")]


def pairs(count: int) -> list[dict]:
    """Quickstart records as pairs: the reference answer chosen, a chatty cut-off answer rejected."""
    out = []
    for index, record in enumerate(quickstart_records("train", count)):
        *prompt, answer = record["messages"]
        wrong = {"role": "assistant", "content": "Sure! Here it is: " + answer["content"][:12]}
        out.append({"id": f"p{index}", "prompt": prompt, "chosen": [answer], "rejected": [wrong], "category": "x"})
    return out


def load(tmp_path, tiny_model_dir, stage: str, method: str = "lora", train: dict | None = None):
    from tunelab.recipe import load_recipe

    path = tiny_recipe(tmp_path, tiny_model_dir)
    raw = yaml.safe_load(path.read_text())
    raw |= {"stage": stage, "export": {"verify_prompts": 1}}
    raw["method"] = raw["method"] if method == "lora" else {"type": method}
    raw["train"] |= {"max_steps": 2, "per_device_train_batch_size": 2} | (train or {})
    raw["eval"]["forgetting"] = False
    path.write_text(yaml.safe_dump(raw))
    return load_recipe(path)


def train_and_evaluate(tmp_path, tiny_model_dir, stage_name: str, method: str = "lora"):
    from tunelab.data.tokenize import ensure_chat_template
    from tunelab.model.load import load_model
    from tunelab.runs import RunDir
    from tunelab.train.fit import fit

    recipe = load(tmp_path, tiny_model_dir, stage_name, method)
    model, tokenizer, _ = load_model(recipe.model.name)
    ensure_chat_template(tokenizer)
    stage = get_stage(stage_name)
    records = pairs(16)
    splits = stage.build_datasets(
        RecipeData({"train": records[:12], "test": records[12:]}, {}, []), recipe, tokenizer, []
    )
    run = RunDir.prepare(tmp_path / "runs" / stage_name, resume=False, overwrite=True)
    base = stage.evaluate(model, tokenizer, splits.test_records, recipe, run.eval_dir, "base")
    result = fit(stage, recipe, run, model, tokenizer, splits)
    tuned = stage.evaluate(result.model, tokenizer, splits.test_records, recipe, run.eval_dir, "tuned")
    return run, result, base, tuned


@pytest.mark.parametrize("stage_name", PREFERENCE_STAGES)
def test_each_preference_stage_trains_and_is_evaluated_on_pairs(tmp_path, tiny_model_dir, stage_name):
    run, result, base, tuned = train_and_evaluate(tmp_path, tiny_model_dir, stage_name)
    training = json.loads((run.path / "training.json").read_text())
    assert result.global_step == 2 and training["completed"] and training["stage"] == stage_name
    losses = [row["loss"] for row in run.metrics() if "loss" in row]
    assert len(losses) == 2 and all(loss == loss for loss in losses)  # logged, not NaN
    for metrics in (base, tuned):
        assert 0 <= metrics["pair_accuracy"] <= 1 and metrics["length_rule"] == 1.0  # chosen is longer
    rows = [json.loads(line) for line in (run.eval_dir / "predictions_tuned.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all("pair_accuracy" in row["scores"] for row in rows)
    if get_stage(stage_name).produces == "policy":
        assert "exact_match" in tuned  # the generation metrics on the prompts, the chosen answer as reference
        assert "reference" in training
    # the implicit reward log π − log π_ref, for the tuned adapter of the stages trained against a reference
    assert ("implicit_reward_accuracy" in tuned) == (stage_name in ("dpo", "kto"))
    assert "implicit_reward_accuracy" not in base


def test_the_reward_model_learns_the_pairs_and_saves_its_score_head(tmp_path, tiny_model_dir):
    run, result, base, tuned = train_and_evaluate(tmp_path, tiny_model_dir, "rm", method="full")
    assert type(result.model).__name__.endswith("ForSequenceClassification")
    assert (run.merged / "config.json").is_file()
    assert result.model.config.num_labels == 1
    assert tuned["pair_accuracy"] >= base["pair_accuracy"]


def test_dpo_with_a_full_model_keeps_a_frozen_reference(tmp_path, tiny_model_dir):
    run, result, _, _ = train_and_evaluate(tmp_path, tiny_model_dir, "dpo", method="full")
    assert json.loads((run.path / "training.json").read_text())["reference"] == "a frozen copy of the starting model"


def test_conversations_given_to_a_preference_stage_are_refused_clearly(tmp_path, tiny_model_dir):
    from tunelab.model.load import load_tokenizer

    recipe = load(tmp_path, tiny_model_dir, "dpo")
    records = quickstart_records("train", 4)
    with pytest.raises(DataError) as caught:
        get_stage("dpo").build_datasets(
            RecipeData({"train": records}, {}, []), recipe, load_tokenizer(str(tiny_model_dir)), []
        )
    assert "stage dpo reads preference pairs" in str(caught.value) and "stage: sft" in str(caught.value)


def test_simpo_refuses_another_loss_type_instead_of_overriding_it(tmp_path, tiny_model_dir):
    from tunelab.errors import RecipeError

    with pytest.raises(RecipeError) as raised:
        load(tmp_path, tiny_model_dir, "simpo", train={"loss_type": "sigmoid"})
    assert "train.loss_type" in str(raised.value) and "stage cpo" in str(raised.value)
    assert load(tmp_path, tiny_model_dir, "simpo", train={"loss_type": "simpo"}).train["loss_type"] == "simpo"
