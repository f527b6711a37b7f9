"""`train.report_to`: TensorBoard and MLflow record the run's loss beside tunelab's own files, in the run directory
unless the user configured them; a closed set of names with a did-you-mean; missing packages are recipe errors before
anything runs; the environment the trackers read is restored after the run."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from helpers import cli, read_metrics, tiny_recipe
from tunelab.errors import RecipeError
from tunelab.recipe import load_recipe
from tunelab.train.trackers import Tracking, tracker_environment, tracker_variables, wandb_settings

QUICK = ["train.max_steps=4", "eval.base=false", "eval.forgetting=false", "export.merge=false"]


def run_with(tmp_path: Path, model_dir: Path, capsys, *overrides: str) -> Path:
    recipe = tiny_recipe(tmp_path, model_dir)
    result = cli(["run", recipe, *QUICK, *overrides], capsys)
    assert result.exit_code == 0, result.err
    return tmp_path / "runs" / "tiny"


def losses(run: Path) -> dict[int, float]:
    return {row["step"]: row["loss"] for row in read_metrics(run) if "loss" in row}


def mlflow_losses(uri: str, experiment: str) -> tuple[dict[int, float], object]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r} in {uri}"
    (run,) = client.search_runs([found.experiment_id])
    return {m.step: m.value for m in client.get_metric_history(run.info.run_id, "loss")}, run


def test_tensorboard_and_mlflow_record_the_loss_in_the_run_directory(tmp_path, tiny_model_dir, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    before = tracker_variables()  # TENSORBOARD_*, MLFLOW_*, WANDB_*
    run = run_with(tmp_path, tiny_model_dir, capsys, "train.report_to=[tensorboard, mlflow]")
    assert tracker_variables() == before  # nothing the trackers read is left set (MLflow sets one of its own)
    expected = losses(run)
    assert sorted(expected) == [1, 2, 3, 4]
    assert (run / "plots" / "loss.png").is_file()  # tunelab's own files are written alongside
    assert json.loads((run / "status.json").read_text())["state"] == "completed"

    trackers = json.loads((run / "training.json").read_text())["trackers"]
    assert set(trackers) == {"tensorboard", "mlflow"}
    assert trackers["tensorboard"]["logdir"] == str((run / "tensorboard").resolve())
    events = EventAccumulator(trackers["tensorboard"]["logdir"])
    events.Reload()
    assert {e.step: e.value for e in events.Scalars("train/loss")} == pytest.approx(expected, rel=1e-6)

    uri = f"sqlite:///{(run / 'mlflow.db').resolve()}"
    assert trackers["mlflow"]["tracking_uri"] == uri and trackers["mlflow"]["experiment"] == "tiny"
    history, mlflow_run = mlflow_losses(uri, "tiny")
    assert history == pytest.approx(expected, rel=1e-6)
    assert mlflow_run.info.run_id == trackers["mlflow"]["run_id"] and mlflow_run.info.run_name == "tiny"
    assert mlflow_run.info.status == "FINISHED" and "eval_loss" in mlflow_run.data.metrics
    assert mlflow_run.info.artifact_uri.startswith((run / "mlartifacts").resolve().as_uri())


def test_mlflow_writes_where_the_user_points_it(tmp_path, tiny_model_dir, capsys, monkeypatch):
    store = f"sqlite:///{tmp_path / 'team.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "team-experiments")
    before = tracker_variables()
    run = run_with(tmp_path, tiny_model_dir, capsys, "train.report_to=mlflow")
    assert tracker_variables() == before and os.environ["MLFLOW_TRACKING_URI"] == store
    history, _ = mlflow_losses(store, "team-experiments")
    assert history == pytest.approx(losses(run), rel=1e-6)
    assert not (run / "mlflow.db").exists() and not (run / "tensorboard").exists()
    trackers = json.loads((run / "training.json").read_text())["trackers"]
    assert trackers["mlflow"]["tracking_uri"] == store and trackers["mlflow"]["experiment"] == "team-experiments"


def test_wandb_runs_offline_into_each_run_directory(tmp_path, tiny_model_dir, capsys, monkeypatch):
    """Only where wandb is installed (it is not in the project's extras): two runs in one process, each in its own
    folder (wandb reads its environment once per process, so tunelab passes the folder to `wandb.init`)."""
    wandb = pytest.importorskip("wandb")
    for key in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_PROJECT", "WANDB_DIR"):
        monkeypatch.delenv(key, raising=False)
    before = tracker_variables()
    for name in ("first", "second"):
        recipe = tiny_recipe(tmp_path, tiny_model_dir, name=name)
        assert cli(["run", recipe, *QUICK, "train.report_to=wandb"], capsys).exit_code == 0
        run = tmp_path / "runs" / name
        found = json.loads((run / "training.json").read_text())["trackers"]["wandb"]
        assert found["mode"] == "offline" and found["project"] == "tunelab"
        assert Path(found["dir"]).parent == (run / "wandb").resolve()
        (log,) = Path(found["dir"]).glob(f"run-{found['run_id']}.wandb")
        assert all(json.dumps(loss).encode() in log.read_bytes() for loss in losses(run).values())
        assert wandb.run is None and tracker_variables() == before


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "tensorbord",
            "train.report_to: unknown tracker 'tensorbord' (did you mean tensorboard?); choose from none, "
            "tensorboard, mlflow, wandb",
        ),  # fmt: skip
        ("[mlflow, WandB]", "unknown tracker 'WandB' (did you mean wandb?)"),
        ("[mlflow, comet_ml]", "unknown tracker 'comet_ml'; choose from none, tensorboard, mlflow, wandb"),
        ("all", "all is not accepted"),
        ("[none, mlflow]", "none cannot be combined with trackers"),
        ("3", "train.report_to: expected one of none, tensorboard, mlflow, wandb or a list of them, got 3"),
    ],
)
def test_report_to_is_a_closed_set(tmp_path, tiny_model_dir, value, expected):
    with pytest.raises(RecipeError) as error:
        load_recipe(tiny_recipe(tmp_path, tiny_model_dir), [f"train.report_to={value}"])
    assert expected in str(error.value)


def test_a_typo_is_reported_by_validate_with_its_yaml_path(tmp_path, tiny_model_dir, capsys):
    result = cli(["validate", tiny_recipe(tmp_path, tiny_model_dir), "train.report_to=[tensorboard, mlfow]"], capsys)
    assert result.exit_code == 2 and "Traceback" not in result.err
    assert "train.report_to: unknown tracker 'mlfow' (did you mean mlflow?)" in result.err
    for ok in ("none", "[]", "null", "[tensorboard, mlflow, tensorboard]"):
        assert load_recipe(tiny_recipe(tmp_path, tiny_model_dir), [f"train.report_to={ok}"]).train is not None


@pytest.mark.parametrize(
    ("tracker", "absent", "fix"),
    [
        ("tensorboard", ["tensorboard", "tensorboardX"], "pip install tensorboard (or pip install -e '.[trackers]'"),
        ("mlflow", ["mlflow"], "mlflow needs mlflow-skinny, which is not installed: pip install mlflow-skinny"),
        ("mlflow", ["sqlalchemy", "alembic"], "mlflow needs sqlalchemy, alembic, which are not installed"),
        ("wandb", ["wandb"], "wandb needs wandb, which is not installed: pip install wandb"),
    ],
)
def test_a_missing_package_is_a_recipe_error_before_the_run_starts(
    tmp_path, tiny_model_dir, capsys, monkeypatch, tracker, absent, fix
):
    for module in absent:
        monkeypatch.setitem(sys.modules, module, None)  # `import module` fails as if it were not installed
    result = cli(["run", tiny_recipe(tmp_path, tiny_model_dir), f"train.report_to=[{tracker}]"], capsys)
    assert result.exit_code == 2 and "Traceback" not in result.err
    assert f"train.report_to: {tracker} needs" in result.err and fix in result.err
    assert not (tmp_path / "runs").exists()  # refused before the run directory was touched


def test_an_mlflow_file_store_is_refused_before_the_run_unless_allowed(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file:{tmp_path / 'mlruns'}")
    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    with pytest.raises(RecipeError) as error:
        load_recipe(recipe, ["train.report_to=mlflow"])
    assert "is a file store, which MLflow 3 refuses unless MLFLOW_ALLOW_FILE_STORE=true" in str(error.value)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    assert load_recipe(recipe, ["train.report_to=mlflow"]).train["report_to"] == "mlflow"


def test_mlflow_on_a_server_needs_no_database_packages(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert load_recipe(tiny_recipe(tmp_path, tiny_model_dir), ["train.report_to=mlflow"]).train["report_to"] == "mlflow"


def test_wandb_is_offline_into_the_run_directory_unless_configured(tmp_path):
    expected = {"dir": str(tmp_path), "project": "tunelab", "name": "orders", "mode": "offline"}
    assert wandb_settings(tmp_path, "orders", environ={}) == expected
    assert "mode" not in wandb_settings(tmp_path, "orders", environ={"WANDB_API_KEY": "k"})
    configured = wandb_settings(tmp_path, "orders", environ={"WANDB_MODE": "online", "WANDB_PROJECT": "mine"})
    assert configured == {"dir": str(tmp_path), "project": "mine", "name": "orders"}
    assert tracker_environment(["wandb"], tmp_path, "orders", environ={}) == {}  # nothing wandb reads only once


def test_the_environment_is_restored_when_training_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", "/somewhere/else")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = tracker_variables()
    tracking = Tracking(["tensorboard", "mlflow"], tmp_path, "tiny")
    with pytest.raises(KeyboardInterrupt), tracking:
        import mlflow

        assert os.environ["TENSORBOARD_LOGGING_DIR"] == str(tmp_path.resolve() / "tensorboard")
        assert os.environ["MLFLOW_TRACKING_URI"] == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
        mlflow.set_experiment("tiny")  # as transformers' MLflowCallback does when training begins (this sets
        mlflow.start_run(run_name="tiny")  # MLFLOW_EXPERIMENT_ID in the environment)
        tracking.runs.on_train_begin(None, None, None)
        raise KeyboardInterrupt
    assert tracker_variables() == before
    assert mlflow.active_run() is None  # the interrupted run was ended, not left open for the next one
    _, run = mlflow_losses(f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}", "tiny")
    assert run.info.status == "KILLED" and run.info.run_id == tracking.describe()["trackers"]["mlflow"]["run_id"]
