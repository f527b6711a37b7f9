"""Slow: every preference stage on the real built-in model, trained on the LLaMA-Factory demo sets (dpo_en_demo,
kto_en_demo for kto) through `tunelab run`, evaluated on held-out pairs of the orders task, merged and verified."""

from __future__ import annotations

import json

import pytest
import yaml

from helpers import QUICKSTART, cli, shared_data
from tunelab.train.stages import STAGES, get_stage

pytestmark = pytest.mark.slow

PREFERENCE_STAGES = [name for name in STAGES if get_stage(name).reads in ("preference", "unpaired")]
DEMO = {"kto": "kto_en_demo"}


@pytest.mark.parametrize("stage", PREFERENCE_STAGES)
def test_each_preference_stage_on_the_builtin_model(tmp_path, capsys, stage):
    registry = shared_data("llamafactory", "dataset_info.json")
    test = QUICKSTART.parent / "preference" / "test.jsonl"
    if stage == "kto":  # unpaired held-out records here (the tiny-model test holds KTO out on pairs)
        from helpers import write_jsonl
        from tunelab.data.kinds import unpair

        pairs = [json.loads(line) for line in test.read_text(encoding="utf-8").splitlines()[:4]]
        test = write_jsonl(tmp_path / "test_unpaired.jsonl", unpair(pairs))
    recipe = {
        "name": stage,
        "output_dir": str(tmp_path / "runs"),
        "stage": stage,
        "model": {"name": "smollm2-135m-instruct"},
        "data": {
            "registry": str(registry),
            "datasets": [DEMO.get(stage, "dpo_en_demo")],
            "validation": None,
            "test": str(test),
            "max_length": 256,
        },  # fmt: skip
        "method": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
        "train": {"max_steps": 2, "per_device_train_batch_size": 2, "learning_rate": 5e-5, "logging_steps": 1},
        "eval": {"limit": 4, "max_new_tokens": 48, "forgetting": False, "metrics": ["json_validity", "exact_match"]},
        "export": {"verify_prompts": 1},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    result = cli(["run", path], capsys)
    assert result.exit_code == 0, result.err
    run = tmp_path / "runs" / stage
    training = json.loads((run / "training.json").read_text())
    assert training["completed"] and training["stage"] == stage and training["global_step"] == 2
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    if stage == "kto":  # unpaired held-out records: the generation metrics on the desirable completions
        assert "exact_match" in metrics["tuned"]
    else:
        assert 0 <= metrics["tuned"]["pair_accuracy"] <= 1 and "length_rule" in metrics["base"]
    verification = json.loads((run / "merged" / "verification.json").read_text())
    assert verification["identical_outputs"]
    report = (run / "eval" / "report.md").read_text()
    # a reward model scores answers and writes none: its report has the pair metrics only
    assert ("pair_accuracy" if stage == "rm" else "exact_match") in report
