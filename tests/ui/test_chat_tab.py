"""Browser tests of the Chat tab: a run's base model and the run side by side, answering one prompt, streamed; the
run's training system prompt shown by default; bad targets (outside the workspace, missing, still training) refused
in the page, in words."""

from __future__ import annotations

import os

import pytest

from uipage import field, fill, finish_tiny_run, open_tab, screenshot, text_of, unfinished_run, wait_for_text

SYSTEM_PROMPT_START = "Extract the order as JSON"  # the quickstart data's shared system prompt


@pytest.fixture(scope="module")
def ui_workspace(ui_workspace):
    run = finish_tiny_run(ui_workspace)
    unfinished_run(ui_workspace, run, "busy", "running")
    os.utime(run)  # the finished run is the newest: the page's default pick
    return ui_workspace


def pick(page, side: str, value: str) -> None:
    """Type a target into a pane's picker (it accepts any path, not only the listed ones)."""
    box = field(page, f"chat-{side}-target")
    box.fill(value)
    box.press("Enter")


def answer_text(page, side: str) -> str:
    answers = page.locator(f"#chat-{side} [data-testid=bot]")
    return answers.last.inner_text() if answers.count() else ""


def watch_lengths(page, side: str) -> None:
    """Record the length of the pane's last answer at every change of the page, to see it grow while streaming."""
    page.evaluate(
        """(side) => {
            window.lengths = window.lengths || {};
            window.lengths[side] = [];
            const pane = document.querySelector(`#chat-${side}`);
            new MutationObserver(() => {
                const answers = pane.querySelectorAll('[data-testid=bot]');
                if (answers.length) window.lengths[side].push(answers[answers.length - 1].innerText.length);
            }).observe(pane, {subtree: true, childList: true, characterData: true});
        }""",
        side,
    )


def test_base_and_run_side_by_side_streamed(page):
    open_tab(page, "chat")
    wait_for_text(page, "chat-right-status", "runs/tiny", timeout=30)  # opening the tab picks the newest run
    pick(page, "left", "models/tiny")
    pick(page, "right", "runs/tiny")
    wait_for_text(page, "chat-left-status", "model **models/tiny**", "model models/tiny", timeout=30)
    right = wait_for_text(page, "chat-right-status", "LoRA adapter on", timeout=30)
    assert "system prompt" in right
    assert field(page, "chat-system").input_value().startswith(SYSTEM_PROMPT_START)
    fill(page, "chat-temperature", "1")  # a random tiny model's greedy answer can be only newlines
    fill(page, "chat-seed", "0")
    for side in ("left", "right"):
        watch_lengths(page, side)
    fill(page, "chat-prompt", "Two red shirts, size M, to Alice in Berlin")
    page.locator("#chat-send").click()
    for side in ("left", "right"):
        wait_for_text(page, f"chat-{side}-status", "✓", "⚠", timeout=90)
        assert "✓" in text_of(page, f"chat-{side}-status"), text_of(page, f"chat-{side}-status")
        assert answer_text(page, side).strip(), f"the {side} pane's answer is empty"
        lengths = page.evaluate("(side) => window.lengths[side]", side)
        assert len({n for n in lengths if n > 0}) >= 3, f"the {side} answer did not grow while streaming: {lengths}"
    assert "Alice in Berlin" in text_of(page, "chat-left")  # the same prompt went to both panes
    assert "Alice in Berlin" in text_of(page, "chat-right")
    page.wait_for_function(  # the box empties once the prompt is sent
        "() => document.querySelector('#chat-prompt textarea').value === ''", timeout=10_000
    )
    screenshot(page, "chat")
    page.locator("#chat-clear").click()
    page.wait_for_function("() => !document.querySelector('#chat-right [data-testid=bot]')", timeout=10_000)


def test_bad_targets_are_refused_in_words(page, ui_workspace):
    open_tab(page, "chat")
    wait_for_text(page, "chat-right-status", "runs/tiny", timeout=30)
    outside = ui_workspace.parent / "elsewhere"
    outside.mkdir(exist_ok=True)
    pick(page, "left", str(outside))
    assert "outside the workspace" in wait_for_text(page, "chat-left-status", "⚠", timeout=20)
    pick(page, "left", "models/nope")
    assert "does not exist" in wait_for_text(page, "chat-left-status", "nope", timeout=20)
    pick(page, "left", "runs/busy")
    assert "still training" in wait_for_text(page, "chat-left-status", "busy", timeout=20)
    fill(page, "chat-prompt", "hello")
    page.locator("#chat-send").click()  # the bad side says why; the good side still answers
    wait_for_text(page, "chat-right-status", "✓", timeout=60)
    assert "still training" in text_of(page, "chat-left-status")
    assert not page.locator("#chat-left [data-testid=bot]").count()
    assert (ui_workspace / "runs" / "tiny" / "adapter" / "adapter_config.json").is_file()
    screenshot(page, "chat-bad-input")
