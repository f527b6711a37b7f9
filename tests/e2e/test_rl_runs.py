"""`tunelab run` with the RL stages (grpo, rloo) through the real CLI on the tiny model: on conversations and on
preference pairs, the curves they log, a stop and --resume, rewards that fail, and recipes that are wrong."""

from __future__ import annotations

import json

import pytest
import yaml

from helpers import cli, quickstart_records, shared_data, tiny_recipe
from tunelab.config.schema import RL_STAGES

REWARDS = [{"type": "json_valid"}, {"type": "field_accuracy", "weight": 2.0}]
STAGE_TRAIN = {  # each stage's own settings: a KL term in each, so that every stage logs one
    "grpo": {"num_generations": 4, "beta": 0.04},
    "rloo": {"num_generations": 4, "beta": 0.04},
    "ppo": {
        "num_ppo_epochs": 2,
        "num_mini_batches": 2,
        "num_generations": 2,
        "kl_coef": 0.05,
        "value_learning_rate": 3e-4,
    },
}


def rl_recipe(tmp_path, model, stage: str, **sections):
    path = tiny_recipe(tmp_path, model)
    raw = yaml.safe_load(path.read_text())
    raw |= {"stage": stage, "reward": REWARDS, "export": {"verify_prompts": 1}}
    raw["data"]["validation"] = None
    raw["train"] = {"max_steps": 2, "learning_rate": 1e-4, "logging_steps": 1, "save_steps": 2, "bf16": False,
                    "per_device_train_batch_size": 4} | STAGE_TRAIN[stage]  # fmt: skip
    raw["eval"] |= {"forgetting": False, "max_new_tokens": 12}
    for key, value in sections.items():
        raw[key] = value if not isinstance(value, dict) else {**raw.get(key, {}), **value}
    path.write_text(yaml.safe_dump(raw))
    return path


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("stage", RL_STAGES)
def test_each_rl_stage_runs_and_logs_its_curves(tmp_path, tiny_model_dir, capsys, stage):
    recipe = rl_recipe(tmp_path, tiny_model_dir, stage)
    result = cli(["run", recipe], capsys)
    assert result.exit_code == 0, result.err
    run = tmp_path / "runs" / "tiny"
    assert json.loads((run / "status.json").read_text())["state"] == "completed"
    training = json.loads((run / "training.json").read_text())
    assert training["stage"] == stage and "adapter disabled" in training["reference"]
    assert training["padding_free"] and training["attention"] == "tunelab_packed_sdpa"  # each prompt computed once
    assert training["rollout_tokens"] > 0 and 0 < training["rollout_share"] < 1  # the time sampling took
    assert training["tokens_seen"] > training["rollout_tokens"] and training["real_tokens_per_second"] > 0
    rows = [row for row in metrics(run) if "loss" in row]
    assert [row["step"] for row in rows] == [1, 2]
    assert rows[0]["tokens_per_second"] > 0  # prompt and completion tokens of the rollouts, as TRL counts them
    for key in ("reward", "rewards/json_valid/mean", "rewards/field_accuracy/mean", "completions/mean_length", "kl"):
        assert all(key in row for row in rows), key
    assert (run / "plots" / "rl.png").is_file()
    samples = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
    assert samples and {"json_valid", "field_accuracy"} == set(samples[0]["rewards"]) and samples[0]["prompt"]
    report = (run / "eval" / "report.md").read_text()
    assert "## Reward, KL, entropy, clipping, length" in report and "Sampled answers at step" in report
    tuned = json.loads((run / "eval" / "report_tuned.json").read_text())["metrics"]
    assert tuned["field_accuracy"] is not None
    # the recipe's rewards on the greedy held-out answers, base and tuned, compared record by record
    predictions = [json.loads(line) for line in (run / "eval" / "predictions_tuned.jsonl").read_text().splitlines()]
    expected = [r["scores"]["json_validity"] + 2.0 * r["scores"]["field_accuracy"]["correct"]
                / r["scores"]["field_accuracy"]["total"] for r in predictions]  # fmt: skip
    assert [r["scores"]["reward"] for r in predictions] == pytest.approx(expected, abs=1e-6)
    assert tuned["reward"] == pytest.approx(sum(expected) / len(expected), abs=1e-6)
    comparison = json.loads((run / "eval" / "comparison.json").read_text())
    assert "reward" in comparison["metrics"] and len(comparison["metrics"]["reward"]["ci95"]) == 2
    reward_row = next(line for line in report.splitlines() if line.startswith("| reward |"))
    assert "%" not in reward_row and "pts" not in reward_row  # in the rewards' own units


