"""The Evaluate tab in the browser, on real tiny runs made with `tunelab run` before the UI starts: the base-vs-tuned
table with intervals, the forgetting verdict, the report inline, a judge job launched and its result shown; a run
without a test set and a running run get a plain note; bad judge input is said in the page and changes no run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import tiny_recipe
from tunelab.runs import this_process, write_json
from uipage import fill, make_workspace, open_tab, screenshot, text_of, tree_hash, wait_for_text


def make_runs(workspace: Path, model: Path) -> None:
    """runs/tiny (with a test set and the forgetting check) and runs/notest (no test set), trained at once."""
    runs = str(workspace / "runs")
    recipes = {
        "tiny": tiny_recipe(_folder(workspace, "tiny"), model, output_dir=runs, export={"merge": False}),
        "notest": tiny_recipe(_folder(workspace, "notest"), model, output_dir=runs, name="notest",
                              data={"test": None}, eval={"forgetting": False}, train={"max_steps": 2},
                              export={"merge": False}),
    }  # fmt: skip
    env = os.environ | {"TUNELAB_HOME": str(workspace / ".tunelab-home")}
    env.pop("TUNELAB_DEBUG", None)
    started = {name: subprocess.Popen([sys.executable, "-m", "tunelab.cli", "run", str(path)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for name, path in recipes.items()}  # fmt: skip
    for name, process in started.items():
        output, _ = process.communicate(timeout=300)
        assert process.returncode == 0, f"tunelab run {name} failed:\n{output[-3000:]}"


def _folder(workspace: Path, name: str) -> Path:
    """The recipe and its data in recipes/<name>/ (the run goes to runs/<name>)."""
    folder = workspace / "recipes" / name
    folder.mkdir(parents=True)
    return folder


@pytest.fixture(scope="module")
def ui_workspace(tmp_path_factory, tiny_model_dir) -> Path:
    workspace = make_workspace(tmp_path_factory.mktemp("workspace"), tiny_model_dir)
    (workspace / "runs").mkdir()
    make_runs(workspace, workspace / "models" / "tiny")
    busy = workspace / "runs" / "busy"  # a run that is running right now: this test process holds it
    busy.mkdir()
    shutil.copy(workspace / "runs" / "notest" / "recipe.yaml", busy / "recipe.yaml")
    write_json(busy / "status.json", {"state": "running", "phase": "training", "step": 1, "max_steps": 8,
                                      "updated": time.time(), **this_process()})  # fmt: skip
    return workspace


def pick(page, elem_id: str, option: str) -> None:
    """Choose an option of a dropdown by its text."""
    page.locator(f"#{elem_id} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def bad_judge_input(page) -> None:
    """A judge outside the workspace, a number of prompts below 1: each said in the page."""
    for judge, said in (("../outside", "'../outside' is outside the workspace"),
                        ("/etc", "'/etc' is outside the workspace")):  # fmt: skip
        fill(page, "judge-judge", judge)
        page.locator("#judge-start").click()
        assert wait_for_text(page, "eval-message", said).startswith("⚠️")
    fill(page, "judge-judge", "models/tiny")
    fill(page, "judge-limit", "0")
    page.locator("#judge-start").click()
    wait_for_text(page, "eval-message", "must be 1 or more")


def test_run_results_report_and_judge(page, ui_workspace):
    run = ui_workspace / "runs" / "tiny"
    before = tree_hash(run)
    open_tab(page, "evaluate")
    pick(page, "eval-run", "runs/tiny")
    table = wait_for_text(page, "eval-metrics", "95% CI")
    assert "exact_match" in table and "probe_accuracy" in table and "inconclusive" in table
    assert "paired bootstrap" in text_of(page, "eval-comparison-note")
    assert "on probe" in wait_for_text(page, "eval-forgetting-verdict", "probe")
    assert "all" in text_of(page, "eval-forgetting")
    assert "stopped at the token limit" in text_of(page, "eval-truncation-note")
    frame = page.frame_locator("#eval-report iframe")
    frame.locator("body").get_by_text("tiny").first.wait_for(timeout=20_000)
    assert tree_hash(run) == before  # looking at a run changes nothing in it

    bad_judge_input(page)
    assert tree_hash(run) == before

    fill(page, "judge-limit", "2")
    page.locator("#judge-start").click()
    wait_for_text(page, "eval-message", "judging runs/tiny against models/tiny with models/tiny")
    summary = wait_for_text(page, "judge-summary", "wins", "without a result", timeout=150)
    assert "2 prompts" in summary and "judge" in summary, summary
    assert "win" in text_of(page, "judge-table")
    assert (run / "eval" / "judge" / "tiny" / "summary.json").is_file()
    assert "$ tunelab judge" in (run / "eval" / "judge.log").read_text()
    assert "runs/tiny vs models/tiny (2 prompts, judge models/tiny)" in summary
    page.frame_locator("#eval-report iframe").get_by_text("Pairwise A/B").first.wait_for(timeout=20_000)  # rebuilt
    page.locator("#judge-judge input").focus()
    page.keyboard.press("Escape")  # no dropdown list left open in the screenshot
    page.locator("#judge-head").click()
    screenshot(page, "evaluate")


def test_plain_notes_for_a_run_without_test_set_and_a_running_run(page, ui_workspace):
    before = tree_hash(ui_workspace / "runs")
    open_tab(page, "evaluate")
    pick(page, "eval-run", "runs/notest")
    note = wait_for_text(page, "eval-note", "has no test set")
    assert "⚠️" not in note and "⚠️" not in text_of(page, "eval-message")
    assert not page.locator("#eval-metrics").is_visible()
    page.locator("#judge-start").click()
    wait_for_text(page, "eval-message", "no test set to take prompts from")

    pick(page, "eval-run", "runs/busy")
    note = wait_for_text(page, "eval-note", "is running")
    assert "appears here when it finishes" in note and "⚠️" not in text_of(page, "eval-message")
    page.locator("#judge-start").click()
    wait_for_text(page, "eval-message", "still running")
    page.locator("#eval-rebuild").click()
    wait_for_text(page, "eval-message", "rebuild its report when it finishes")
    assert "Traceback" not in page.locator("body").inner_text()
    assert tree_hash(ui_workspace / "runs") == before


def test_rebuild_report(page, ui_workspace):
    report = ui_workspace / "runs" / "tiny" / "eval" / "report.html"
    report.unlink()
    open_tab(page, "evaluate")
    pick(page, "eval-run", "runs/tiny")
    wait_for_text(page, "eval-report", "has no report yet")
    page.locator("#eval-rebuild").click()
    wait_for_text(page, "eval-message", "rebuilt runs/tiny/eval/report.html")
    assert report.is_file()
    page.frame_locator("#eval-report iframe").locator("body").get_by_text("tiny").first.wait_for(timeout=20_000)
