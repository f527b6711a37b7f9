"""The run directory: the one contract between the CLI, the server, the UI and a person.

runs/<name>/
  recipe.yaml      the resolved recipe, with library versions and seed
  status.json      state (preparing|running|interrupted|failed|completed|refused), phase, pid, host, step, updated
  data/            data summary (counts, truncation, dropped records), split ids
  metrics.jsonl    one JSON object per log step
  plots/loss.png   train and eval loss against step
  checkpoints/     trainer checkpoints (resume from the last one)
  adapter/         the trained adapter in PEFT format (LoRA runs)
  merged/          a full model folder: merged LoRA, or the trained model for full/freeze runs
  eval/            predictions and metrics.json {"base": {...}, "tuned": {...}}
  run.log          the run's console output, when it was started in the background (the web UI does)
Every JSON file is written atomically (temp name, then rename), so readers never see half a file, and model folders
are saved beside their place and renamed into it, so a killed process never leaves half a model where one is read.

A process killed with SIGKILL cannot update status.json; readers therefore check the recorded process (pid, host and
start time) and report a run whose process is gone as "interrupted" (`RunDir.status`).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import yaml

from tunelab.errors import RunError

STOP_FILE = "STOP"
LOG_FILE = "run.log"  # the output of a run started in the background (`tunelab ui`); not part of the run itself
ACTIVE_STATES = ("preparing", "running")  # a process is working on the run; anything else is final or resumable


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.tmp{os.getpid()}")
    scratch.write_text(text, encoding="utf-8")
    scratch.replace(path)


def write_json(path: Path, data: Any) -> None:
    write_atomic(path, json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return default


def estimate_beside(run_path: str | Path) -> Path:
    """Where `tunelab estimate` leaves its estimate for a run: beside the run directory (the run copies it in)."""
    path = Path(run_path)
    return path.with_name(f"{path.name}.estimate.json")


def this_process() -> dict[str, Any]:
    """What identifies the current process for a later reader: pid, host and start time (pids get reused)."""
    import psutil

    return {"pid": os.getpid(), "host": socket.gethostname(), "process_started": psutil.Process().create_time()}


def process_is_gone(status: dict[str, Any]) -> bool:
    """True when the process recorded in a status is certainly not running any more (on this host)."""
    import psutil

    pid = status.get("pid")
    if not isinstance(pid, int) or status.get("host", socket.gethostname()) != socket.gethostname():
        return False  # another machine's process (a shared disk): this host cannot tell
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:  # dead, not yet reaped by its parent
            return True
        started = process.create_time()
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return True
    except psutil.Error:
        return False
    recorded = status.get("process_started")
    return isinstance(recorded, int | float) and abs(started - recorded) > 1.0  # the pid now names another process


def save_folder_atomic(folder: Path, write) -> Path:
    """Call `write(scratch)` on a hidden sibling folder, then swap it into `folder` (replacing what was there).

    A process killed at any moment leaves either the old folder or the new one, plus at most a hidden scratch
    folder that `remove_partial_folders` clears on the next attempt.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = folder.with_name(f".{folder.name}.partial-{os.getpid()}")
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        write(scratch)
        if folder.exists():
            os.replace(folder, old)
        os.replace(scratch, folder)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        if old.exists() and not folder.exists():
            os.replace(old, folder)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return folder


def remove_partial_folders(parent: Path) -> list[Path]:
    """Scratch folders left by a process killed in `save_folder_atomic` (never a complete model folder)."""
    removed = []
    for scratch in Path(parent).glob(".*.partial-*"):
        if scratch.is_dir():
            shutil.rmtree(scratch, ignore_errors=True)
            removed.append(scratch)
    for old in Path(parent).glob(".*.old-*"):  # killed between the two renames: the old folder is the only copy
        target = old.with_name(old.name[1:].rsplit(".old-", 1)[0])
        if old.is_dir() and not target.exists():
            os.replace(old, target)
        elif old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    return removed


