"""The Data tab in the browser: preview a record with its trained tokens marked, audit the data, upload a file, and
bad input (paths outside the workspace, a missing file, a file that is not data, a broken JSONL line, an oversized
upload) said in the page while every file stays as it was."""

from __future__ import annotations

import json
import time

import pytest

from helpers import quickstart_records, write_jsonl
from uipage import field, fill, make_workspace, open_tab, screenshot, start_ui, text_of, tree_hash, wait_for_text


def wait_for_value(page, elem_id: str, wanted: str, timeout: float = 60) -> str:
    """Wait until a text box holds `wanted` (a box's text is its value, not its inner text); returns the value."""
    deadline = time.monotonic() + timeout
    value = ""
    while time.monotonic() < deadline:
        value = field(page, elem_id).input_value()
        if wanted in value:
            return value
        time.sleep(0.2)
    raise AssertionError(
        f"#{elem_id} never held {wanted!r}; it holds {value!r}; message: {text_of(page, 'data-message')!r}"
    )


def preview(page, paths: str, index: int = 0) -> None:
    fill(page, "data-paths", paths)
    fill(page, "data-index", str(index))
    page.locator("#data-preview-button").click()


def test_preview_audit_and_use_in_train(page, ui_workspace):
    open_tab(page, "data")
    fill(page, "data-eval", "data/test.jsonl")
    preview(page, "data/train.jsonl", 3)
    info = wait_for_text(page, "data-preview-info", "record 3")
    assert "of 48 training records" in info and "train.jsonl line 4" in info and "trained" in info
    assert page.locator("#data-preview .trained").count() >= 1
    assert page.locator("#data-preview .context").count() >= 1
    assert "assistant" in text_of(page, "data-preview")

    page.locator("#audit-run").click()
    summary = wait_for_value(page, "audit-summary", "audited 54 records", timeout=90)
    assert "leaked evaluation records: 0" in summary
    page.locator("#audit-token-lengths img").first.wait_for(state="visible", timeout=30_000)
    page.locator("#audit-turns img").first.wait_for(state="visible", timeout=30_000)
    folders = list((ui_workspace / "audits").iterdir())
    assert len(folders) == 1 and (folders[0] / "report.md").is_file() and (folders[0] / "token_lengths.png").is_file()
    assert folders[0].name in text_of(page, "audit-where")
    page.locator("#audit-report-box .label-wrap").first.click()
    wait_for_text(page, "audit-report", "Data audit")

    page.locator("#data-use").click()
    wait_for_text(page, "data-for-train", "data/train.jsonl")
    assert "test: data/test.jsonl" in text_of(page, "data-for-train")
    assert "models/tiny" in text_of(page, "data-for-train")
    open_tab(page, "train")  # the Train form took the choice
    assert field(page, "f-data-sources").input_value() == "data/train.jsonl"
    assert field(page, "f-data-test").input_value() == "data/test.jsonl"
    assert field(page, "f-model-name").input_value() == "models/tiny"
    open_tab(page, "data")
    screenshot(page, "data")

    page.locator("#language").get_by_text("中文").click()  # every label follows the language
    wait_for_text(page, "data-preview-button", "预览")
    assert "运行审查" in text_of(page, "audit-run") and "训练文件" in text_of(page, "data-paths")
    assert "数据" in text_of(page, "tab-data-button")


def test_upload_and_preview(page, ui_workspace, tmp_path):
    upload = write_jsonl(tmp_path / "my orders.jsonl", quickstart_records("train", 5))
    open_tab(page, "data")
    page.locator("#data-upload input[type=file]").set_input_files(str(upload))
    wait_for_text(page, "data-message", "stored uploads/my_orders.jsonl")
    assert field(page, "data-paths").input_value() == "uploads/my_orders.jsonl"
    assert (ui_workspace / "uploads" / "my_orders.jsonl").read_bytes() == upload.read_bytes()
    fill(page, "data-index", "1")
    page.locator("#data-preview-button").click()
    info = wait_for_text(page, "data-preview-info", "record 1")
    assert "of 5 training records" in info and "my_orders.jsonl line 2" in info
    assert page.locator("#data-preview .trained").count() >= 1

    held_out = write_jsonl(tmp_path / "held_out.jsonl", quickstart_records("test", 3))
    with page.expect_file_chooser() as chooser:
        page.locator("#data-eval-upload").click()
    chooser.value.set_files(str(held_out))
    wait_for_text(page, "data-message", "stored uploads/held_out.jsonl")
    assert field(page, "data-eval").input_value() == "uploads/held_out.jsonl"


