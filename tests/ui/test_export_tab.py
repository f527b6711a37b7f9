"""Browser tests of the Export & serve tab: a merged export started from the page shows its verification; a server
started with the run as an adapter shows its endpoint, models and snippet, answers the official `openai` client,
is still shown after a reload, and stops; bad input (a folder outside the workspace, a run without an adapter, a port
in use) is refused in the page and leaves the runs as they were."""

from __future__ import annotations

import contextlib
import io
import socket
import time

import pytest

from tunelab.ui import jobs
from tunelab.ui.workspace import Workspace
from uipage import field, fill, finish_tiny_run, open_tab, screenshot, text_of, unfinished_run, wait_for_text


@pytest.fixture(scope="module")
def ui_workspace(ui_workspace):
    run = finish_tiny_run(ui_workspace)
    unfinished_run(ui_workspace, run, "stopped", "interrupted")
    yield ui_workspace
    space = Workspace.open(ui_workspace)
    if jobs.serve_state(space) is not None:  # a test that failed half-way leaves no server behind
        jobs.stop_serve(space)


def open_export(page) -> None:
    """Open the tab and wait for what opening it fills in (the newest run, its default folder)."""
    open_tab(page, "export")
    script = "() => document.querySelector('#export-out textarea, #export-out input').value !== ''"
    page.wait_for_function(script, timeout=20_000)


def choose(page, elem_id: str, value: str) -> None:
    """Type a value into a dropdown that takes typed values."""
    box = field(page, elem_id)
    box.fill(value)
    box.press("Enter")


def wait_for_value(page, elem_id: str, value: str) -> None:
    """Wait until a field holds `value` (picking a run or kind fills in the default folder a moment later)."""
    script = "([id, value]) => document.querySelector(`#${id} textarea, #${id} input`).value === value"
    page.wait_for_function(script, arg=[elem_id, value], timeout=20_000)


def snippet_text(page) -> str:
    return "\n".join(page.locator("#serve-snippet .cm-line").all_inner_texts())


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_bad_export_input_is_refused(page, ui_workspace):
    run = ui_workspace / "runs" / "tiny"
    before = sorted(p.name for p in run.iterdir())
    open_export(page)
    choose(page, "export-run", "runs/stopped")
    page.locator("#export-kind label", has_text="adapter").click()
    wait_for_value(page, "export-out", "runs/stopped/export/adapter")
    page.locator("#export-start").click()
    assert "has no LoRA adapter" in wait_for_text(page, "export-message", "⚠", timeout=20)
    page.locator("#export-kind label", has_text="merged").click()
    page.locator("#export-start").click()
    assert "no trained model yet" in wait_for_text(page, "export-message", "trained model", timeout=20)
    choose(page, "export-run", "runs/tiny")
    wait_for_value(page, "export-out", "runs/tiny/export/merged")
    fill(page, "export-out", str(ui_workspace.parent / "outside"))
    page.locator("#export-start").click()
    assert "outside the workspace" in wait_for_text(page, "export-message", "outside", timeout=20)
    fill(page, "export-out", "runs/tiny/adapter")
    page.locator("#export-start").click()
    assert "inside the run itself" in wait_for_text(page, "export-message", "inside the run", timeout=20)
    assert not (ui_workspace.parent / "outside").exists()
    assert sorted(p.name for p in run.iterdir()) == before  # nothing was written into (or removed from) the run


def test_export_merged_shows_the_verification(page, ui_workspace):
    open_export(page)
    choose(page, "export-run", "runs/tiny")
    page.locator("#export-kind label", has_text="merged").click()
    wait_for_value(page, "export-out", "runs/tiny/export/merged")
    page.locator("#export-start").click()
    wait_for_text(page, "export-message", "started", timeout=20)
    assert "done" in wait_for_text(page, "export-status", "done", "failed", timeout=120)
    verification = wait_for_text(page, "export-verification", "identical", "differ", timeout=20)
    assert "identical greedy outputs" in verification
    assert "runs/tiny/export/merged" in text_of(page, "export-status")
    assert (ui_workspace / "runs/tiny/export/merged/verification.json").is_file()


def test_serve_the_run_call_it_reload_and_stop(page, ui_server, ui_workspace):
    open_export(page)
    fill(page, "serve-port", str(ui_server.port))  # bad input first: a port in use
    page.locator("#serve-start").click()
    assert "in use" in wait_for_text(page, "serve-message", "⚠", timeout=20)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    fill(page, "serve-port", str(port))
    choose(page, "serve-model", "models/tiny")
    field(page, "serve-adapters").click()
    page.locator("#serve-adapters [role=option]", has_text="runs/tiny").click()
    page.keyboard.press("Escape")
    page.locator("#serve-start").click()
    wait_for_text(page, "serve-message", "starting", timeout=20)  # (it shows the port error until then)
    status = wait_for_text(page, "serve-status", "serving on", "exited", timeout=90)
    endpoint = f"http://127.0.0.1:{port}/v1"
    assert endpoint in status
    models = wait_for_text(page, "serve-models", "tiny", timeout=20)
    assert "models/tiny" in models and "Extract the order" in models  # the adapter's default system prompt
    code = snippet_text(page)
    assert endpoint in code and 'model="tiny"' in code
    screenshot(page, "export")
    _call_with_openai(endpoint, code)
    page.reload()
    page.locator("#tabs").wait_for(timeout=60_000)
    open_export(page)
    assert endpoint in wait_for_text(page, "serve-status", "serving on", timeout=30)
    page.locator("#serve-stop").click()
    wait_for_text(page, "serve-message", "stopped", timeout=20)
    wait_for_text(page, "serve-status", "No server", timeout=20)
    deadline = time.monotonic() + 30
    while port_open(port) and time.monotonic() < deadline:
        time.sleep(0.25)
    assert not port_open(port), "the server still listens after Stop"


def _call_with_openai(endpoint: str, code: str) -> None:
    """The official client gets an answer from the adapter; the page's snippet runs as it is."""
    from openai import OpenAI

    client = OpenAI(base_url=endpoint, api_key="not-needed")
    assert {model.id for model in client.models.list()} == {"models/tiny", "tiny"}
    answer = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hello"}],
                                            max_tokens=8, temperature=0)  # fmt: skip
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert isinstance(answer.choices[0].message.content, str)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "snippet", "exec"), {})
    assert "'models/tiny', 'tiny'" in printed.getvalue()
