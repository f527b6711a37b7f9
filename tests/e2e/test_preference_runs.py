"""`tunelab run` with the preference stages through the real CLI on the tiny model: the LLaMA-Factory demo sets,
a chain from a finished SFT run, Ctrl-C / STOP then --resume, and bad input."""

from __future__ import annotations

import json

import pytest
import yaml

from helpers import cli, quickstart_records, shared_data, tiny_recipe, write_jsonl
from tunelab.train.stages import STAGES, get_stage

PREFERENCE_STAGES = [name for name in STAGES if get_stage(name).reads in ("preference", "unpaired")]
DEMO = {"kto": "kto_en_demo"}  # the LLaMA-Factory demo set each stage trains on (pairs: dpo_en_demo)


def pair_file(path, count: int, offset: int = 0):
    rows = []
    for index, record in enumerate(quickstart_records("train", offset + count)[offset:]):
        *prompt, answer = record["messages"]
        wrong = {"role": "assistant", "content": "Sure! " + answer["content"][:15]}
        rows.append({"id": f"pair-{offset + index}", "prompt": prompt, "chosen": [answer], "rejected": [wrong]})
    return write_jsonl(path, rows)


def preference_recipe(tmp_path, model, stage: str, **sections):
    path = tiny_recipe(tmp_path, model)
    raw = yaml.safe_load(path.read_text())
    raw |= {"stage": stage, "export": {"verify_prompts": 1}}
    raw["data"] = {"sources": [{"path": str(pair_file(tmp_path / "pairs.jsonl", 16))}], "validation": 0.125,
                   "test": str(pair_file(tmp_path / "test_pairs.jsonl", 4, offset=40)), "max_length": 256}  # fmt: skip
    raw["train"] |= {"max_steps": 2, "per_device_train_batch_size": 2, "eval_steps": 2, "save_steps": 2}
    raw["eval"]["forgetting"] = False
    for key, value in sections.items():
        raw[key] = value if not isinstance(value, dict) else {**raw.get(key, {}), **value}
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("stage", PREFERENCE_STAGES)
def test_each_preference_stage_runs_on_the_llamafactory_demo_sets(tmp_path, tiny_model_dir, capsys, stage):
    registry = shared_data("llamafactory", "dataset_info.json")
    data = {"sources": [], "registry": str(registry), "datasets": [DEMO.get(stage, "dpo_en_demo")],
            "validation": None, "test": None, "max_length": 256}  # fmt: skip
    recipe = preference_recipe(tmp_path, tiny_model_dir, stage, data=data, train={"max_steps": 2})
    result = cli(["run", recipe, "data.sources=[]"], capsys)
    assert result.exit_code == 0, result.err
    run = tmp_path / "runs" / "tiny"
    assert json.loads((run / "status.json").read_text())["state"] == "completed"
    assert json.loads((run / "training.json").read_text())["stage"] == stage


def test_kto_on_unpaired_feedback_is_scored_on_held_out_pairs(tmp_path, tiny_model_dir, capsys):
    from tunelab.data.kinds import unpair
    from tunelab.jsonl import read_jsonl

    unpaired = write_jsonl(tmp_path / "feedback.jsonl", unpair(read_jsonl(pair_file(tmp_path / "p.jsonl", 16))))
    recipe = preference_recipe(tmp_path, tiny_model_dir, "kto")
    result = cli(["run", recipe, f"data.sources.0.path={unpaired}"], capsys)
    assert result.exit_code == 0, result.err
    run = tmp_path / "runs" / "tiny"
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert {"pair_accuracy", "implicit_reward_accuracy"} <= set(metrics["tuned"])
    audit = json.loads((run / "data" / "audit" / "report.json").read_text())
    assert audit["kind"] == "unpaired" and audit["pairs"]["per_set"]["test"]["desirable_share"] == 0.5


def test_dpo_chained_after_sft_stops_resumes_and_reports_its_parent(tmp_path, tiny_model_dir, capsys):
    sft = tiny_recipe(tmp_path, tiny_model_dir, name="sft", train={"max_steps": 2}, eval={"forgetting": False})
    assert cli(["run", sft], capsys).exit_code == 0
    parent = tmp_path / "runs" / "sft"
    recipe = preference_recipe(tmp_path, parent, "dpo", name="dpo", train={"max_steps": 4})
    run = tmp_path / "runs" / "dpo"
    result = cli(["run", recipe], capsys)
    assert result.exit_code == 0, result.err
    report = (run / "eval" / "report.md").read_text()
    assert f"the trained model of run {parent}" in report
    assert "log-probabilities | chosen" in report  # the policy's log-probabilities of each side, first and last
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert "pair_accuracy" in metrics["base"] and "pair_accuracy" in metrics["tuned"]
    assert json.loads((run / "merged" / "verification.json").read_text())["identical_outputs"]


