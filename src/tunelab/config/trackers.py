"""`train.report_to`: the closed set of trackers and whether each can report here (its packages, its settings).

Checked when a recipe is loaded; `train/trackers.py` does the reporting.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
from typing import Any

PATH = "train.report_to"
TRACKERS = ("tensorboard", "mlflow", "wandb")
CHOICES = ("none", *TRACKERS)
EXTRA = "pip install -e '.[trackers]' in the tunelab checkout"
# What each tracker imports (any module of a tuple will do) and the pip package that provides it.
NEEDS = {
    "tensorboard": [(("tensorboard", "tensorboardX"), "tensorboard")],
    "mlflow": [(("mlflow",), "mlflow-skinny")],
    "wandb": [(("wandb",), "wandb")],
}
# MLflow's database stores (tunelab's local default is SQLite) need these too.
MLFLOW_DATABASE_NEEDS = [(("sqlalchemy",), "sqlalchemy"), (("alembic",), "alembic")]
MLFLOW_DATABASES = ("sqlite", "postgresql", "mysql", "mssql")


def selected(value: Any) -> list[str]:
    """The trackers a (valid) `report_to` names, in order, without `none` and duplicates."""
    names = [value] if isinstance(value, str) else list(value or [])
    return [name for i, name in enumerate(names) if name != "none" and name not in names[:i]]


def check_report_to(value: Any) -> list[tuple[str, str]]:
    """Problems with a recipe's `train.report_to`: type, unknown names (with a did-you-mean), missing packages."""
    names = [value] if isinstance(value, str) else value
    if value is not None and not (isinstance(names, list) and all(isinstance(name, str) for name in names)):
        return [(PATH, f"expected one of {', '.join(CHOICES)} or a list of them, got {value!r}")]
    problems = [(PATH, _unknown(name)) for name in names or [] if name not in CHOICES]
    if "none" in (names or []) and len(selected(names)) > 0:
        problems.append((PATH, "none cannot be combined with trackers; remove none, or list no trackers"))
    if problems:
        return problems
    return [(PATH, problem) for name in selected(names) if (problem := cannot_report(name))]


def _unknown(name: str) -> str:
    if name == "all":
        return ("all is not accepted: it would report to whatever integrations happen to be installed; name the "
                f"trackers instead, e.g. [tensorboard, mlflow] (choices: {', '.join(CHOICES)})")  # fmt: skip
    close = difflib.get_close_matches(name.lower(), CHOICES, n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown tracker {name!r}{hint}; choose from {', '.join(CHOICES)}, or a list of them"


def cannot_report(name: str, environ=os.environ) -> str | None:
    """Why `name` cannot report here (a missing package, a setting that stops it), with the fix; None when it can."""
    if name == "mlflow" and (problem := _mlflow_setting_problem(environ)):
        return problem
    needs = NEEDS[name] + (MLFLOW_DATABASE_NEEDS if name == "mlflow" and _mlflow_database(environ) else [])
    missing = [package for modules, package in needs if not any(_installed(module) for module in modules)]
    if not missing:
        return None
    fix = f"pip install {' '.join(missing)}" + ("" if name == "wandb" else f" (or {EXTRA})")
    return f"{name} needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed: {fix}"


def _mlflow_setting_problem(environ) -> str | None:
    if environ.get("DISABLE_MLFLOW_INTEGRATION", "").upper() == "TRUE":
        return (
            "mlflow: the environment variable DISABLE_MLFLOW_INTEGRATION=TRUE turns it off; unset it, or remove mlflow"
        )
    uri = environ.get("MLFLOW_TRACKING_URI") or "sqlite:"
    scheme = uri.split(":", 1)[0].lower() if ":" in uri else ""
    if scheme in ("file", "") and environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in ("true", "1"):
        return (f"mlflow: MLFLOW_TRACKING_URI={uri} is a file store, which MLflow 3 refuses unless "
                "MLFLOW_ALLOW_FILE_STORE=true; set that, use a database such as sqlite:///mlflow.db, or unset "
                "MLFLOW_TRACKING_URI (tunelab then writes <run>/mlflow.db)")  # fmt: skip
    return None


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken package, or one set to None in sys.modules
        return False


def _mlflow_database(environ) -> bool:
    """Whether MLflow will write to a database store (tunelab's local SQLite default, or the user's database URI)."""
    uri = environ.get("MLFLOW_TRACKING_URI") or "sqlite:"
    return uri.split(":", 1)[0].split("+", 1)[0].lower() in MLFLOW_DATABASES