def describe_status(status: dict[str, Any]) -> str:
    """One line for a person: state, what it was doing, the step, and what to do next."""
    if not status:
        return "no status yet"
    state = status.get("state", "unknown")
    parts = [state]
    if status.get("phase") and state != "completed":
        parts.append(f"({'while ' if state != 'running' else ''}{status['phase']})")
    if status.get("step") is not None:
        parts.append(f"at step {status['step']}" + (f"/{status['max_steps']}" if status.get("max_steps") else ""))
    if state in ACTIVE_STATES:
        parts.append(f"— process {status.get('pid')}, updated {int(time.time() - status.get('updated', 0))} s ago")
    if status.get("detected"):
        parts.append(f"— {status['detected']}")
    elif state == "interrupted":
        parts.append("— continue with: tunelab run <recipe> --resume")
    if status.get("error"):
        parts.append(f"— {status['error']}")
    return " ".join(parts)


class RunDir:
    """Paths and small atomic writers for one run."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def name(self) -> str:
        return self.path.name

    def __truediv__(self, part: str) -> Path:
        return self.path / part

    checkpoints = property(lambda self: self.path / "checkpoints")
    adapter = property(lambda self: self.path / "adapter")
    merged = property(lambda self: self.path / "merged")
    eval_dir = property(lambda self: self.path / "eval")
    data_dir = property(lambda self: self.path / "data")
    plots = property(lambda self: self.path / "plots")
    metrics_file = property(lambda self: self.path / "metrics.jsonl")
    status_file = property(lambda self: self.path / "status.json")
    stop_file = property(lambda self: self.path / STOP_FILE)

    @classmethod
    def prepare(cls, path: str | Path, resume: bool = False, overwrite: bool = False) -> RunDir:
        """Create the run directory; refuse to touch an existing run unless resuming or told to overwrite."""
        run = cls(path)
        live = run.live_process()
        if live is not None:
            raise RunError(f"{run.path} is being run right now by process {live}; wait for it, stop it (touch "
                           f"{run.stop_file} or Ctrl-C), or pick another name (name=...)")  # fmt: skip
        if run.status().get("state") == "refused" and not (run.path / "recipe.yaml").exists():
            run.clear()  # only the audit of a run that never started: the new audit replaces it
        if run.path.exists() and any(p.name != LOG_FILE for p in run.path.iterdir()):
            if overwrite:
                run.clear()
            elif not resume:
                state = run.status().get("state", "unknown")
                raise RunError(
                    f"{run.path} already holds a run (state: {state}). Resume it with --resume, pick another name "
                    f"(name=...), or replace it with --overwrite."
                )
        elif resume:
            raise RunError(f"{run.path}: nothing to resume; run without --resume to start it")
        for folder in (run.path, run.data_dir, run.plots, run.eval_dir):
            folder.mkdir(parents=True, exist_ok=True)
        run.stop_file.unlink(missing_ok=True)
        remove_partial_folders(run.path)
        return run

    def clear(self) -> None:
        """Remove the run's files, except the log a launcher (the web UI) is writing the run's output to."""
        for part in self.path.iterdir():
            if part.name == LOG_FILE:
                continue
            shutil.rmtree(part) if part.is_dir() and not part.is_symlink() else part.unlink()

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        run = cls(path)
        if not (run.path / "recipe.yaml").is_file():
            raise RunError(f"{run.path} is not a tunelab run directory (no recipe.yaml)")
        return run

    @staticmethod
    def is_run(path: str | Path) -> bool:
        return (Path(path) / "recipe.yaml").is_file()

    def adopt_estimate(self, fingerprint: str) -> None:
        """Copy `tunelab estimate`'s estimate (estimate_beside) into the run when it was made for these settings."""
        estimate = read_json(estimate_beside(self.path))
        if isinstance(estimate, dict) and estimate.get("fingerprint") == fingerprint:
            write_json(self.path / "estimate.json", estimate)

    def write_recipe(self, recipe: dict[str, Any], versions: dict[str, str]) -> None:
        # config.load's BOOKKEEPING_KEYS: a saved recipe loads again without them
        stamp = {"_versions": versions, "_created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        document = dict(recipe) | stamp
        write_atomic(self.path / "recipe.yaml", yaml.safe_dump(document, sort_keys=False, allow_unicode=True))

    def read_recipe(self) -> dict[str, Any]:
        path = self.path / "recipe.yaml"
        try:
            recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            problem = f"{type(error).__name__}: {error}"
            raise RunError(f"{path}: cannot read the run's recipe ({problem}); the run directory is damaged: "
                           "run the recipe again with --overwrite") from None  # fmt: skip
        if not isinstance(recipe, dict) or not isinstance(recipe.get("model"), dict):
            raise RunError(f"{path}: not a tunelab run recipe (no model section); the run directory is damaged")
        return recipe

    def set_status(self, state: str, fresh: bool = False, **fields: Any) -> None:
        """Record the state (and fields such as phase or step); `fresh` starts over, dropping an earlier attempt's
        error and step but counting attempts."""
        status = read_json(self.status_file)
        status = status if isinstance(status, dict) else {}  # a damaged file is replaced, not merged
        if fresh:
            status = {"attempt": int(status.get("attempt", 0)) + 1} if status else {"attempt": 1}
        status |= fields
        status |= {"state": state, "updated": time.time()} | this_process()
        if state == "completed":
            status.pop("phase", None)
        write_json(self.status_file, status)

    def status(self) -> dict[str, Any]:
        """status.json as written, except that an active run whose process is gone is reported as interrupted."""
        status = read_json(self.status_file) or {}
        if not isinstance(status, dict):
            return {"state": "unknown", "error": f"{self.status_file} is damaged (not a JSON object)"}
        if status.get("state") in ACTIVE_STATES and process_is_gone(status):
            status |= {"state": "interrupted", "detected": f"process {status.get('pid')} is gone (killed or crashed) "
                       f"while {status.get('phase') or status['state']}; continue with --resume"}  # fmt: skip
            try:
                write_json(self.status_file, status)  # the next reader (a person, the UI) sees the truth in the file
            except OSError:
                pass  # a run directory this user may only read: the answer is still right
        return status

    def live_process(self) -> int | None:
        """The pid of another process that is working on this run right now, if any."""
        status = read_json(self.status_file)
        if not isinstance(status, dict) or not isinstance(status.get("pid"), int) or status["pid"] == os.getpid():
            return None
        if status.get("state") in ACTIVE_STATES and not process_is_gone(status):
            return int(status["pid"])
        return None

    def append_metrics(self, row: dict[str, Any]) -> None:
        with self.metrics_file.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
            handle.flush()

    def metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_file.is_file():
            return []
        rows = []
        for line in self.metrics_file.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line being written right now, or cut off by a kill
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int):
                rows.append(row)
        return rows

    def truncate_metrics_after(self, step: int) -> None:
        """On resume, drop rows logged after the checkpoint we continue from (all rows when training starts again
        from scratch), so steps are neither duplicated nor missing; a line cut off by a kill is dropped too."""
        kept = [row for row in self.metrics() if row.get("step", 0) <= step]
        write_atomic(self.metrics_file, "".join(json.dumps(row) + "\n" for row in kept))

    def last_checkpoint(self) -> Path | None:
        if not self.checkpoints.is_dir():
            return None
        candidates = [p for p in self.checkpoints.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()]
        complete = [p for p in candidates if (p / "trainer_state.json").is_file()]
        return max(complete, key=lambda p: int(p.name.split("-")[-1]), default=None)

    def training_system_prompt(self) -> str | None:
        """The system prompt shared by all training records, if any: the model learnt its task under it."""
        summary = read_json(self.data_dir / "summary.json")
        prompt = summary.get("system_prompt") if isinstance(summary, dict) else None
        return prompt if isinstance(prompt, str) else None

    def model_for_inference(self) -> tuple[str, str | None]:
        """(base model name or folder, adapter folder or None) to load this run's trained model."""
        recipe = self.read_recipe()
        if self.adapter.is_dir() and (self.adapter / "adapter_config.json").is_file():
            return recipe["model"]["name"], str(self.adapter)
        if (self.merged / "config.json").is_file():
            return str(self.merged), None
        raise RunError(f"{self.path} has no trained model yet (no adapter/ or merged/); finish or resume the run")
