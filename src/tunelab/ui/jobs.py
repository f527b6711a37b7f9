"""Background work the UI starts: `tunelab run` (and `export`, `judge`, `serve`) as detached processes.

A run's output goes to `<run>/run.log`, never to a pipe the web server would have to read: closing the browser tab,
reloading, or restarting the UI cannot stall or stop it. What a run is doing is read back from its run directory
(status.json, metrics.jsonl, run.log), so a reopened page re-attaches to whatever is running. The UI reaps the
processes it started (a thread waits for each), so finished ones do not linger as zombies.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tunelab.runs import LOG_FILE, RunDir, process_is_gone, read_json, write_json
from tunelab.ui.workspace import UIError, Workspace

SERVE_STATE = "serve.json"


def _launch(command: list[str], log: Path, cwd: Path) -> int:
    """Start `python -m tunelab.cli <command>` detached from the UI, its output appended to `log`; returns its pid."""
    log.parent.mkdir(parents=True, exist_ok=True)
    env = os.environ | {"PYTHONUNBUFFERED": "1", "TUNELAB_LAUNCHED_BY": "ui"}
    env.pop("TUNELAB_DEBUG", None)  # a bug in a background job is summarised in its log, not raised
    with log.open("ab") as handle:
        handle.write(f"\n$ tunelab {' '.join(command)}    # {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        handle.flush()
        process = subprocess.Popen(
            [sys.executable, "-m", "tunelab.cli", *command], cwd=cwd, env=env, stdin=subprocess.DEVNULL,
            stdout=handle, stderr=subprocess.STDOUT, start_new_session=True,  # Ctrl-C in the UI's terminal: not ours
        )  # fmt: skip
    threading.Thread(target=_reap, args=(process, log), daemon=True, name=f"reap-{process.pid}").start()
    return process.pid


def _reap(process: subprocess.Popen, log: Path) -> None:
    """Wait for a job (so it does not linger as a zombie) and record how it ended beside its log."""
    code = process.wait()
    write_json(_exit_file(log, process.pid), {"pid": process.pid, "exit_code": code, "ended": time.time()})


def _exit_file(log: Path, pid: int) -> Path:
    return log.with_name(f".{log.name}.{pid}.exit.json")


def exit_code(log: Path, pid: int) -> int | None:
    """How a job started by this UI ended (0: success), or None while it runs, or when a UI restarted since lost
    track of it (then the job's outputs must tell)."""
    record = read_json(_exit_file(log, pid))
    return record.get("exit_code") if isinstance(record, dict) else None


def start_run(workspace: Workspace, recipe_path: Path, run_dir: Path, resume: bool = False,
              overwrite: bool = False) -> int:  # fmt: skip
    """Launch `tunelab run` for a saved recipe; its output goes to <run>/run.log. Refuses a run that is running."""
    live = RunDir(run_dir).live_process()
    if live is not None:
        raise UIError(f"{run_dir.name} is running right now (process {live}); stop it first")
    if RunDir.is_run(run_dir) and not (resume or overwrite):
        raise UIError(f"{run_dir.name} already exists: resume it, or choose another run name (or overwrite it)")
    flags = ["--resume"] if resume else ["--overwrite"] if overwrite else []
    return _launch(["run", str(recipe_path), *flags], run_dir / LOG_FILE, workspace.root)


def stop_run(run_dir: Path) -> str:
    """Ask a running run to stop: Ctrl-C's signal, so training saves a checkpoint first (resumable)."""
    status = RunDir(run_dir).status()
    pid = RunDir(run_dir).live_process()
    if pid is None:
        raise UIError(f"{run_dir.name} is not running (state: {status.get('state', 'unknown')})")
    os.kill(pid, signal.SIGINT)
    phase = status.get("phase", "")
    if phase == "training":
        return "stopping after the current step; a checkpoint is saved and the run can be resumed"
    return f"stopping ({phase}); what was finished is kept and the run can be resumed"


def recipe_of(run_dir: Path) -> Path:
    """The recipe a run was started from: the one it saved (recipe.yaml), which --resume reads again."""
    path = run_dir / "recipe.yaml"
    if not path.is_file():
        raise UIError(f"{run_dir.name} has no recipe.yaml; start it from the Train tab")
    return path


def resume_run(workspace: Workspace, run_dir: Path) -> int:
    return start_run(workspace, recipe_of(run_dir), run_dir, resume=True)


def start_job(workspace: Workspace, command: list[str], log: Path) -> int:
    """Any other tunelab command in the background (export, judge), its output appended to `log`."""
    return _launch(command, log, workspace.root)


def job_running(pid: int | None) -> bool:
    return bool(pid) and not process_is_gone({"pid": pid})


def log_tail(path: Path, lines: int = 40) -> str:
    """The last lines of a log (read from the end, so a long log costs nothing)."""
    if not path.is_file():
        return ""
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 64 * 1024))
        text = handle.read().decode("utf-8", errors="replace")
    return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])


# --- `tunelab serve` started from the UI -----------------------------------------------------------------------


def serve_state(workspace: Workspace) -> dict[str, Any] | None:
    """The server this UI started, if it is still running."""
    state = read_json(workspace.state / SERVE_STATE)
    if not isinstance(state, dict) or process_is_gone(state):
        return None
    return state


def start_serve(workspace: Workspace, model: str, adapters: dict[str, str], port: int,
                api_key_env: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Launch `tunelab serve` on loopback with the given adapters; remembers it in .tunelab-ui/serve.json."""
    if serve_state(workspace) is not None:
        raise UIError("a server started here is already running; stop it first")
    command = ["serve", "--model", model, "--port", str(port)]
    for name, path in adapters.items():
        command += ["--adapter", f"{name}={path}"]
    if api_key_env:
        command += ["--api-key-env", api_key_env]
    log = workspace.state / "serve.log"
    pid = _launch(command, log, workspace.root)
    import psutil

    state = {"pid": pid, "process_started": psutil.Process(pid).create_time(), "port": port, "model": model,
             "adapters": adapters, "base_url": f"http://127.0.0.1:{port}/v1", "log": str(log)}  # fmt: skip
    write_json(workspace.state / SERVE_STATE, state)
    return state


def stop_serve(workspace: Workspace) -> str:
    state = serve_state(workspace)
    if state is None:
        raise UIError("no server started here is running")
    os.kill(state["pid"], signal.SIGINT)
    (workspace.state / SERVE_STATE).unlink(missing_ok=True)
    return f"stopped the server on port {state['port']}"
