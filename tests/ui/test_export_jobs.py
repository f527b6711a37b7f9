"""Unit tests of the Export & serve tab's helpers: export kinds, folder checks, progress and verification in words,
the serve form's checks, the models table and the snippet."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest
from test_chat_models import fake_run

from tunelab.runs import RunDir
from tunelab.ui.export_jobs import (
    EXPORT_KINDS,
    EXPORT_LOG,
    EXPORT_STATE,
    check_exportable,
    check_out,
    default_out,
    export_progress,
    verification_text,
)
from tunelab.ui.export_serve import checked_port, models_table, served_adapters, served_base, snippet
from tunelab.ui.workspace import UIError, Workspace


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    space = Workspace.open(tmp_path / "space")
    for name in ("tiny", "other"):
        (space.root / "models" / name).mkdir(parents=True)
        (space.root / "models" / name / "config.json").write_text("{}")
    return space


def test_every_kind_has_words_and_a_default_folder(workspace):
    fake_run(workspace, "orders")
    for key, kind in EXPORT_KINDS.items():
        assert kind.english and kind.chinese and kind.needs in ("adapter", "model")
        assert default_out(workspace, "runs/orders", key) == f"runs/orders/export/{key}"


def test_export_folders_never_replace_a_run_or_other_files(workspace):
    run = fake_run(workspace, "orders")
    refused = [(workspace.root, "holds a run"), (workspace.runs, "holds a run"), (run, "holds a run"),
               (run / "adapter", "inside the run"), (workspace.root / "models", "not an earlier export")]  # fmt: skip
    for folder, words in refused:
        with pytest.raises(UIError, match=words):
            check_out(workspace, folder, overwrite=True)
    earlier = run / "export" / "merged"
    earlier.mkdir(parents=True)
    (earlier / "README.md").write_text("x")
    (earlier / "config.json").write_text("{}")
    with pytest.raises(UIError, match="tick 'replace'"):
        check_out(workspace, earlier, overwrite=False)
    check_out(workspace, earlier, overwrite=True)
    check_out(workspace, run / "export" / "adapter", overwrite=False)


def test_a_run_without_an_adapter_is_refused(workspace):
    run = RunDir(fake_run(workspace, "early", adapter=False))
    with pytest.raises(UIError, match="has no LoRA adapter"):
        check_exportable(workspace, run, EXPORT_KINDS["adapter"])
    with pytest.raises(Exception, match="no trained model yet"):
        check_exportable(workspace, run, EXPORT_KINDS["merged"])


def test_a_failed_export_says_why(workspace):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    state = {"pid": gone.pid, "run": "runs/orders", "kind": "merged", "out": "runs/orders/export/merged",
             "started": time.time()}  # fmt: skip
    (workspace.state / EXPORT_STATE).write_text(json.dumps(state))
    (workspace.state / EXPORT_LOG).write_text("$ tunelab export\nerror: runs/orders has no trained model yet\n")
    status, verification = export_progress(workspace)
    assert "failed: runs/orders has no trained model yet" in status and verification == ""


def test_verification_in_words(tmp_path):
    check = {"identical_outputs": True, "mismatches": 0, "max_abs_logit_diff": 3e-7, "prompts": 4, "dtype": "float32"}
    (tmp_path / "verification.json").write_text(json.dumps(check))
    text = verification_text(tmp_path)
    assert "identical greedy outputs" in text and "3.00e-07" in text and "| 4 |" in text
    (tmp_path / "verification.json").write_text(json.dumps(check | {"identical_outputs": False, "mismatches": 2}))
    assert "2 outputs differ" in verification_text(tmp_path)


def test_the_serve_form_is_checked(workspace):
    fake_run(workspace, "orders")
    assert served_base(workspace, "base:runs/orders") == ("models/tiny", str(workspace.root / "models" / "tiny"))
    with pytest.raises(UIError, match="add it under adapters"):
        served_base(workspace, "runs/orders")
    assert served_adapters(workspace, ["runs/orders"], str(workspace.root / "models" / "tiny")) == {
        "orders": "runs/orders"
    }
    with pytest.raises(UIError, match="was trained on models/tiny, not on models/other"):
        served_adapters(workspace, ["runs/orders"], str(workspace.root / "models" / "other"))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        with pytest.raises(UIError, match="in use"):
            checked_port(busy.getsockname()[1])
    for bad in (80, 70000, 8000.5, "x", None):
        with pytest.raises(UIError, match="whole number from 1024"):
            checked_port(bad)


def test_models_table_and_snippet():
    models = [{"id": "models/tiny", "parent": None, "default_system_prompt": None},
              {"id": "orders", "parent": "models/tiny", "default_system_prompt": "Answer\nin JSON."}]  # fmt: skip
    table = models_table(models)
    assert "| `orders` | adapter on `models/tiny` | Answer in JSON. |" in table
    code = snippet("http://127.0.0.1:8123/v1", ["models/tiny", "orders"])
    assert 'base_url="http://127.0.0.1:8123/v1"' in code and 'model="orders"' in code
    compile(code, "snippet", "exec")
