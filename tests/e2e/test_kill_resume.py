"""kill -9 at the worst moments, then `--resume`: nothing lost beyond one checkpoint interval, nothing duplicated, the
same model as an uninterrupted run, and a status.json that tells the truth at every point.

The run is a real `tunelab run` subprocess (tests/e2e/killable.py adds marker files and short pauses at steps,
evaluation batches and the merge, so the SIGKILL lands exactly between two checkpoints, two batches, or in the
middle of writing the merged model).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import cli, quickstart_records, read_metrics, tiny_recipe, write_jsonl
from tunelab.runs import RunDir
from tunelab.train.frozen_bf16 import PARKED_FILE

KILLABLE = Path(__file__).with_name("killable.py")
STEPS, SAVE_EVERY = 12, 4


def start(recipe: Path, marks: Path, *args: str, pause_at: str = "step,eval,merge") -> subprocess.Popen:
    env = os.environ | {"KILLABLE_MARKS": str(marks), "KILLABLE_PAUSE_AT": pause_at, "PYTHONUNBUFFERED": "1"}
    env.pop("TUNELAB_DEBUG", None)
    command = [sys.executable, str(KILLABLE), "run", str(recipe), *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def kill_when(process: subprocess.Popen, marker: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        assert process.poll() is None, f"the run ended before {marker.name}:\n{process.stdout.read()}"
        assert time.monotonic() < deadline, f"{marker.name} never appeared"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


def resume(recipe: Path, marks: Path) -> str:
    process = start(recipe, marks, "--resume", pause_at="none")
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output
    assert "\r" not in output  # to a pipe: plain lines, no progress-bar frames
    return output


def assert_interrupted(run: Path, phase: str, capsys) -> None:
    """The file still says what the killed process last wrote; every reader is told the truth."""
    raw = json.loads((run / "status.json").read_text())
    assert raw["state"] == "running" and raw["phase"] == phase
    shown = cli(["status", run], capsys)
    assert shown.exit_code == 0 and "interrupted" in shown.out and f"while {phase}" in shown.out, shown.out
    assert RunDir(run).status()["state"] == "interrupted"
    assert json.loads((run / "status.json").read_text())["state"] == "interrupted"  # and the file is corrected


def recipe_for(tmp_path: Path, model_dir: Path, name: str, test_records: int = 4, bf16: bool = False) -> Path:
    test = write_jsonl(tmp_path / f"{name}-test.jsonl", quickstart_records("test", test_records))
    return tiny_recipe(
        tmp_path,
        model_dir,
        name=name,
        data={"test": str(test)},
        method={"dropout": 0.1},  # dropout draws random numbers: resume must restore the RNG too
        train={
            "max_steps": STEPS,
            "save_steps": SAVE_EVERY,
            "eval_steps": SAVE_EVERY,
            "logging_steps": 1,
            "bf16": bf16,
        },
        eval={"forgetting": False, "batch_size": 2, "max_new_tokens": 8},
    )


def adapter(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "adapter" / "adapter_model.safetensors")


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_kill_during_training_then_resume_gives_the_uninterrupted_model(tmp_path, tiny_model_dir, capsys, bf16):
    reference = recipe_for(tmp_path, tiny_model_dir, "reference", bf16=bf16)
    assert cli(["run", reference], capsys).exit_code == 0
    recipe = recipe_for(tmp_path, tiny_model_dir, "killed", bf16=bf16)
    run, marks = tmp_path / "runs" / "killed", tmp_path / "marks"

    process = start(recipe, marks)
    kill_when(process, marks / "step-6")  # checkpoint-4 is saved, steps 5 and 6 are not
    assert (run / "checkpoints" / "checkpoint-4").is_dir() and not (run / "checkpoints" / "checkpoint-8").exists()
    assert (run / PARKED_FILE).is_file() is bf16  # a killed bf16 run leaves the frozen fp32 weights it parked
    assert_interrupted(run, "training", capsys)
    assert cli(["run", recipe], capsys).exit_code != 0  # never silently replaced, even when interrupted

    output = resume(recipe, marks)
    printed = [int(line.split("step ")[1].split("/")[0]) for line in output.splitlines() if "] step " in line]
    assert printed[0] == SAVE_EVERY + 1, output  # continued after the last checkpoint: at most 4 steps redone
    rows = read_metrics(run)
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, STEPS + 1))  # none missing, none twice
    assert [r["step"] for r in rows if "eval_loss" in r] == [4, 8, 12]
    assert json.loads((run / "status.json").read_text())["state"] == "completed"
    assert json.loads((run / "training.json").read_text())["frozen_bf16"] is bf16 and not (run / PARKED_FILE).exists()

    expected, actual = adapter(tmp_path / "runs" / "reference"), adapter(run)
    assert expected.keys() == actual.keys()
    for name in expected:
        torch.testing.assert_close(actual[name], expected[name], rtol=1e-4, atol=1e-6, msg=name)
    losses = {r["step"]: r["loss"] for r in read_metrics(tmp_path / "runs" / "reference") if "loss" in r}
    assert [r["loss"] for r in rows if "loss" in r] == [losses[s] for s in range(1, STEPS + 1)]


def test_kill_during_evaluation_keeps_the_predictions_made(tmp_path, tiny_model_dir, capsys):
    recipe = recipe_for(tmp_path, tiny_model_dir, "evalkill", test_records=8)
    run, marks = tmp_path / "runs" / "evalkill", tmp_path / "marks"
    process = start(recipe, marks, pause_at="eval")
    kill_when(process, marks / "eval-tuned-2")  # two batches of the tuned model's answers are saved
    assert_interrupted(run, "evaluating the tuned model", capsys)
    saved = (run / "eval" / "predictions_tuned.jsonl").read_text().splitlines()
    assert len(saved) >= 4

    output = resume(recipe, marks)
    assert "training had finished at step 12" in output  # not trained again
    report = json.loads((run / "eval" / "report_tuned.json").read_text())
    assert report["reused"] >= 4 and report["reused"] + report["generated"] == 8
    final = {row["id"]: row for row in map(json.loads, (run / "eval" / "predictions_tuned.jsonl").open())}
    assert len(final) == 8
    for row in map(json.loads, saved):  # what was answered before the kill is kept as it was
        assert final[row["id"]]["prediction"] == row["prediction"]
    assert [r["step"] for r in read_metrics(run) if "loss" in r] == list(range(1, STEPS + 1))
    assert json.loads((run / "status.json").read_text())["state"] == "completed"


def test_kill_during_the_merge_never_leaves_half_a_model(tmp_path, tiny_model_dir, capsys):
    recipe = recipe_for(tmp_path, tiny_model_dir, "mergekill")
    run, marks = tmp_path / "runs" / "mergekill", tmp_path / "marks"
    process = start(recipe, marks, pause_at="merge")
    kill_when(process, marks / "merge-written")  # the merged weights are on disk, not yet renamed into place
    assert not (run / "merged").exists()  # nobody reading merged/ finds half a model
    assert list(run.glob(".merged.partial-*"))
    assert_interrupted(run, "merging the adapter into the base model", capsys)

    resume(recipe, marks)
    assert not list(run.glob(".merged.partial-*"))
    assert json.loads((run / "merged" / "verification.json").read_text())["identical_outputs"]
    assert json.loads((run / "status.json").read_text())["state"] == "completed"