def test_grpo_on_the_llamafactory_demo_pairs(tmp_path, tiny_model_dir, capsys):
    """Preference pairs serve as prompts, their chosen answer as the reference (json_valid needs none)."""
    registry = shared_data("llamafactory", "dataset_info.json")
    data = {"sources": [], "registry": str(registry), "datasets": ["dpo_en_demo"], "validation": None, "test": None,
            "max_length": 256}  # fmt: skip
    recipe = rl_recipe(tmp_path, tiny_model_dir, "grpo", data=data, reward=[{"type": "max_words", "max_words": 5}],
                       eval={"base": False})  # fmt: skip
    result = cli(["run", recipe], capsys)
    assert result.exit_code == 0, result.err


def test_ppo_value_warmup_trains_the_value_model_alone(tmp_path, tiny_model_dir, capsys):
    from safetensors.torch import load_file

    module = tmp_path / "lengths.py"  # a reward the tiny model's answers differ in (their lengths): a value to learn
    module.write_text("def length(completion_ids, **_):\n    return [len(ids) / 10 for ids in completion_ids]\n")
    rewards = [{"type": "python", "function": f"{module}:length"}]
    recipe = rl_recipe(tmp_path, tiny_model_dir, "ppo", train={"value_warmup": 1}, reward=rewards)  # 1st batch: 2 steps
    assert cli(["run", recipe], capsys).exit_code == 0
    run = tmp_path / "runs" / "tiny"
    rows = [row for row in metrics(run) if "loss" in row]
    assert [row["ppo/value_warmup"] for row in rows] == [1.0, 1.0] and rows[0]["value/loss"] > 0
    policy = load_file(run / "adapter" / "adapter_model.safetensors")
    lora_b = [tensor for name, tensor in policy.items() if "lora_B" in name]
    assert lora_b and all(not tensor.any() for tensor in lora_b)  # LoRA B starts at 0: the policy never moved


@pytest.mark.parametrize("stage", ["grpo", "ppo"])
def test_an_rl_stage_resumes_after_a_stop(tmp_path, tiny_model_dir, capsys, stage):
    from transformers import TrainerCallback

    import tunelab.train.callbacks as callbacks
    import tunelab.train.fit as fit

    recipe = rl_recipe(tmp_path, tiny_model_dir, stage, train={"max_steps": 4})
    run = tmp_path / "runs" / "tiny"

    class StopAtTwo(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 2:
                (run / "STOP").touch()

    original = callbacks.standard_callbacks
    fit.standard_callbacks, saved = (lambda r, t, **o: [StopAtTwo(), *original(r, t, **o)]), fit.standard_callbacks
    try:
        assert cli(["run", recipe], capsys).exit_code == 130
    finally:
        fit.standard_callbacks = saved
    if stage == "ppo":  # the value model (a second adapter with its head) is in the checkpoint
        assert (run / "checkpoints" / "checkpoint-2" / "value" / "adapter_model.safetensors").is_file()
    assert cli(["run", recipe, "--resume"], capsys).exit_code == 0
    steps = [row["step"] for row in metrics(run) if "loss" in row]
    assert steps == [1, 2, 3, 4]
    assert not (run / "adapter" / "value").exists()  # the policy alone is saved


def test_a_reward_that_fails_names_itself_and_the_record(tmp_path, tiny_model_dir, capsys):
    module = tmp_path / "rewards.py"
    module.write_text("def picky(prompts, completions, completion_ids, reference, id, **kwargs):\n"
                      "    return [float('nan')] * len(completions)\n", encoding="utf-8")  # fmt: skip
    recipe = rl_recipe(tmp_path, tiny_model_dir, "grpo", reward=[{"type": "python", "function": f"{module}:picky"}])
    result = cli(["run", recipe], capsys)
    assert result.exit_code == 1 and "Traceback" not in result.err
    # the rewards score the base model's held-out answers first (the reward row), so it fails before any training
    ids = {record["id"] for record in quickstart_records("test", 48)}
    named = result.err.split("reward picky returned nan for record '")[1].split("'")[0]
    assert named in ids and "a reward is a finite number" in result.err
    assert json.loads((tmp_path / "runs" / "tiny" / "status.json").read_text())["state"] == "failed"
    assert not list((tmp_path / "runs" / "tiny").glob("checkpoints/checkpoint-*"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"reward": []}, "reward: stage grpo scores its samples with rewards"),
        ({"reward": [{"type": "json_vald"}]}, "reward.0.type: unknown choice 'json_vald'; choose json_valid"),
        ({"reward": [{"type": "regex", "patern": "x"}]}, "reward.0.patern: unknown key (did you mean pattern?)"),
        ({"reward": [{"type": "regex", "pattern": "("}]}, "reward[0]: pattern '(' is not a regular expression"),
        ({"reward": [{"type": "json_schema", "json_schema": "missing.json"}]}, "reward[0].json_schema: file not found"),
        ({"reward": [{"type": "python", "function": "missing.py:f"}]}, "reward[0].function: file not found"),
        ({"stage": "sft"}, "reward: stage sft does not use rewards"),
        ({"train": {"reward_weights": [1.0]}}, "train.reward_weights: set `weight:` on each entry of reward:"),
        (
            {"stage": "ppo", "train": {"max_steps": 2}, "method": {"type": "full"}},
            "method.type: stage ppo trains a LoRA policy",
        ),
        ({"stage": "ppo", "train": {"num_generations": 0}}, "train.num_generations: must be 1 or more, got 0"),
        (
            {"stage": "ppo", "train": {"per_device_train_batch_size": 2, "num_mini_batches": 4}},
            "train.num_mini_batches: 4 minibatches of a rollout batch of 2 prompts",
        ),
    ],
)
def test_bad_rl_recipes_are_clear_errors(tmp_path, tiny_model_dir, capsys, change, message):
    recipe = rl_recipe(tmp_path, tiny_model_dir, "grpo")
    raw = yaml.safe_load(recipe.read_text())
    for key, value in change.items():
        raw[key] = value
    recipe.write_text(yaml.safe_dump(raw))
    result = cli(["validate", recipe], capsys)
    assert result.exit_code == 2 and "Traceback" not in result.err
    assert message in result.err, result.err


