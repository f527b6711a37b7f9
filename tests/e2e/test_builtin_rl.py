"""Slow: the RL stages on the real built-in model through `tunelab run`, and the RLHF chain SFT → RM → PPO from
examples/alignment/run_rlhf.sh, each stage a few steps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import QUICKSTART, cli
from tunelab.config.schema import RL_STAGES

pytestmark = pytest.mark.slow

REPO = QUICKSTART.parents[1]
STAGE_TRAIN = {
    "grpo": {"num_generations": 4, "per_device_train_batch_size": 8, "beta": 0.04},
    "rloo": {"num_generations": 4, "per_device_train_batch_size": 8},
}


@pytest.mark.parametrize("stage", [stage for stage in RL_STAGES if stage != "ppo"])  # ppo: in the chain below
def test_each_rl_stage_on_the_builtin_model(tmp_path, capsys, stage):
    recipe = {
        "name": stage, "output_dir": str(tmp_path / "runs"), "stage": stage,
        "model": {"name": "smollm2-135m-instruct"},
        "data": {"sources": [{"path": str(QUICKSTART / "train.jsonl")}], "validation": None,
                 "test": str(QUICKSTART / "test.jsonl"), "max_length": 256},
        "method": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
        "reward": [{"type": "field_accuracy"}, {"type": "json_schema", "json_schema": str(QUICKSTART / "schema.json"),
                                                "weight": 0.5}],
        "train": {"max_steps": 2, "learning_rate": 2e-5, "logging_steps": 1} | STAGE_TRAIN[stage],
        "eval": {"limit": 4, "max_new_tokens": 72, "forgetting": False, "metrics": ["json_validity", "exact_match"]},
        "export": {"verify_prompts": 1},
    }  # fmt: skip
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = cli(["run", path], capsys)
    assert result.exit_code == 0, result.err
    run = tmp_path / "runs" / stage
    training = json.loads((run / "training.json").read_text())
    assert training["completed"] and training["stage"] == stage and training["global_step"] == 2
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all("reward" in row and "rewards/field_accuracy/mean" in row for row in rows if "loss" in row)
    assert json.loads((run / "merged" / "verification.json").read_text())["identical_outputs"]


def test_the_rlhf_chain_sft_rm_ppo(tmp_path):
    """examples/alignment/run_rlhf.sh as a user runs it, with overrides that keep every stage short."""
    runs = tmp_path / "runs"
    tunelab = Path(sys.executable).with_name("tunelab")
    overrides = [
        "train.max_steps=2",
        "train.logging_steps=1",
        "eval.limit=4",
        "eval.forgetting=false",
        "export.verify_prompts=1",
    ]
    env = {**os.environ, "RUNS": str(runs), "TUNELAB": str(tunelab)}
    done = subprocess.run(["sh", str(REPO / "examples" / "alignment" / "run_rlhf.sh"), *overrides], env=env,
                          capture_output=True, text=True, timeout=1800)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    stages = {name: json.loads((runs / name / "training.json").read_text())["stage"]
              for name in ("rlhf-sft", "rlhf-rm", "rlhf-ppo")}  # fmt: skip
    assert stages == {"rlhf-sft": "sft", "rlhf-rm": "rm", "rlhf-ppo": "ppo"}
    recipe = yaml.safe_load((runs / "rlhf-ppo" / "recipe.yaml").read_text())
    assert recipe["reward"] == [{"weight": 1.0, "type": "reward_model", "run": str(runs / "rlhf-rm"),
                                 "batch_size": 16}]  # fmt: skip
    assert recipe["model"]["name"].endswith("rlhf-sft")
    rows = [json.loads(line) for line in (runs / "rlhf-ppo" / "metrics.jsonl").read_text().splitlines()]
    assert any("rewards/reward_model/mean" in row for row in rows)
    assert "reports:" in done.stdout
