"""The run directory's status tells the truth about dead processes, and model folders are swapped in whole."""

from __future__ import annotations

import json
import subprocess
import sys

import psutil
import pytest

from tunelab.errors import RunError
from tunelab.runs import RunDir, describe_status, remove_partial_folders, save_folder_atomic


def write_status(run: RunDir, **status) -> None:
    run.path.mkdir(parents=True, exist_ok=True)
    run.status_file.write_text(json.dumps(status))


@pytest.fixture
def other_process():
    """A live process that is not this one (the 'trainer' of a run)."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process
    process.kill()
    process.wait()


def test_a_run_whose_process_is_gone_reads_as_interrupted(tmp_path):
    run = RunDir(tmp_path / "run")
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    write_status(run, state="running", phase="training", pid=process.pid, step=3, max_steps=9)
    status = run.status()
    assert status["state"] == "interrupted" and "while training" in status["detected"]
    assert json.loads(run.status_file.read_text())["state"] == "interrupted"  # and the file says so from now on
    assert "interrupted (while training) at step 3/9" in describe_status(status)


def test_a_live_process_keeps_its_run(tmp_path, other_process):
    run = RunDir(tmp_path / "run")
    started = psutil.Process(other_process.pid).create_time()
    write_status(run, state="running", phase="training", pid=other_process.pid, process_started=started)
    assert run.status()["state"] == "running" and run.live_process() == other_process.pid
    for resume, overwrite in ((True, False), (False, True)):  # no second writer, not even with --overwrite
        with pytest.raises(RunError, match="being run right now"):
            RunDir.prepare(run.path, resume=resume, overwrite=overwrite)
    assert run.status_file.is_file()


def test_a_reused_pid_is_not_mistaken_for_the_run(tmp_path, other_process):
    run = RunDir(tmp_path / "run")
    write_status(run, state="running", pid=other_process.pid, process_started=1.0)  # started long ago: another one
    assert run.status()["state"] == "interrupted" and run.live_process() is None


def test_another_hosts_process_is_left_alone(tmp_path):
    run = RunDir(tmp_path / "run")
    write_status(run, state="running", pid=1, host="some-other-machine")
    assert run.status()["state"] == "running"  # this host cannot tell; it does not guess


def test_a_damaged_status_file_is_not_a_crash(tmp_path):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    run.status_file.write_text("[1, 2]")
    assert run.status()["state"] == "unknown" and run.live_process() is None
    run.set_status("preparing", fresh=True)
    assert run.status()["state"] == "preparing" and run.status()["attempt"] == 1


def test_a_failed_write_keeps_the_old_folder(tmp_path):
    folder = tmp_path / "merged"
    save_folder_atomic(folder, lambda scratch: (scratch.mkdir(), (scratch / "w").write_text("old")))

    def broken(scratch):
        scratch.mkdir()
        (scratch / "w").write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        save_folder_atomic(folder, broken)
    assert (folder / "w").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["merged"]


def test_leftovers_of_a_killed_save_are_cleared(tmp_path):
    (tmp_path / ".merged.partial-123").mkdir()  # killed while writing
    (tmp_path / ".adapter.old-77").mkdir()  # killed between the two renames: the old folder is the only copy
    (tmp_path / ".adapter.old-77" / "w").write_text("kept")
    remove_partial_folders(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]
    assert (tmp_path / "adapter" / "w").read_text() == "kept"
