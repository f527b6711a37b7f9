"""The Runs tab in a real browser: the history, comparing runs (table and overlaid curves), opening one in the live
view, deleting with confirmation; and the page staying responsive while a training process uses both cores."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

import pytest

from helpers import tiny_recipe
from uipage import SCREENSHOTS, field, open_tab, screenshot, text_of, wait_for_text


@pytest.fixture(scope="module")
def finished_runs(ui_workspace, tiny_model_dir):
    """Three finished tiny runs in the workspace (made with the CLI, as a user might have)."""
    from tunelab.cli import main

    for name, rate in (("alpha", 1e-3), ("beta", 5e-3), ("gamma", 1e-3)):
        (ui_workspace / f".{name}").mkdir()
        recipe = tiny_recipe(ui_workspace / f".{name}", tiny_model_dir, name=name,
                             output_dir=str(ui_workspace / "runs"), eval={"forgetting": False, "max_new_tokens": 4},
                             train={"max_steps": 6, "learning_rate": rate}, export={"merge": False})  # fmt: skip
        assert main(["run", str(recipe)]) == 0
    return ["alpha", "beta", "gamma"]


def pick(page, *names: str) -> None:
    """Choose these runs in the Runs tab's multi-select (whatever was chosen before is cleared)."""
    clear = page.locator("#runs-pick .remove-all")
    if clear.count():
        clear.first.click()
    for name in names:
        field(page, "runs-pick").fill(name)
        page.locator(f"#runs-pick li[aria-label='{name}']").first.click()
    field(page, "runs-pick").press("Escape")


def test_history_compare_open_delete(finished_runs, page, ui_server):
    open_tab(page, "runs")
    page.locator("#runs-refresh").click()
    for name in finished_runs:
        wait_for_text(page, "runs-table", name)
    assert "completed" in text_of(page, "runs-table") and "lora" in text_of(page, "runs-table")

    pick(page, "runs/alpha", "runs/beta")
    page.locator("#runs-compare").click()
    compared = wait_for_text(page, "runs-compared", "beta")
    assert "alpha" in compared and "gamma" not in compared
    page.locator("#runs-curves canvas, #runs-curves svg").first.wait_for(timeout=20_000)
    screenshot(page, "runs-compare")

    pick(page, "runs/beta")
    page.locator("#runs-open").click()
    wait_for_text(page, "runs-message", "watching")
    open_tab(page, "train")
    wait_for_text(page, "progress", "beta")

    open_tab(page, "runs")
    pick(page, "runs/gamma")
    page.locator("#runs-delete").click()
    wait_for_text(page, "runs-message", "cannot be undone")
    page.locator("#runs-cancel").click()
    assert (ui_server.workspace / "runs" / "gamma").is_dir()
    page.locator("#runs-delete").click()
    page.locator("#runs-confirm").click()
    wait_for_text(page, "runs-message", "deleted runs/gamma")
    assert not (ui_server.workspace / "runs" / "gamma").exists()
    assert (ui_server.workspace / "runs" / "alpha" / "adapter").is_dir()  # the others are untouched


def test_deleting_needs_exactly_one_run(finished_runs, page):
    open_tab(page, "runs")
    page.locator("#runs-refresh").click()
    pick(page, "runs/alpha", "runs/beta")
    page.locator("#runs-delete").click()
    assert "exactly one" in wait_for_text(page, "runs-message", "exactly one")


def time_action(page, number: int) -> float:
    """Seconds from an edit in the Train form to the page showing the recipe validated again (the server builds the
    recipe, checks every path and runs `tunelab validate`'s checks): a new run name each time, so the answer differs."""
    name = f"resp-{number}-{time.monotonic_ns()}"
    box = field(page, "f-name")
    box.fill(name)
    started = time.perf_counter()
    box.press("Tab")
    page.wait_for_function("n => document.querySelector('#recipe-yaml').innerText.includes(n)", arg=name,
                           timeout=30_000)  # fmt: skip
    return time.perf_counter() - started


def test_the_page_stays_responsive_while_training_uses_both_cores(finished_runs, page, ui_server, tiny_model_dir):
    """A page action answers quickly while a `tunelab run` keeps both cores busy (figures: screenshots/*.json)."""
    open_tab(page, "train")
    idle = [time_action(page, n) for n in range(5)]
    workspace = ui_server.workspace
    (workspace / ".busy").mkdir()
    endless = {"max_steps": 100000, "save_steps": 100000, "torch_threads": os.cpu_count()}
    recipe = tiny_recipe(workspace / ".busy", tiny_model_dir, name="busy", output_dir=str(workspace / "runs"),
                         eval={"forgetting": False, "base": False}, export={"merge": False}, train=endless)  # fmt: skip
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "tunelab.cli", "run", str(recipe)]
    busy = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        status = workspace / "runs" / "busy" / "status.json"
        while not status.exists() or json.loads(status.read_text()).get("phase") != "training":
            assert time.monotonic() < deadline and busy.poll() is None, "training did not start"
            time.sleep(0.5)
        time.sleep(3)
        loaded = [time_action(page, n) for n in range(8)]
    finally:
        busy.send_signal(2)
        busy.wait(timeout=60)
    figures = {"idle_median_s": statistics.median(idle), "training_median_s": statistics.median(loaded),
               "training_max_s": max(loaded), "cores": os.cpu_count()}  # fmt: skip
    SCREENSHOTS.mkdir(exist_ok=True)
    (SCREENSHOTS / "responsiveness.json").write_text(json.dumps(figures, indent=2))
    print(f"\npage action while training: {figures}")
    assert figures["training_median_s"] < 3.0 and figures["training_max_s"] < 10.0  # generous: the bar is 1 s