def test_a_reward_model_reward_must_be_a_reward_model(tmp_path, tiny_model_dir, capsys):
    recipe = rl_recipe(tmp_path, tiny_model_dir, "grpo", reward=[{"type": "reward_model", "run": str(tiny_model_dir)}])
    result = cli(["validate", recipe], capsys)
    assert result.exit_code == 2
    assert "is not a reward model (a run of stage: rm, or a folder with a scalar head)" in result.err


def test_ppo_value_model_starts_at_the_mean_score_and_learns_at_its_own_rate(tmp_path, tiny_model_dir, capsys):
    import torch
    from safetensors.torch import load_file

    rewards = [{"type": "regex", "pattern": "[a-z]"}, {"type": "json_valid"}]  # the tiny model's answers: some letters
    recipe = rl_recipe(tmp_path, tiny_model_dir, "ppo", train={"value_learning_rate": 3e-4}, reward=rewards)
    assert cli(["run", recipe], capsys).exit_code == 0
    run = tmp_path / "runs" / "tiny"
    checkpoint = run / "checkpoints" / "checkpoint-2"
    optimizer = torch.load(checkpoint / "optimizer.pt", weights_only=False)
    assert {group["initial_lr"] for group in optimizer["param_groups"]} == {1e-4, 3e-4}
    value = load_file(checkpoint / "value" / "adapter_model.safetensors")
    bias = next(tensor for name, tensor in value.items() if "value_head" in name and name.endswith("bias"))
    first_reward = next(row["reward"] for row in metrics(run) if "loss" in row)
    assert 0 < first_reward and abs(float(bias) - first_reward) < 2 * 2 * 3e-4  # 2 Adam steps from the first mean


def test_ppo_with_padded_rows_when_packing_is_off(tmp_path, tiny_model_dir, capsys):
    recipe = rl_recipe(tmp_path, tiny_model_dir, "ppo", train={"padding_free": False})
    assert cli(["run", recipe], capsys).exit_code == 0
    training = json.loads((tmp_path / "runs" / "tiny" / "training.json").read_text())
    assert training["completed"] and not training["padding_free"] and training["attention"] == "sdpa"
    assert training["completion_forward"] == "padded rows" and training["answers_per_prompt"] == 2


@pytest.mark.parametrize("method", [{"type": "prompt", "virtual_tokens": 4}, {"type": "bottleneck", "size": 8}])
def test_grpo_trains_methods_other_than_lora(tmp_path, tiny_model_dir, capsys, method):
    """GRPO samples from the policy with tunelab's loop (a prompt-tuned policy from its prefix cache) and scores the
    samples with PEFT's forward; the run completes and saves the method's adapter."""
    recipe = rl_recipe(tmp_path, tiny_model_dir, "grpo")
    result = cli(["run", recipe, f"method={json.dumps(method)}"], capsys)
    assert result.exit_code == 0, result.err
    run = tmp_path / "runs" / "tiny"
    assert json.loads((run / "status.json").read_text())["state"] == "completed"
    training = json.loads((run / "training.json").read_text())
    assert training["rollout_tokens"] > 0 and training["padding_free"] is (method["type"] != "prompt")
