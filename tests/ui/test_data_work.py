"""The Data tab's work without a browser: the chosen data as a recipe data section (paths kept inside the workspace),
a record's preview with the trained tokens marked, the audit folder, and the hand-over to the Train tab."""

from __future__ import annotations

import pytest
import yaml

from helpers import quickstart_records, write_jsonl
from tunelab.ui import data_work
from tunelab.ui.workspace import UIError, Workspace, size_text


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    space = Workspace.open(tmp_path / "ws")
    (space.root / "data").mkdir()
    write_jsonl(space.root / "data" / "train.jsonl", quickstart_records("train", 6))
    write_jsonl(space.root / "data" / "test.jsonl", quickstart_records("test", 2))
    return space


def test_data_section_resolves_inside_the_workspace(workspace):
    data = data_work.data_section(workspace, "data/train.jsonl\n\n", "data/test.jsonl", "test", "", [])
    assert data.sources[0].path == str(workspace.root / "data" / "train.jsonl")
    assert data.test == str(workspace.root / "data" / "test.jsonl") and data.validation is None
    as_validation = data_work.data_section(workspace, "data/train.jsonl", "data/test.jsonl", "validation", "", [])
    assert as_validation.validation == str(workspace.root / "data" / "test.jsonl") and as_validation.test is None


@pytest.mark.parametrize(
    ("paths", "registry", "datasets", "said"),
    [
        ("/etc/passwd", "", [], "outside the workspace"),
        ("../x.jsonl", "", [], "outside the workspace"),
        ("data/none.jsonl", "", [], "does not exist"),
        ("", "", [], "no training data chosen"),
        ("", "", ["orders"], "the registry path is empty"),
        ("data/train.jsonl", "data/train.jsonl", [], "choose one or more datasets"),
    ],
)
def test_data_section_refuses_in_words(workspace, paths, registry, datasets, said):
    with pytest.raises(UIError, match=said):
        data_work.data_section(workspace, paths, "", "test", registry, datasets)


def test_model_argument(workspace):
    assert data_work.model_argument(workspace, "smollm2-135m-instruct") == "smollm2-135m-instruct"
    assert data_work.model_argument(workspace, "org/model") == "org/model"  # a hub id
    assert data_work.model_argument(workspace, "http://127.0.0.1:8000/v1", urls=True).startswith("http://")
    with pytest.raises(UIError, match="not a URL"):
        data_work.model_argument(workspace, "http://127.0.0.1:8000/v1")
    with pytest.raises(UIError, match="outside the workspace"):
        data_work.model_argument(workspace, "/etc")
    with pytest.raises(UIError, match="empty"):
        data_work.model_argument(workspace, " ")


def test_preview_marks_trained_tokens_and_names_the_line(workspace, tiny_model_dir):
    data = data_work.data_section(workspace, "data/train.jsonl", "", "test", "", [])
    records = data_work.load_records(data).train
    tokenizer, fallback = data_work.tokenizer_for(str(tiny_model_dir))
    info, page = data_work.preview(records, 2, tokenizer, fallback, 1024)
    assert "record 2** of 6 training records" in info and "train.jsonl line 3" in info
    assert page.count('class="trained"') >= 1 and "&lt;|im_start|&gt;" in page  # escaped, never raw HTML
    with pytest.raises(UIError, match="record 6 is out of range: there are 6"):
        data_work.preview(records, 6, tokenizer, fallback, 1024)


def test_invalid_records_are_named(workspace):
    broken = workspace.root / "data" / "broken.jsonl"
    broken.write_text((workspace.root / "data" / "train.jsonl").read_text() + "{not json\n")
    loaded = data_work.load_records(data_work.data_section(workspace, "data/broken.jsonl", "", "test", "", []))
    note = data_work.invalid_note(loaded.invalid)
    assert len(loaded.train) == 6 and note.startswith("⚠️ 1 invalid record left out: broken.jsonl line 7")


def test_audit_writes_a_new_folder_and_never_reuses_one(workspace):
    data = data_work.data_section(workspace, "data/train.jsonl", "data/test.jsonl", "test", "", [])
    folder = data_work.audit_folder(workspace, "first try")
    written, report = data_work.run_audit(data, data_work.load_records(data), None, folder)
    assert folder == workspace.audits / "first_try" and written["md"].is_file()
    assert report["summary"]["records"] == 8 and "![" not in data_work.report_markdown(written["md"])
    assert yaml.safe_load((folder / "data.yaml").read_text())["data"]["test"].endswith("test.jsonl")
    with pytest.raises(UIError, match="exists already"):
        data_work.audit_folder(workspace, "first try")
    assert data_work.audit_folder(workspace, "../../elsewhere") == workspace.audits / "elsewhere"
    assert data_work.audit_folder(workspace, "").name.startswith("audit-")


def test_train_fragment_has_workspace_paths(workspace):
    data = data_work.data_section(workspace, "data/train.jsonl", "data/test.jsonl", "test", "", [])
    text, fields = data_work.train_fragment(workspace, data, str(workspace.root / "models" / "tiny"))
    section = {"sources": [{"path": "data/train.jsonl"}], "test": "data/test.jsonl"}
    assert yaml.safe_load(text) == {"model": {"name": "models/tiny"}, "data": section}
    assert fields == {"model.name": "models/tiny", "data.sources": "data/train.jsonl", "data.test": "data/test.jsonl"}


def test_size_text():
    assert size_text(1048) == "1.02 KB" and size_text(200 * 2**20) == "200 MB"
    assert size_text(10) == "10 bytes"
