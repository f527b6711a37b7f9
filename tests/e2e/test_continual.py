"""Continual training: --continue-from starts from a finished run's model, data.replay mixes its data in, the audit
sees both generations, and the previous test set measures forgetting against the previous run and the base."""

from __future__ import annotations

import json

import pytest
import yaml

from helpers import cli, quickstart_records, tiny_recipe, write_jsonl
from tunelab.data.generations import replay_count
from tunelab.runs import read_json

FAST = {"forgetting": {"enabled": False}, "baselines": ["base"]}


def _generation(tmp_path, tiny_model_dir, name: str, train: list[dict], test: list[dict], **sections):
    folder = tmp_path / name
    folder.mkdir()
    recipe = tiny_recipe(folder, tiny_model_dir, name=name, eval=FAST, export={"merge": False},
                         train={"max_steps": 3}, **sections)  # fmt: skip
    write_jsonl(folder / "train.jsonl", train)
    write_jsonl(folder / "test.jsonl", test)
    document = yaml.safe_load(recipe.read_text())
    document["output_dir"] = str(tmp_path / "runs")
    recipe.write_text(yaml.safe_dump(document, allow_unicode=True))
    return recipe


@pytest.fixture
def generations(tmp_path, tiny_model_dir, capsys):
    """A finished v1 (training records 0-39, test 0-5) and a v2 recipe on other records (40-79, test 6-11)."""
    train, test = quickstart_records("train", 80), quickstart_records("test", 12)
    v1 = _generation(tmp_path, tiny_model_dir, "v1", train[:40], test[:6])
    assert cli(["run", v1], capsys).exit_code == 0
    v2 = _generation(tmp_path, tiny_model_dir, "v2", train[40:], test[6:])
    return tmp_path / "runs" / "v1", v2, train, test


def test_replay_makes_up_the_asked_share():
    assert replay_count(new=90, available=500, share=0.1) == 10  # 10 of 100
    assert replay_count(new=90, available=4, share=0.5) == 4
    assert replay_count(new=90, available=500, share=0.0) == 0


def test_continue_from_replays_and_measures_the_previous_test_set(generations, capsys):
    v1, v2, _, _ = generations
    result = cli(["run", v2, "--continue-from", v1, "data.replay=0.2"], capsys)
    assert result.exit_code == 0, result.err
    run = v1.parent / "v2"
    saved = yaml.safe_load((run / "recipe.yaml").read_text())
    assert saved["continue_from"] == str(v1) and saved["model"]["name"] == str(v1)
    continual = read_json(run / "data" / "summary.json")["continual"]
    assert continual["replayed"] == 10 and continual["new"] == 40 and continual["previous_test"] == 6
    splits = read_json(run / "data" / "splits.json")
    replayed = [i for i in splits["train"] + splits["validation"] if i.startswith("v1:")]
    assert len(replayed) == 10
    summary = read_json(run / "eval" / "previous" / "summary.json")
    assert summary["records"] == 6 and set(summary["vs"]) == {"previous", "base"}
    for comparison in summary["vs"].values():
        assert comparison["count"] == 6 and all(len(m["ci95"]) == 2 for m in comparison["metrics"].values())
    assert set(summary["metrics"]) == {"tuned", "previous", "base"}
    tuned = (run / "eval" / "previous" / "predictions_tuned.jsonl").read_text().splitlines()
    assert {json.loads(line)["id"] for line in tuned} == {f"test-{i:04d}" for i in range(1, 7)}
    report = (run / "eval" / "report.md").read_text()
    assert "## Continual training: the previous generation's test set" in report
    assert "10 replayed from v1" in report and "previous run's test set" in result.out


def test_the_audit_refuses_a_new_test_record_the_previous_model_trained_on(generations, capsys):
    v1, v2, train, test = generations
    write_jsonl(v2.parent / "test.jsonl", [*test[6:], train[3]])  # v1 trained on train[3] (or validated on it)
    result = cli(["run", v2, "--continue-from", v1], capsys)
    assert result.exit_code != 0
    assert "leakage" in result.err and "train-0004" in result.err
    assert not (v1.parent / "v2" / "recipe.yaml").exists()


def test_the_audit_refuses_a_previous_test_record_in_the_new_training_data(generations, capsys):
    v1, v2, train, test = generations
    write_jsonl(v2.parent / "train.jsonl", [*train[40:], test[2]])
    result = cli(["run", v2, "--continue-from", v1], capsys)
    assert result.exit_code != 0
    assert "previous_test" in result.err and "test-0003" in result.err


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        (["--continue-from", "nowhere"], "continue_from"),
        (["data.replay=0.1"], "data.replay"),
        (["--continue-from", "{v1}", "data.replay=1.5"], "data.replay"),
        (["--continue-from", "{v1}", "model.name=other-model"], "model.name"),
    ],
)
def test_bad_continual_settings_are_named(generations, capsys, arguments, named):
    v1, v2, _, _ = generations
    result = cli(["run", v2, *(a.format(v1=v1) for a in arguments)], capsys)
    assert result.exit_code == 2
    assert named in result.err and "Traceback" not in result.err
    assert not (v1.parent / "v2").exists()


def test_an_unfinished_previous_run_is_refused(generations, capsys):
    v1, v2, _, _ = generations
    status = read_json(v1 / "status.json")
    (v1 / "status.json").write_text(json.dumps(status | {"state": "interrupted"}))
    result = cli(["run", v2, "--continue-from", v1], capsys)
    assert result.exit_code == 2 and "interrupted, not completed" in result.err


def test_the_continual_example_data_is_what_its_generator_writes(tmp_path):
    import subprocess
    import sys

    from helpers import QUICKSTART

    example = QUICKSTART.parent / "continual"
    subprocess.run([sys.executable, str(example / "generate.py"), "--out-dir", str(tmp_path)], check=True)
    for name in ("v1/train.jsonl", "v1/test.jsonl", "v2/train.jsonl", "v2/test.jsonl", "schema.json"):
        assert (tmp_path / name).read_bytes() == (example / name).read_bytes(), name
    v2 = [json.loads(line) for line in (example / "v2" / "train.jsonl").read_text().splitlines()]
    assert sum(r["category"] == "zh" for r in v2) == 280  # 70% Chinese; v1 is all English
