"""What the page shows about a run, read from its run directory only: state, progress with ETA, loss curves,
tokens per second, the log's tail. Pure functions of files, so any page (or a reloaded one) shows the same."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tunelab.eval.metrics import format_value
from tunelab.runs import LOG_FILE, RunDir, describe_status, read_json
from tunelab.ui.jobs import log_tail

PROGRESS_LINE = re.compile(r"step (\d+)/(\d+) \((\d+)%\).*?elapsed ([\d:]+)(?:\s+eta ([\d:]+))?")


def progress(run: RunDir) -> dict[str, Any]:
    """{"step", "max_steps", "share", "elapsed", "eta", "tokens_per_second"} from the status, the metrics and the
    run's plain progress lines (a run started in the background writes one per logging step)."""
    status = run.status()
    step, total = status.get("step"), status.get("max_steps")
    found: dict[str, Any] = {"step": step, "max_steps": total, "share": None, "elapsed": None, "eta": None}
    lines = [m for m in PROGRESS_LINE.finditer(log_tail(run.path / LOG_FILE, 200))]
    if lines:
        last = lines[-1]
        found |= {"step": int(last[1]), "max_steps": int(last[2]), "elapsed": last[4], "eta": last[5]}
    if found["step"] is not None and found["max_steps"]:
        found["share"] = min(1.0, found["step"] / found["max_steps"])
    speeds = [row["tokens_per_second"] for row in run.metrics() if row.get("tokens_per_second")]
    found["tokens_per_second"] = speeds[-1] if speeds else None
    return found


def progress_text(run: RunDir) -> str:
    """One line: state (and phase), step/max with share, elapsed, ETA, tokens/s."""
    status = run.status()
    found = progress(run)
    parts = [f"**{run.name}**: {describe_status(status)}"]
    if found["share"] is not None and status.get("state") == "running":
        parts.append(f"{found['share']:.0%} of {found['max_steps']} steps")
    if found["elapsed"]:
        parts.append(f"elapsed {found['elapsed']}" + (f", ETA {found['eta']}" if found["eta"] else ""))
    if found["tokens_per_second"]:
        parts.append(f"{found['tokens_per_second']:.0f} tokens/s")
    return " · ".join(parts)


def loss_frame(runs: list[RunDir]):
    """A long table (step, loss, series) of train and eval loss for one or several runs, for a line plot."""
    import pandas as pd

    rows = []
    for run in runs:
        prefix = f"{run.name} " if len(runs) > 1 else ""
        for row in run.metrics():
            for key, label in (("loss", "train loss"), ("eval_loss", "eval loss")):
                if isinstance(row.get(key), int | float):
                    rows.append({"step": row["step"], "loss": float(row[key]), "series": prefix + label})
    return pd.DataFrame(rows, columns=["step", "loss", "series"])


def run_summary(run: RunDir) -> dict[str, Any]:
    """One row of the runs table: name, state, method, steps, last loss, the tuned metrics and forgetting verdict."""
    status = run.status()
    try:
        recipe = run.read_recipe()
    except Exception:  # a run that failed before writing its recipe, or a damaged one: shown, not fatal
        recipe = {}
    metrics = read_json(run.eval_dir / "metrics.json") or {}
    tuned = metrics.get("tuned", {}) if isinstance(metrics, dict) else {}
    forgetting = read_json(run.eval_dir / "forgetting.json") or {}
    losses = [row["loss"] for row in run.metrics() if isinstance(row.get("loss"), int | float)]
    return {
        "run": run.name,
        "state": status.get("state", "—"),
        "method": (recipe.get("method") or {}).get("type", "—") if isinstance(recipe, dict) else "—",
        "step": status.get("step", "—"),
        "loss": round(losses[-1], 4) if losses else None,
        **{name: format_value(name, value) for name, value in sorted(tuned.items()) if isinstance(value, int | float)},
        "forgetting": forgetting.get("verdict", "—") if isinstance(forgetting, dict) else "—",
    }


def runs_table(run_dirs: list[Path]):
    import pandas as pd

    rows = [run_summary(RunDir(path)) for path in run_dirs]
    columns = list(dict.fromkeys(key for row in rows for key in row)) or ["run", "state", "method", "step", "loss"]
    return pd.DataFrame(rows, columns=columns).fillna("—")
