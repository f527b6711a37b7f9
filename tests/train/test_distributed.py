"""`tunelab run --nproc 2`: two processes (gloo on this CPU) train the tiny model as one process does with the same
global batch, rank 0 alone writes the run, a resumed run continues from the checkpoint, a killed rank ends the run
cleanly with the rank named, and a run rank 0 refuses stops the other rank at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import psutil
import pytest

from helpers import tiny_recipe, write_jsonl

TUNELAB = [sys.executable, "-m", "tunelab.cli"]
QUIET = ["eval.forgetting.enabled=false", "eval.base=false", "export.merge=false"]


def _run(recipe, *args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([*TUNELAB, "run", str(recipe), *QUIET, *args], capture_output=True, text=True,
                          timeout=timeout, env=os.environ | {"TQDM_DISABLE": "1"})  # fmt: skip


def _losses(run_dir) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(row["step"], row["loss"]) for row in rows if "loss" in row]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory, tiny_model_dir):
    return tiny_recipe(tmp_path_factory.mktemp("ddp"), tiny_model_dir, name="ddp")


@pytest.fixture(scope="module")
def two_processes(recipe):
    result = _run(recipe, "--nproc", "2", "name=two", "train.per_device_train_batch_size=2")
    assert result.returncode == 0, result.stderr[-3000:]
    return recipe.parent / "runs" / "two"


def test_two_processes_follow_the_one_process_loss_curve(recipe, two_processes):
    one = _run(recipe, "name=one", "train.per_device_train_batch_size=4")  # the same global batch: 2 × 2 = 4
    assert one.returncode == 0, one.stderr[-3000:]
    single, double = _losses(recipe.parent / "runs" / "one"), _losses(two_processes)
    assert [step for step, _ in single] == [step for step, _ in double] == list(range(1, 9))
    for (_, a), (_, b) in zip(single, double, strict=True):
        assert abs(a - b) <= 1e-3 * abs(a)
    training = json.loads((two_processes / "training.json").read_text())
    assert training["processes"] == 2 and training["completed"] and training["torch_threads"] == 1


def test_rank_zero_alone_writes_and_the_adapter_loads(two_processes, tiny_model_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert json.loads((two_processes / "status.json").read_text())["state"] == "completed"
    assert not list(two_processes.glob(".rank*")) and not (two_processes / ".gathered").exists()
    steps = [json.loads(line)["step"] for line in (two_processes / "metrics.jsonl").read_text().splitlines()]
    assert len(steps) == len(set(map(str, enumerate(steps))))  # one row per log, not one per rank
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), two_processes / "adapter")
    assert (two_processes / "eval" / "predictions_tuned.jsonl").is_file()


def test_resume_continues_from_the_checkpoint(recipe, two_processes):
    first = _run(recipe, "--nproc", "2", "name=resumed", "train.per_device_train_batch_size=2", "train.max_steps=4")
    assert first.returncode == 0, first.stderr[-3000:]
    again = _run(recipe, "--nproc", "2", "name=resumed", "train.per_device_train_batch_size=2", "--resume")
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = _losses(recipe.parent / "runs" / "resumed")
    assert [step for step, _ in resumed] == list(range(1, 9))
    for (_, a), (_, b) in zip(resumed, _losses(two_processes), strict=True):
        assert abs(a - b) <= 1e-3 * abs(a)


def test_a_killed_rank_ends_the_run_and_it_resumes(recipe):
    args = ["--nproc", "2", "name=killed", "train.per_device_train_batch_size=2", "train.max_steps=400",
            "train.save_steps=5", "train.eval_steps=1000"]  # fmt: skip
    parent = subprocess.Popen([*TUNELAB, "run", str(recipe), *QUIET, *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)  # fmt: skip
    run_dir = recipe.parent / "runs" / "killed"
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoints" / "checkpoint-5").is_dir():
        assert time.monotonic() < deadline and parent.poll() is None, "training did not reach step 5"
        time.sleep(0.2)
    rank1 = next(p for p in psutil.Process(parent.pid).children(recursive=True)
                 if p.environ().get("RANK") == "1" and "tunelab" in " ".join(p.cmdline()))  # fmt: skip
    rank1.kill()
    _, err = parent.communicate(timeout=120)
    assert parent.returncode != 0 and "rank 1 of 2 was killed by SIGKILL" in err and "--resume --nproc 2" in err
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "failed" and "rank 1" in status["error"]
    resumed = _run(recipe, *args[:-3], "train.max_steps=12", "train.save_steps=5", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert json.loads((run_dir / "status.json").read_text())["state"] == "completed"


def test_a_run_rank_zero_refuses_stops_every_rank(recipe, tmp_path):
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"messages": [{"role": "user", "content": "no answer"}]}])
    started = time.monotonic()
    result = _run(recipe, "--nproc", "2", "name=refused", f"data.sources=[{{path: {bad}}}]")
    assert result.returncode != 0 and "bad.jsonl" in result.stderr
    assert time.monotonic() - started < 120  # rank 1 did not wait for a broadcast that never comes


def test_nproc_must_be_positive(recipe):
    result = _run(recipe, "--nproc", "0")
    assert result.returncode != 0 and "--nproc 0" in result.stderr


def _adapter(run_dir):
    from safetensors.torch import load_file

    return load_file(run_dir / "adapter" / "adapter_model.safetensors")


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_deepspeed_zero_trains_like_ddp_on_this_cpu(recipe, two_processes, stage):
    pytest.importorskip("deepspeed")
    result = _run(recipe, "--nproc", "2", f"name={stage}", "train.per_device_train_batch_size=2",
                  f"train.deepspeed={stage}")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    run_dir = recipe.parent / "runs" / stage
    config = json.loads((run_dir / "deepspeed.json").read_text())
    assert config["zero_optimization"]["stage"] == int(stage[-1]) and config["train_batch_size"] == "auto"
    for (_, a), (_, b) in zip(_losses(run_dir), _losses(two_processes), strict=True):
        assert abs(a - b) <= 1e-3 * abs(a)
    ours, ddp = _adapter(run_dir), _adapter(two_processes)  # ZeRO-3: gathered from both ranks, read back by rank 0
    assert ours.keys() == ddp.keys() and all((ours[k] - ddp[k]).abs().max() < 1e-4 for k in ours)
    assert json.loads((run_dir / "status.json").read_text())["state"] == "completed"


def test_fsdp_on_cpus_is_said_to_train_as_ddp(recipe):
    result = _run(recipe, "--nproc", "2", "name=fsdp", "train.per_device_train_batch_size=2",
                  "train.fsdp=full_shard auto_wrap", "train.max_steps=2")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "train.fsdp is not applied on CPUs" in result.stdout + result.stderr


@pytest.mark.parametrize(
    "value, message",
    [
        ("zero9", "expected one of zero2, zero3, zero3_offload"),
        ("missing.json", "missing.json: no such file"),
        ("[1, 2]", "expected one of zero2"),
    ],  # fmt: skip
)
def test_bad_deepspeed_settings_are_explained(recipe, capsys, value, message):
    from helpers import cli

    result = cli(["validate", str(recipe), f"train.deepspeed={value}"], capsys)
    assert result.exit_code != 0 and "train.deepspeed" in result.err and message in result.err


def test_deepspeed_that_cannot_start_is_refused_with_the_reason(recipe, capsys, monkeypatch):
    from helpers import cli
    from tunelab.config import deepspeed

    monkeypatch.setattr(deepspeed.importlib.util, "find_spec", lambda name: None)
    result = cli(["validate", str(recipe), "train.deepspeed=zero2"], capsys)
    assert result.exit_code != 0 and "DeepSpeed is not installed" in result.err and "--nproc" in result.err


def test_dpo_in_two_processes_follows_one(tmp_path, tiny_model_dir):
    from e2e.test_preference_runs import preference_recipe

    recipe = preference_recipe(tmp_path, tiny_model_dir, "dpo", train={"max_steps": 3})

    def run(*args):
        return subprocess.run([*TUNELAB, "run", str(recipe), "eval.base=false", *args], capture_output=True, text=True,
                              timeout=300)  # fmt: skip

    one = run("name=one", "train.per_device_train_batch_size=4")
    two = run("--nproc", "2", "name=two", "train.per_device_train_batch_size=2")
    assert one.returncode == 0 and two.returncode == 0, (one.stderr + two.stderr)[-3000:]
    single, double = _losses(recipe.parent / "runs" / "one"), _losses(recipe.parent / "runs" / "two")
    assert len(single) == len(double) == 3
    assert all(abs(a - b) <= 1e-3 * abs(a) for (_, a), (_, b) in zip(single, double, strict=True))
