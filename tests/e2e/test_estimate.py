"""`tunelab estimate`: the workload counted from the data, a calibration run of real steps, the extrapolation
checked against the real run (generous bounds on the tiny model; the built-in model's figures are in the notes)."""

from __future__ import annotations

import pytest

from helpers import cli, tiny_recipe
from tunelab.runs import read_json

TRAIN = {"max_steps": -1, "num_train_epochs": 2, "eval_steps": 6, "logging_steps": 2}


def test_estimate_then_run_puts_the_estimate_beside_the_actuals(tmp_path, tiny_model_dir, capsys):
    recipe = tiny_recipe(tmp_path, tiny_model_dir, train=TRAIN, eval={"forgetting": {"enabled": False}},
                         export={"merge": False})  # fmt: skip
    result = cli(["estimate", recipe, "--steps", "4", "--gpu", "h100,l4"], capsys)
    assert result.exit_code == 0, result.err
    assert "this machine" in result.out and "h100" in result.out and "l4" in result.out
    estimate = read_json(tmp_path / "runs" / "tiny.estimate.json")
    work = estimate["workload"]
    assert 40 <= work["sequences"] <= 42 and work["steps"] == 2 * -(-work["sequences"] // 4)  # 2 epochs of 4
    assert work["validation_passes"] == work["steps"] // 6
    assert estimate["parameters"]["trainable"] < estimate["parameters"]["total"]
    assert [row["gpu"] for row in estimate["gpu"]["rows"]] == ["h100", "l4"]
    assert cli(["run", recipe], capsys).exit_code == 0
    run = tmp_path / "runs" / "tiny"
    assert read_json(run / "estimate.json")["fingerprint"] == estimate["fingerprint"]
    training = read_json(run / "training.json")
    predicted = estimate["this_machine"]
    assert 1 / 3 < training["train_seconds"] / predicted["train_seconds"] < 3
    assert 0.5 < training["peak_rss_bytes"] / predicted["peak_rss_bytes"] < 2
    report = (run / "eval" / "report.md").read_text()
    assert "## Cost and return" in report and "measured / estimated" in report
    assert "Gain over the best prompt (" in report and "per 1k requests" in report


def test_an_estimate_for_other_settings_is_not_adopted(tmp_path, tiny_model_dir, capsys):
    recipe = tiny_recipe(tmp_path, tiny_model_dir, eval={"forgetting": {"enabled": False}}, export={"merge": False})
    assert cli(["estimate", recipe, "--no-calibrate"], capsys).exit_code == 0
    assert cli(["run", recipe, "train.learning_rate=0.001"], capsys).exit_code == 0
    assert not (tmp_path / "runs" / "tiny" / "estimate.json").exists()


@pytest.mark.parametrize(
    ("arguments", "named"),
    [(["--gpu", "h1000"], "h1000: not in the table"), (["--prices", "missing.yaml"], "cannot read"),
     (["--steps", "1"], "fewer than 3 steps")],
)  # fmt: skip
def test_bad_estimate_arguments_are_named(tmp_path, tiny_model_dir, capsys, arguments, named):
    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    result = cli(["estimate", recipe, *arguments], capsys)
    assert result.exit_code != 0 and named in result.err and "Traceback" not in result.err


def test_a_recipe_without_test_or_validation_data_is_estimated(tmp_path, tiny_model_dir, capsys):
    recipe = tiny_recipe(tmp_path, tiny_model_dir, data={"test": None, "validation": None},
                         train={"eval_steps": None}, eval={"forgetting": {"enabled": False}})  # fmt: skip
    result = cli(["estimate", recipe, "--steps", "3", "--gpu", "t4"], capsys)
    assert result.exit_code == 0, result.err
    estimate = read_json(tmp_path / "runs" / "tiny.estimate.json")
    assert estimate["workload"]["validation_passes"] == 0 and estimate["workload"]["test"] == 0
    assert estimate["this_machine"]["train_seconds"] > 0 and estimate["this_machine"]["peak_rss_bytes"] > 0
