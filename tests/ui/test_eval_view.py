"""The Evaluate tab's work without a browser: plain notes for unfinished runs and runs without a test set, the
report embedded escaped, and the `tunelab judge` command with every path checked to lie inside the workspace."""

from __future__ import annotations

import os
import time

import psutil
import pytest
import yaml

from tunelab.runs import RunDir, this_process, write_json
from tunelab.ui import eval_view
from tunelab.ui.workspace import UIError, Workspace


@pytest.fixture
def workspace(tmp_path) -> Workspace:
    space = Workspace.open(tmp_path / "ws")
    (space.root / "models" / "tiny").mkdir(parents=True)
    (space.root / "models" / "tiny" / "config.json").write_text("{}")
    (space.root / "data").mkdir()
    (space.root / "data" / "test.jsonl").write_text("{}\n")
    return space


def another_process() -> dict:
    """A live process other than this one (the test's parent) as the one working on a run."""
    parent = psutil.Process(os.getppid())
    return this_process() | {"pid": parent.pid, "process_started": parent.create_time()}


def make_run(workspace: Workspace, name: str, test: bool = True, state: str = "completed") -> RunDir:
    run = RunDir(workspace.runs / name)
    (run.adapter).mkdir(parents=True)
    (run.adapter / "adapter_config.json").write_text("{}")
    data = {"sources": [{"path": str(workspace.root / "data" / "test.jsonl")}]}
    if test:
        data["test"] = str(workspace.root / "data" / "test.jsonl")
    recipe = {"name": name, "model": {"name": str(workspace.root / "models" / "tiny")}, "data": data}
    (run.path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    status = {"state": state, "step": 3, "updated": time.time()}
    write_json(run.status_file, status | (another_process() if state == "running" else {}))
    return run


def test_notes_are_plain_words(workspace):
    running = make_run(workspace, "busy", state="running")
    shown = eval_view.view(running)
    assert shown["note"].startswith("⏳ busy is running") and shown["metrics"] is None
    failed = make_run(workspace, "broken", state="failed")
    assert eval_view.state_note(failed, failed.status()).startswith("ℹ️ broken did not finish: failed")
    notest = make_run(workspace, "notest", test=False)
    shown = eval_view.view(notest)
    assert "has no test set" in shown["note"] and "⚠️" not in shown["note"]
    assert "has no report yet" in shown["report"]


def test_report_is_embedded_escaped(workspace):
    run = make_run(workspace, "done")
    run.eval_dir.mkdir()
    (run.eval_dir / "report.html").write_text('<html><body><p title="x">a &amp; b</p></body></html>')
    frame = eval_view.report_frame(run)
    assert frame.startswith("<iframe") and 'sandbox=""' in frame
    assert 'srcdoc="&lt;html&gt;&lt;body&gt;&lt;p title=&quot;x&quot;&gt;a &amp;amp; b' in frame


def test_judge_command(workspace):
    run = make_run(workspace, "done")
    other = make_run(workspace, "other")
    base = eval_view.base_model(run)
    assert eval_view.opponents(workspace, run)[0] == ("base model (models/tiny)", base)
    assert ("runs/other", "runs/other") in eval_view.opponents(workspace, run)
    command = eval_view.judge_command(workspace, run, base, "models/tiny", "default", 2, "")
    assert command == ["judge", "--a", "runs/done", "--b", "models/tiny", "--judge", "models/tiny", "--limit", "2"]
    url = eval_view.judge_command(workspace, run, "runs/other", "http://127.0.0.1:9/v1", "gpt", None, "data/test.jsonl")
    assert url[4:] == ["runs/other", "--judge", "http://127.0.0.1:9/v1", "--judge-model", "gpt", "--data",
                       str(workspace.root / "data" / "test.jsonl")]  # fmt: skip
    assert other.path.is_dir()


@pytest.mark.parametrize(
    ("other", "judge", "limit", "prompts", "said"),
    [
        ("runs/other", "/etc", None, "", "outside the workspace"),
        ("../elsewhere", "models/tiny", None, "", "outside the workspace"),
        ("runs/other", "models/tiny", 0, "", "must be 1 or more"),
        ("runs/other", "models/tiny", None, "/etc/passwd", "outside the workspace"),
        ("runs/other", "", None, "", "the judge is empty"),
    ],
)
def test_judge_command_refuses_in_words(workspace, other, judge, limit, prompts, said):
    run = make_run(workspace, "done")
    make_run(workspace, "other")
    with pytest.raises(UIError, match=said):
        eval_view.judge_command(workspace, run, other, judge, "default", limit, prompts)


def test_judge_needs_prompts_and_a_finished_run(workspace):
    notest = make_run(workspace, "notest", test=False)
    with pytest.raises(UIError, match="no test set to take prompts from"):
        eval_view.judge_command(workspace, notest, eval_view.base_model(notest), "models/tiny", "", None, "")
    busy = make_run(workspace, "busy", state="running")
    with pytest.raises(UIError, match="still running"):
        eval_view.judge_command(workspace, busy, eval_view.base_model(busy), "models/tiny", "", None, "")


def test_judge_results_say_when_a_job_left_nothing(workspace):
    run = make_run(workspace, "done")
    text, table = eval_view.judge_results(run, since=time.time())
    assert text.startswith("⚠️ the judge job ended without a result") and table is None
    summary = {"a": "runs/done", "b": "models/tiny", "judge": "models/tiny", "reference_guided": False, "pairs": 2,
               "win": 1, "tie": 1, "loss": 0, "unparseable": 0, "win_rate": 0.75, "ci95": [0.5, 1.0]}  # fmt: skip
    write_json(run.eval_dir / "judge" / "tiny" / "summary.json", summary)
    text, table = eval_view.judge_results(run)
    assert "1 wins, 1 ties, 0 losses" in text and list(table["win"]) == ["1"]