def test_registry_datasets(page, ui_workspace):
    registry = {"orders": {"file_name": "train.jsonl", "formatting": "openai"},
                "orders_test": {"file_name": "test.jsonl", "formatting": "openai"},
                "elsewhere": {"file_name": "/etc/hostname", "formatting": "openai"}}  # fmt: skip
    (ui_workspace / "data" / "dataset_info.json").write_text(json.dumps(registry))
    open_tab(page, "data")
    fill(page, "data-registry", "data/dataset_info.json")
    page.locator("#data-registry-read").click()
    wait_for_text(page, "data-message", "3 datasets in data/dataset_info.json")
    page.locator("#data-datasets input").click()
    page.get_by_role("option", name="orders", exact=True).click()
    page.locator("#data-preview-head").click()
    preview(page, "", 0)
    assert "of 48 training records" in wait_for_text(page, "data-preview-info", "record 0")
    page.locator("#data-datasets input").click()
    page.get_by_role("option", name="elsewhere", exact=True).click()
    page.locator("#data-preview-head").click()
    page.locator("#data-preview-button").click()
    wait_for_text(page, "data-message", 'entry "elsewhere" names /etc/hostname, outside the workspace')


def test_bad_input_is_said_in_the_page_and_changes_nothing(page, ui_workspace):
    lines = [json.dumps(record, ensure_ascii=False) for record in quickstart_records("train", 4)]
    (ui_workspace / "data" / "broken.jsonl").write_text("\n".join([*lines[:2], '{"messages": [', *lines[2:]]) + "\n")
    (ui_workspace / "data" / "notes.txt").write_text("not data\n")
    before = tree_hash(ui_workspace)
    open_tab(page, "data")
    cases = [
        ("/etc/passwd", "'/etc/passwd' is outside the workspace"),
        ("../x.jsonl", "'../x.jsonl' is outside the workspace"),
        ("data/missing.jsonl", "'data/missing.jsonl' does not exist"),
        ("data/notes.txt", "unsupported file type '.txt'"),
    ]
    for paths, said in cases:
        preview(page, paths)
        assert wait_for_text(page, "data-message", said).startswith("⚠️")
    preview(page, "data/broken.jsonl", 0)
    message = wait_for_text(page, "data-message", "broken.jsonl line 3")
    assert "invalid JSON" in message and "1 invalid record left out" in message
    wait_for_text(page, "data-preview-info", "of 4 training records")

    fill(page, "data-max-length", "0")
    preview(page, "data/train.jsonl", 99)
    wait_for_text(page, "data-message", "max_length must be a whole number of tokens, 1 or more")
    fill(page, "data-max-length", "1024")
    page.locator("#data-preview-button").click()
    wait_for_text(page, "data-message", "record 99 is out of range: there are 48 training records")

    fill(page, "data-paths", "/etc/passwd")
    page.locator("#audit-run").click()
    wait_for_text(page, "data-message", "'/etc/passwd' is outside the workspace")
    fill(page, "data-paths", "data/train.jsonl")
    fill(page, "data-registry", "../dataset_info.json")
    page.locator("#data-registry-read").click()
    wait_for_text(page, "data-message", "'../dataset_info.json' is outside the workspace")
    assert "Traceback" not in page.locator("body").inner_text()
    assert tree_hash(ui_workspace) == before  # no upload, audit or data file was written or changed


@pytest.fixture(scope="module")
def small_limit_server(tmp_path_factory, tiny_model_dir):
    workspace = make_workspace(tmp_path_factory.mktemp("small-limit"), tiny_model_dir)
    server = start_ui(workspace, "--max-upload-mb", "0.001")
    yield server
    server.stop()


def test_oversized_upload_is_refused_in_the_page(browser, small_limit_server, tmp_path):
    workspace = small_limit_server.workspace
    big = write_jsonl(tmp_path / "big.jsonl", quickstart_records("train", 20))
    before = tree_hash(workspace)
    context = browser.new_context(viewport={"width": 1500, "height": 1100})
    try:
        page = context.new_page()
        page.goto(small_limit_server.url)
        page.locator("#tabs").wait_for(timeout=60_000)
        open_tab(page, "data")
        assert "1.02 KB" in text_of(page, "data-upload-limit")
        page.locator("#data-upload input[type=file]").set_input_files(str(big))
        page.get_by_text("exceed the maximum allowed size").first.wait_for(timeout=30_000)
        assert "big.jsonl" in page.locator("body").inner_text()
        assert field(page, "data-paths").input_value() == ""
    finally:
        context.close()
    assert not list((workspace / "uploads").iterdir())
    assert tree_hash(workspace) == before
