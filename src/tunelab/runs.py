"""The run directory: the one contract between the CLI, the server, the UI and a person.

runs/<name>/
  recipe.yaml      the resolved recipe, with library versions and seed
  status.json      state (created|running|interrupted|failed|completed), pid, step, max_steps, updated
  data/            data summary (counts, truncation, dropped records), split ids
  metrics.jsonl    one JSON object per log step
  plots/loss.png   train and eval loss against step
  checkpoints/     trainer checkpoints (resume from the last one)
  adapter/         the trained adapter in PEFT format (LoRA runs)
  merged/          a full model folder: merged LoRA, or the trained model for full/freeze runs
  eval/            predictions and metrics.json {"base": {...}, "tuned": {...}}
Every JSON file is written atomically (temp name, then rename), so readers never see half a file.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import yaml

from tunelab.errors import RunError

STOP_FILE = "STOP"


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
        if run.status().get("state") == "refused" and not (run.path / "recipe.yaml").exists():
            shutil.rmtree(run.path)  # only the audit of a run that never started: the new audit replaces it
        if run.path.exists() and any(run.path.iterdir()):
            if overwrite:
                shutil.rmtree(run.path)
            elif not resume:
                state = (read_json(run.status_file) or {}).get("state", "unknown")
                raise RunError(
                    f"{run.path} already holds a run (state: {state}). Resume it with --resume, pick another name "
                    f"(name=...), or replace it with --overwrite."
                )
        elif resume:
            raise RunError(f"{run.path}: nothing to resume; run without --resume to start it")
        for folder in (run.path, run.data_dir, run.plots, run.eval_dir):
            folder.mkdir(parents=True, exist_ok=True)
        run.stop_file.unlink(missing_ok=True)
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        run = cls(path)
        if not (run.path / "recipe.yaml").is_file():
            raise RunError(f"{run.path} is not a tunelab run directory (no recipe.yaml)")
        return run

    @staticmethod
    def is_run(path: str | Path) -> bool:
        return (Path(path) / "recipe.yaml").is_file()

    def write_recipe(self, recipe: dict[str, Any], versions: dict[str, str]) -> None:
        document = dict(recipe) | {"_versions": versions, "_created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_atomic(self.path / "recipe.yaml", yaml.safe_dump(document, sort_keys=False, allow_unicode=True))

    def read_recipe(self) -> dict[str, Any]:
        return yaml.safe_load((self.path / "recipe.yaml").read_text(encoding="utf-8"))

    def set_status(self, state: str, **fields: Any) -> None:
        status = (read_json(self.status_file) or {}) | fields
        status |= {"state": state, "pid": os.getpid(), "updated": time.time()}
        write_json(self.status_file, status)

    def status(self) -> dict[str, Any]:
        return read_json(self.status_file) or {}

    def append_metrics(self, row: dict[str, Any]) -> None:
        with self.metrics_file.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
            handle.flush()

    def metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_file.is_file():
            return []
        rows = []
        for line in self.metrics_file.read_text(encoding="utf-8").splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line being written right now
                continue
        return rows

    def truncate_metrics_after(self, step: int) -> None:
        """On resume, drop rows logged after the checkpoint we continue from, so steps are not duplicated."""
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
        return (read_json(self.data_dir / "summary.json") or {}).get("system_prompt")

    def model_for_inference(self) -> tuple[str, str | None]:
        """(base model name or folder, adapter folder or None) to load this run's trained model."""
        recipe = self.read_recipe()
        if self.adapter.is_dir() and (self.adapter / "adapter_config.json").is_file():
            return recipe["model"]["name"], str(self.adapter)
        if (self.merged / "config.json").is_file():
            return str(self.merged), None
        raise RunError(f"{self.path} has no trained model yet (no adapter/ or merged/); finish or resume the run")
