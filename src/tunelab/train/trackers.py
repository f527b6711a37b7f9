"""Experiment trackers (`train.report_to`): TensorBoard, MLflow and W&B beside tunelab's own metrics.jsonl and plots.

The trainer's own integration callbacks do the logging. tunelab decides where they write: inside the run directory
unless the user configured the tracker (`MLFLOW_TRACKING_URI`, `WANDB_MODE`, ...). TensorBoard's and MLflow's settings
are environment variables that the integrations read, so they are set for the training call only and restored
afterwards (one process may train many runs: tests, the server); W&B's run is started with explicit settings. Where
each tracker wrote is recorded in training.json.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from tunelab.config.trackers import selected

PREFIXES = ("TENSORBOARD_", "MLFLOW_", "WANDB_")  # the environment variables the trackers read


def tracker_environment(names: list[str], run_path: Path, run_name: str, environ=os.environ) -> dict[str, str]:
    """The environment variables that send TensorBoard's and MLflow's files into the run directory, unless the user
    set them: TensorBoard writes to `<run>/tensorboard`; MLflow to a SQLite store `<run>/mlflow.db` (MLflow 3 refuses
    its old `file:` store by default), the run's name being the experiment's. Only the variables that change."""
    env: dict[str, str] = {}
    if "tensorboard" in names:
        env["TENSORBOARD_LOGGING_DIR"] = str(run_path / "tensorboard")
    if "mlflow" in names:
        env["MLFLOW_TRACKING_URI"] = environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{run_path / 'mlflow.db'}"
        env["MLFLOW_EXPERIMENT_NAME"] = environ.get("MLFLOW_EXPERIMENT_NAME") or run_name
    return {key: value for key, value in env.items() if environ.get(key) != value}


def wandb_settings(run_path: Path, run_name: str, environ=os.environ) -> dict[str, str]:
    """`wandb.init` arguments: files in `<run>/wandb/`, offline unless `WANDB_MODE` or `WANDB_API_KEY` is set, project
    `tunelab` unless `WANDB_PROJECT` is set. Passed to `wandb.init` rather than set in the environment, which wandb
    reads only once per process."""
    settings = {"dir": str(run_path), "project": environ.get("WANDB_PROJECT") or "tunelab", "name": run_name}
    if not environ.get("WANDB_MODE") and not environ.get("WANDB_API_KEY"):
        settings["mode"] = "offline"
    return settings


class TrackerRuns(TrainerCallback):
    """Notes the MLflow and W&B runs that the trainer's integrations start (their callbacks run before tunelab's)."""

    def __init__(self, names: list[str]):
        self.names = names
        self.mlflow_run: str | None = None
        self.wandb_run: tuple[str, str] | None = None  # id, the run's folder

    def on_train_begin(self, args, state, control, **kwargs):
        if "mlflow" in self.names:
            import mlflow

            active = mlflow.active_run()
            self.mlflow_run = active.info.run_id if active else None
        if "wandb" in self.names:
            import wandb

            run = wandb.run
            self.wandb_run = (run.id, str(Path(run.dir).parent)) if run is not None else None


class Tracking:
    """The trackers of one training call. `with tracking:` sets their environment and restores it afterwards, and
    ends the tracker runs that training left open; `describe()` says where each tracker wrote (for training.json)."""

    def __init__(self, report_to: Any, run_path: Path, run_name: str):
        self.names = selected(report_to)
        self.run_path = run_path.resolve()
        self.environment = tracker_environment(self.names, self.run_path, run_name)
        self.wandb = wandb_settings(self.run_path, run_name) if "wandb" in self.names else {}
        self.settings = tracker_variables() | self.environment  # what the trackers will see
        self.runs = TrackerRuns(self.names)
        self._saved: dict[str, str] = {}
        self._before: dict[str, str | None] = {}  # MLflow and W&B runs open before training: not tunelab's to end
        self._integrations: list[TrainerCallback] = []

    def callbacks(self) -> list[TrainerCallback]:
        return [self.runs] if self.names else []

    def attach(self, trainer) -> None:
        """Remember the trainer's TensorBoard and MLflow callbacks, to close what they leave open (see `_close`)."""
        from transformers.integrations import MLflowCallback, TensorBoardCallback

        kinds = (MLflowCallback, TensorBoardCallback)
        self._integrations = [c for c in trainer.callback_handler.callbacks if isinstance(c, kinds)]

    def __enter__(self) -> Tracking:
        if "mlflow" in self.names and "MLFLOW_TRACKING_URI" in self.environment:  # tunelab's own store
            _create_experiment(self.environment["MLFLOW_TRACKING_URI"], self.settings["MLFLOW_EXPERIMENT_NAME"],
                               self.run_path / "mlartifacts")  # fmt: skip
        self._before = _open_runs(self.names)
        self._saved = tracker_variables()
        os.environ.update(self.environment)
        if self.wandb and self._before["wandb"] is None:  # transformers' WandbCallback logs to the open run
            import wandb

            try:
                wandb.init(**self.wandb)
            except BaseException:
                self._restore()
                raise
        return self

    def __exit__(self, kind, error, traceback) -> None:
        try:
            self._close(kind)
        finally:
            self._restore()

    def _restore(self) -> None:
        """The trackers' variables as they were, including those the trackers set themselves (MLflow sets
        MLFLOW_EXPERIMENT_ID, W&B sets WANDB_SERVICE)."""
        for key in set(tracker_variables()) - set(self._saved):
            del os.environ[key]
        os.environ.update(self._saved)

    def _close(self, kind) -> None:
        """An exception skips the integrations' `on_train_end`: close the TensorBoard writer and end the MLflow run
        here. transformers' MLflowCallback would also end whichever MLflow run is active when it is garbage-collected
        (a later run's, in a process that trains several), so it is disarmed. W&B's callback never finishes its run."""
        failed = kind is not None
        for callback in self._integrations:
            if getattr(callback, "tb_writer", None) is not None:  # TensorBoard's
                callback.tb_writer.close()
                callback.tb_writer = None
            if hasattr(callback, "_auto_end_run"):  # MLflow's, read by its __del__
                callback._auto_end_run = False
        started = self._still_open()
        if "mlflow" in started and failed:  # a finished training's run was ended by the integration
            import mlflow

            mlflow.end_run("KILLED" if issubclass(kind, KeyboardInterrupt) else "FAILED")
        if "wandb" in started:
            import wandb

            wandb.finish(exit_code=1 if failed else 0)

    def _still_open(self) -> set[str]:
        """The trackers whose run this training started (not one open before it) and is still open."""
        mine = {"mlflow": self.runs.mlflow_run, "wandb": self.runs.wandb_run[0] if self.runs.wandb_run else None}
        now = _open_runs(self.names)
        return {name for name, run in now.items() if run and run == mine[name] and run != self._before.get(name)}

    def describe(self) -> dict[str, Any]:
        """training.json's `trackers`: each tracker used and where it wrote (folder, store URI, run ids)."""
        settings, found = self.settings, {}
        if "tensorboard" in self.names:
            found["tensorboard"] = {"logdir": settings["TENSORBOARD_LOGGING_DIR"]}
        if "mlflow" in self.names:
            uri, experiment = settings["MLFLOW_TRACKING_URI"], settings["MLFLOW_EXPERIMENT_NAME"]
            found["mlflow"] = {"tracking_uri": uri, "experiment": experiment, "run_id": self.runs.mlflow_run}
        if "wandb" in self.names:
            run_id, folder = self.runs.wandb_run or (None, str(self.run_path / "wandb"))
            mode = self.wandb.get("mode") or settings.get("WANDB_MODE", "online")
            found["wandb"] = {"dir": folder, "mode": mode, "project": self.wandb["project"], "run_id": run_id}
        return {"trackers": found}


def tracker_variables() -> dict[str, str]:
    """The environment variables of this process that the trackers read (and write)."""
    return {key: value for key, value in os.environ.items() if key.startswith(PREFIXES)}


def _open_runs(names: list[str]) -> dict[str, str | None]:
    """The ids of the MLflow and W&B runs open in this process (only for the trackers in use)."""
    found: dict[str, str | None] = {}
    if "mlflow" in names:
        import mlflow

        active = mlflow.active_run()
        found["mlflow"] = active.info.run_id if active else None
    if "wandb" in names:
        import wandb

        found["wandb"] = wandb.run.id if wandb.run is not None else None
    return found


def _create_experiment(uri: str, name: str, artifacts: Path) -> None:
    """Create the MLflow experiment in tunelab's own store with its artifacts in the run directory (MLflow would
    otherwise put them under the current directory)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    if client.get_experiment_by_name(name) is None:
        client.create_experiment(name, artifact_location=artifacts.as_uri())
