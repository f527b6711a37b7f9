"""The Train tab in a real browser: fill the form, start a run, watch it, close the page mid-training and come back
(training went on; the page re-attaches), stop, resume, finish; bad input shown in the page; language switch."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from tunelab.runs import process_is_gone
from uipage import field, fill, open_section, open_tab, run_status, screenshot, text_of, wait_for_text

STEPS = 160


def fill_recipe(page, name: str, steps: int = STEPS) -> None:
    open_tab(page, "train")
    fill(page, "f-name", name)
    fill(page, "f-model-name", "models/tiny")
    fill(page, "f-data-sources", "data/train.jsonl")
    fill(page, "f-data-test", "data/test.jsonl")
    fill(page, "f-data-max_length", "256")
    open_section(page, "train")
    for key, value in (("max_steps", steps), ("logging_steps", 2), ("save_steps", 20), ("eval_steps", 40),
                       ("learning_rate", "0.001")):  # fmt: skip
        fill(page, f"f-train-{key}", value)
    open_section(page, "eval")
    fill(page, "f-eval-max_new_tokens", "8")
    checkbox = page.locator("#f-eval-forgetting-enabled input")
    if checkbox.is_checked():
        checkbox.uncheck()
    wait_for_text(page, "recipe-check", "✅")


def step_of(workspace: Path, name: str) -> int:
    return int(run_status(workspace, name).get("step") or 0)


def wait_until(condition, timeout: float = 120, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_start_watch_leave_come_back_stop_resume_finish(browser, ui_server, page):
    workspace = ui_server.workspace
    fill_recipe(page, "watched")
    assert "models/tiny" in field(page, "f-model-name").input_value()
    assert "/models/tiny" in wait_for_text(page, "recipe-yaml", "max_steps: 160")  # paths made absolute
    page.locator("#estimate-button").click()
    assert "parameters trained" in wait_for_text(page, "estimate", "parameters trained")
    page.locator("#start").click()
    wait_for_text(page, "train-message", "started")
    wait_for_text(page, "progress", "training", timeout=120)
    wait_until(lambda: step_of(workspace, "watched") >= 6, what="six steps")
    page.locator("#loss-plot canvas, #loss-plot svg").first.wait_for(timeout=20_000)  # the curve is drawn
    screenshot(page, "train-running")

    page.context.close()  # the tab is closed mid-training: nothing reads the run's output any more
    left_at = step_of(workspace, "watched")
    wait_until(lambda: step_of(workspace, "watched") >= left_at + 10, what="training to go on with no page open")

    context = browser.new_context(viewport={"width": 1500, "height": 1100})
    again = context.new_page()
    again.goto(ui_server.url)
    open_tab(again, "train")
    wait_for_text(again, "progress", "watched", timeout=60)  # re-attached to the running run, not told which
    assert "running" in text_of(again, "progress")
    again.locator("#stop").click()
    wait_for_text(again, "train-message", "stopping")
    wait_until(lambda: run_status(workspace, "watched").get("state") == "interrupted", what="the stop")
    checkpoints = sorted((workspace / "runs" / "watched" / "checkpoints").glob("checkpoint-*"))
    assert checkpoints, "a stopped run keeps a checkpoint"
    stopped_at = step_of(workspace, "watched")
    assert stopped_at < STEPS
    wait_for_text(again, "progress", "interrupted")

    again.locator("#resume").click()
    wait_for_text(again, "train-message", "resumed")
    wait_for_text(again, "progress", "completed", timeout=240)
    rows = [json.loads(line) for line in (workspace / "runs" / "watched" / "metrics.jsonl").read_text().splitlines()]
    steps = [row["step"] for row in rows if "loss" in row]
    assert steps == sorted(set(steps)) and steps[-1] == STEPS  # resumed, no step twice
    assert "completed" in (workspace / "runs" / "watched" / "run.log").read_text()
    screenshot(again, "train-finished")
    context.close()


def digest(folder: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())).hexdigest()


def finished_runs(workspace: Path) -> dict[str, str]:
    """Digest of every run whose process has ended (a run an earlier test left going changes on its own, and a
    completed run's process still writes its report and last log lines after status.json says completed)."""
    runs = [p for p in (workspace / "runs").iterdir() if p.is_dir()]
    return {p.name: digest(p) for p in runs if has_ended(run_status(workspace, p.name))}


def has_ended(status: dict) -> bool:
    """Not running, and written by this test process (a fixture's run) or by a process that has exited."""
    return status.get("state") != "running" and (status.get("pid") == os.getpid() or process_is_gone(status))


def test_bad_input_is_shown_in_the_page_and_changes_nothing(page, ui_server):
    workspace = ui_server.workspace
    runs_before = finished_runs(workspace)
    open_tab(page, "train")
    fill(page, "f-name", "bad")
    fill(page, "f-model-name", "models/tiny")
    fill(page, "f-data-sources", "/etc/passwd")
    assert "outside the workspace" in wait_for_text(page, "recipe-check", "outside the workspace")
    fill(page, "f-data-sources", "../elsewhere.jsonl")
    wait_for_text(page, "recipe-check", "outside the workspace")
    fill(page, "f-data-sources", "data/nothing-here.jsonl")
    wait_for_text(page, "recipe-check", "does not exist")
    fill(page, "f-data-sources", "data/train.jsonl")
    fill(page, "f-method-r-lora", "0")
    assert "method.r" in wait_for_text(page, "recipe-check", "method.r")
    fill(page, "f-method-r-lora", "8")
    fill(page, "f-reward", "type: json_valid")  # the RL rewards: a YAML list, for the RL stages only
    wait_for_text(page, "recipe-check", "write a YAML list")
    fill(page, "f-reward", "- {type: json_valid}")
    assert "stage sft does not use rewards" in wait_for_text(page, "recipe-check", "does not use rewards")
    fill(page, "f-reward", "")
    open_section(page, "train")
    fill(page, "f-train-_extra", "weight_decay: [unclosed")
    wait_for_text(page, "recipe-check", "not valid YAML")
    fill(page, "f-train-_extra", "learning_rat: 0.1")
    assert "did you mean learning_rate" in wait_for_text(page, "recipe-check", "did you mean")
    page.locator("#start").click()
    assert "did you mean" in wait_for_text(page, "train-message", "did you mean")
    assert not (workspace / "runs" / "bad").exists()  # nothing was started or written

    (workspace / "recipes" / "broken.yaml").write_text("name: [unclosed\n")
    field(page, "recipe-file").fill("broken.yaml")
    field(page, "recipe-file").press("Enter")
    page.locator("#recipe-load").click()
    assert "broken.yaml" in wait_for_text(page, "train-message", "not a readable YAML")
    after = finished_runs(workspace)
    assert {name: after[name] for name in runs_before if name in after} == runs_before


def test_switching_to_chinese_relabels_the_page(page):
    open_tab(page, "train")
    page.locator("#language label", has_text="中文").click()
    wait_for_text(page, "tab-train-button", "训练")
    assert page.locator("#start").inner_text().strip() == "开始训练"
    assert "运行记录" in text_of(page, "tab-runs-button")
    screenshot(page, "train-zh")
    page.locator("#language label", has_text="English").click()
    wait_for_text(page, "tab-train-button", "Train")


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10"])
def test_other_addresses_need_a_password(host, tmp_path, capsys):
    from tunelab.cli import main

    assert main(["ui", "--workspace", str(tmp_path), "--host", host]) == 1
    assert "--auth-env" in capsys.readouterr().err