@pytest.mark.parametrize("stage", PREFERENCE_STAGES)
def test_preference_stage_resumes_after_a_stop(tmp_path, tiny_model_dir, capsys, stage):
    from transformers import TrainerCallback

    import tunelab.train.callbacks as callbacks
    import tunelab.train.fit as fit

    recipe = preference_recipe(tmp_path, tiny_model_dir, stage, train={"max_steps": 6})
    run = tmp_path / "runs" / "tiny"

    class StopAtThree(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 3:
                (run / "STOP").touch()

    original = callbacks.standard_callbacks
    fit.standard_callbacks, saved = (lambda r, t, **o: [StopAtThree(), *original(r, t, **o)]), fit.standard_callbacks
    try:
        assert cli(["run", recipe], capsys).exit_code == 130
    finally:
        fit.standard_callbacks = saved
    assert json.loads((run / "status.json").read_text())["state"] == "interrupted"
    assert cli(["run", recipe, "--resume"], capsys).exit_code == 0
    steps = [row["step"] for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in row]
    assert steps == sorted(set(steps)) and steps[-1] == 6  # each step logged once across the two attempts


def test_conversations_under_a_preference_stage_are_a_clear_error(tmp_path, tiny_model_dir, capsys):
    recipe = tiny_recipe(tmp_path, tiny_model_dir, eval={"forgetting": False})
    result = cli(["run", recipe, "stage=dpo"], capsys)
    assert result.exit_code == 1 and "Traceback" not in result.err
    assert "stage dpo reads preference pairs" in result.err


def test_tunelab_score_uses_a_reward_model_run_on_pairs_and_conversations(tmp_path, tiny_model_dir, capsys):
    recipe = preference_recipe(tmp_path, tiny_model_dir, "rm", name="rm", train={"max_steps": 2})
    assert cli(["run", recipe], capsys).exit_code == 0
    run = tmp_path / "runs" / "rm"
    assert (run / "adapter" / "adapter_config.json").is_file()
    verification = json.loads((run / "merged" / "verification.json").read_text())  # adapter + score head, merged
    assert verification["identical_preferences"] and verification["max_abs_score_diff"] < 1e-3
    pairs = tmp_path / "test_pairs.jsonl"
    result = cli(["score", "--model", str(run), "--data", str(pairs), "--out", str(tmp_path / "s.jsonl")], capsys)
    assert result.exit_code == 0, result.err
    assert "4 pairs: the chosen answer scores higher in" in result.out
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and all(isinstance(row["chosen_score"], float) for row in rows)
    # the merged folder is a plain sequence-classification model that scores the same
    result = cli(["score", "--model", str(run / "merged"), "--data", str(pairs), "--out", str(tmp_path / "m.jsonl")],
                 capsys)  # fmt: skip
    assert result.exit_code == 0, result.err
    merged_rows = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    for row, merged in zip(rows, merged_rows, strict=True):
        assert abs(row["chosen_score"] - merged["chosen_score"]) < 1e-3
    refused = cli(["export", run, "--merged", "--out", tmp_path / "rm-merged"], capsys)
    assert refused.exit_code == 1 and "is a reward model" in refused.err and "Traceback" not in refused.err
    conversations = write_jsonl(tmp_path / "conv.jsonl", quickstart_records("test", 3))
    result = cli(["score", "--model", str(run), "--data", str(conversations)], capsys)
    assert result.exit_code == 0 and "3 conversations scored" in result.out
    assert (tmp_path / "conv.scores.jsonl").is_file()
    # the reward model as the judge of an A/B comparison: each answer scored on its own, so both orders agree
    out = tmp_path / "judged"
    args = ["judge", "--a", tiny_model_dir, "--b", tiny_model_dir, "--judge", run, "--data", conversations,
            "--out", out, "--max-new-tokens", "8"]  # fmt: skip
    result = cli(args, capsys)
    assert result.exit_code == 0, result.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["judge"] == f"reward model {run}" and summary["pairs"] == 3 and summary["unparseable"] == 0
    for row in map(json.loads, (out / "verdicts.jsonl").read_text().splitlines()):
        assert "reward of the first answer" in row["a_first"]["raw"]
        assert row["outcome"] in ("win", "tie", "loss")  # never the order-disagreement a text judge can give


@pytest.mark.parametrize("method", ["lora", "full"])
def test_a_reward_model_head_fitted_by_probing_starts_training_ranking_the_pairs(tmp_path, tiny_model_dir, capsys,
                                                                                method):  # fmt: skip
    from tunelab.eval.preference import reward_model_scorer
    from tunelab.model.reward import load_reward_model

    recipe = preference_recipe(tmp_path, tiny_model_dir, "rm", name="rm",
                               train={"max_steps": 1, "learning_rate": 1e-9, "score_head": "probe"})  # fmt: skip
    raw = yaml.safe_load(recipe.read_text())
    recipe.write_text(yaml.safe_dump(raw | {"method": raw["method"] if method == "lora" else {"type": "full"}}))
    assert cli(["run", recipe], capsys).exit_code == 0
    run = tmp_path / "runs" / "rm"
    training = json.loads((run / "training.json").read_text())
    head, dropped = training["score_head"], training.get("pairs_over_max_length", {}).get("train", 0)
    assert head["init"] == "probe" and head["pairs"] == 14 - dropped and head["heads_set"] >= 1
    assert head["train_pair_accuracy"] == 1.0  # a few pairs, 64 features: separable, and the fit found it
    # the trained head is the fitted one (learning rate ~0): the training pairs rank as the probe said
    score = reward_model_scorer(*load_reward_model(str(run)))
    pairs = [json.loads(line) for line in (tmp_path / "pairs.jsonl").read_text().splitlines()]
    trained = set(json.loads((run / "data" / "splits.json").read_text())["train"])
    assert all(score(p["prompt"], p["chosen"]) > score(p["prompt"], p["rejected"]) for p in pairs if p["id"] in trained)


def test_tunelab_score_refuses_a_run_that_is_not_a_reward_model(tmp_path, tiny_model_dir, capsys):
    sft = tiny_recipe(tmp_path, tiny_model_dir, name="sft", train={"max_steps": 1}, eval={"forgetting": False})
    assert cli(["run", sft], capsys).exit_code == 0
    data = pair_file(tmp_path / "p.jsonl", 2)
    result = cli(["score", "--model", str(tmp_path / "runs" / "sft"), "--data", str(data)], capsys)
    assert (
        result.exit_code == 1
        and "is a run of stage sft, not a reward model" in result.err
        and "Traceback" not in result.err
    )


def test_a_dpo_run_killed_mid_training_resumes_from_its_last_checkpoint(tmp_path, tiny_model_dir, capsys):
    """SIGKILL (no chance to clean up) between two checkpoints of a DPO run; --resume continues from the checkpoint,
    logs every step once and finishes with its evaluation and merge."""
    from test_kill_resume import kill_when, resume, start

    train = {"max_steps": 6, "save_steps": 2, "eval_steps": 2, "logging_steps": 1}
    recipe = preference_recipe(tmp_path, tiny_model_dir, "dpo", train=train)
    run, marks = tmp_path / "runs" / "tiny", tmp_path / "marks"
    kill_when(start(recipe, marks, pause_at="step"), marks / "step-5")
    assert (run / "checkpoints" / "checkpoint-4").is_dir()
    assert json.loads((run / "status.json").read_text())["state"] == "running"  # what the killed process last wrote
    resume(recipe, marks)
    steps = [row["step"] for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in row]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert json.loads((run / "status.json").read_text())["state"] == "completed"
    assert json.loads((run / "merged" / "verification.json").read_text())["identical_outputs"]


@pytest.mark.parametrize("method", [{"type": "bottleneck", "size": 8}, {"type": "prompt", "virtual_tokens": 4},
                                    {"type": "prefix", "virtual_tokens": 4}])  # fmt: skip
def test_dpo_trains_methods_other_than_lora(tmp_path, tiny_model_dir, capsys, method):
    """DPO's reference model is the policy with its adapter off: that holds for a bottleneck adapter and for virtual
    tokens too (PEFT's forward adds them; disabled, the base model answers)."""
    recipe = preference_recipe(tmp_path, tiny_model_dir, "dpo", method=method)
    result = cli(["run", recipe, f"method={json.dumps(method)}"], capsys)
    assert result.exit_code == 0, result.err
    run = tmp_path / "runs" / "tiny"
    assert json.loads((run / "status.json").read_text())["state"] == "completed"
    assert json.loads((run / "adapter" / "adapter_config.json").read_text())["peft_type"] != "LORA"
