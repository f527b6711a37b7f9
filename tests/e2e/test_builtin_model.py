"""Slow: the real built-in model (GGUF → cached safetensors) trains a few steps, generates, merges, chats."""

from __future__ import annotations

import json

import pytest

from helpers import QUICKSTART, cli

pytestmark = pytest.mark.slow


def test_quickstart_recipe_on_the_builtin_model(tmp_path, capsys):
    args = [
        "run", QUICKSTART / "recipe.yaml", f"output_dir={tmp_path}", "name=smoke",
        "data.sources.0.limit=48", "train.max_steps=3", "train.eval_steps=3", "eval.limit=4", "eval.max_new_tokens=48",
        "export.verify_prompts=2",
    ]  # fmt: skip
    result = cli(args, capsys)
    assert result.exit_code == 0, result.err
    run = tmp_path / "smoke"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [3] or len(rows) >= 1
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert set(metrics) == {"base", "zero_shot", "k_shot", "tuned"}
    report = (run / "eval" / "report.md").read_text()
    assert "| metric | base | zero-shot | 4-shot | tuned |" in report  # base / prompted / tuned, side by side
    assert "| 4-shot | field_accuracy |" in report and "| zero-shot | field_accuracy |" in report  # with intervals
    assert "## Cost and return" in report and "Gain over the best prompt" in report
    predictions = (run / "eval" / "predictions_tuned.jsonl").read_text().splitlines()
    assert len(predictions) == 4 and all(json.loads(p)["prediction"] for p in predictions)
    check = json.loads((run / "merged" / "verification.json").read_text())
    assert check["identical_outputs"]
    answer = cli(["chat", run, "--prompt", "Send 2 red mugs to Lisa Chen in Boston.", "--max-new-tokens", "40"], capsys)
    assert answer.exit_code == 0 and answer.out.strip()


def test_the_probe_measures_general_ability_of_the_builtin_model(tmp_path, capsys):
    """Easy items scored by the likelihood of each choice's text: a 135M model is well above chance (25%)."""
    out = tmp_path / "probe"
    args = ["bench", "smollm2-135m-instruct", "--task", "probe", "--limit", "20", "--shots", "3", "--out", out]
    assert cli(args, capsys).exit_code == 0
    report = json.loads((out / "report.json").read_text())
    subjects = report["by_subject"]
    easy = [subjects[name]["accuracy"] for name in ("knowledge", "common_sense")]
    assert min(easy) >= 0.6, subjects
