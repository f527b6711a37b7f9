"""Browser tests of `tunelab ui`: the real UI in a subprocess, driven by Playwright in Debian's Chromium.

Each test module gets its own UI server on a free port and its own workspace (the tiny model in `models/tiny`, a
slice of the quickstart data in `data/`). Screenshots go to `tests/ui/screenshots/` (not committed), to look at.
Skipped when Chromium or Playwright is missing (`make test` installs both where it can).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from uipage import BROWSER_ARGS, CHROMIUM, make_workspace, start_ui


@pytest.fixture(scope="module")
def ui_workspace(tmp_path_factory, tiny_model_dir) -> Path:
    return make_workspace(tmp_path_factory.mktemp("workspace"), tiny_model_dir)


@pytest.fixture(scope="module")
def ui_server(ui_workspace):
    server = start_ui(ui_workspace)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (make test installs it where it can)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, ui_server):
    context = browser.new_context(viewport={"width": 1500, "height": 1100})
    opened = context.new_page()
    opened.goto(ui_server.url)
    opened.locator("#tabs").wait_for(timeout=60_000)
    yield opened
    context.close()
