"""What the Evaluate tab shows about a run, without Gradio: the base-vs-tuned tables with intervals and verdicts,
the forgetting verdict, answers cut off at the token limit, pairwise judge results and the run's HTML report, all
read from the run directory through `eval.run_report`; and the `tunelab judge` command the tab launches.

A run that is still running, failed or has no test set gets a plain note, never an error."""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

from tunelab.runs import ACTIVE_STATES, RunDir, describe_status, read_json
from tunelab.ui.data_work import model_argument
from tunelab.ui.workspace import UIError, Workspace

METRIC_COLUMNS = ["metric", "base", "tuned", "change", "95% CI (pts)", "verdict"]
CATEGORY_COLUMNS = ["category", "records", "metric", "base", "tuned", "change", "95% CI (pts)", "verdict"]
FORGETTING_COLUMNS = ["category", "items", "base", "tuned", "change (pts)", "95% CI (pts)", "verdict"]
JUDGE_COLUMNS = ["A vs B", "judge", "win", "tie", "loss", "unparseable", "win rate", "95% CI"]
JUDGE_LOG = "judge.log"
REPORT_STYLE = "width:100%;height:900px;border:1px solid #e5e7eb;border-radius:6px;background:#fff"


def frame(columns: list[str], rows: list[tuple[str, ...]]):
    import pandas as pd

    return pd.DataFrame([list(row) for row in rows], columns=columns)


def run_choices(workspace: Workspace) -> list[str]:
    return [workspace.relative(path) for path in workspace.run_dirs()]


def open_run(workspace: Workspace, name: str | None) -> RunDir:
    if not str(name or "").strip():
        raise UIError("choose a run first (the runs of the workspace are listed; Refresh updates the list)")
    return RunDir.open(workspace.resolve(name, "run"))


def base_model(run: RunDir) -> str:
    return str(run.read_recipe()["model"]["name"])


def state_note(run: RunDir, status: dict[str, Any]) -> str:
    """A plain word on a run that is not finished: results appear when it is, or what it left is shown."""
    state = status.get("state", "unknown")
    if state == "completed":
        return ""
    if state in ACTIVE_STATES:
        return f"⏳ {run.name} is {describe_status(status)}. Its evaluation appears here when it finishes."
    return f"ℹ️ {run.name} did not finish: {describe_status(status)}. What it finished is shown below."


def test_note(run: RunDir, data: dict[str, Any]) -> str:
    if not (data["recipe"].get("data") or {}).get("test"):
        return (f"ℹ️ {run.name} has no test set (data.test in its recipe), so there is no base-vs-tuned table: add "
                "a test file to the recipe and run it again, or judge it on a prompts file below.")  # fmt: skip
    if not data["metrics"]:
        return f"ℹ️ {run.name} has no held-out metrics yet (eval/metrics.json): its evaluation did not run or finish."
    return ""


def view(run: RunDir) -> dict[str, Any]:
    """Everything the tab shows for a run; tables are None where the run has nothing to show."""
    from tunelab.eval.run_report import collect, damaged_files_named

    status = run.status()
    shown: dict[str, Any] = {"note": state_note(run, status), "metrics": None, "categories": None,
                             "comparison": "", "forgetting_text": "", "forgetting": None, "truncation_text": "",
                             "truncation": None, "report": report_frame(run)}  # fmt: skip
    if status.get("state") in ACTIVE_STATES:
        return shown
    with damaged_files_named(run):
        data = collect(run)
        shown |= _tables(data)
    shown["note"] = "\n\n".join(part for part in (shown["note"], test_note(run, data)) if part)
    return shown


def _tables(data: dict[str, Any]) -> dict[str, Any]:
    from tunelab.eval.lengths import truncation_rows, truncation_sentences
    from tunelab.eval.report_rows import (
        category_comparison_rows,
        comparison_note,
        forgetting_rows,
        forgetting_verdict,
        metric_rows,
    )

    comparison, forgetting, truncation = data["comparison"], data["forgetting"], data["truncation"]
    shown: dict[str, Any] = {}
    if data["metrics"]:
        shown["metrics"] = frame(METRIC_COLUMNS, metric_rows(data["metrics"], comparison, forgetting))
        shown["comparison"] = comparison_note(comparison) if comparison else ""
    categories = category_comparison_rows(comparison)
    shown["categories"] = frame(CATEGORY_COLUMNS, categories) if categories else None
    if forgetting:
        shown["forgetting_text"] = forgetting_verdict(forgetting)
        shown["forgetting"] = frame(FORGETTING_COLUMNS, forgetting_rows(forgetting))
    if truncation:
        head, rows = truncation_rows(truncation)
        shown["truncation_text"] = " ".join(truncation_sentences(truncation))
        shown["truncation"] = frame(list(head), rows)
    return shown


def report_frame(run: RunDir) -> str:
    """eval/report.html inline: the whole page escaped into an iframe's srcdoc, sandboxed (no scripts run)."""
    path = run.eval_dir / "report.html"
    if not path.is_file():
        return f"<p>{html.escape(run.name)} has no report yet (eval/report.html): press “Rebuild report”.</p>"
    page = html.escape(path.read_text(encoding="utf-8", errors="replace"), quote=True)
    title = html.escape(f"report of {run.name}", quote=True)
    return f'<iframe id="eval-report-frame" title="{title}" sandbox="" style="{REPORT_STYLE}" srcdoc="{page}"></iframe>'


def rebuild_report(run: RunDir) -> Path:
    from tunelab.eval.run_report import write_report

    if run.live_process() is not None:
        raise UIError(f"{run.name} is running; rebuild its report when it finishes")
    return write_report(run)["html"]


# --- pairwise judging ----------------------------------------------------------------------------------------


def opponents(workspace: Workspace, run: RunDir) -> list[tuple[str, str]]:
    """What model A (the run) can be judged against: its base model, then the other runs of the workspace."""
    base = base_model(run)
    shown = _shown(workspace, base)
    others = [name for name in run_choices(workspace) if workspace.resolve(name, "run") != run.path]
    return [(f"base model ({shown})", base), *[(name, name) for name in others]]


def judge_command(workspace: Workspace, run: RunDir, other: str | None, judge: str | None, judge_model: str | None,
                  limit: Any, prompts: str | None) -> list[str]:  # fmt: skip
    """`tunelab judge` arguments; every model or file named must lie inside the workspace (URLs and aliases aside)."""
    if run.live_process() is not None:
        raise UIError(f"{run.name} is still running; judge it when it has finished")
    run.model_for_inference()  # a run without a trained model is refused here, in words
    b = other if other == base_model(run) else model_argument(workspace, other, "model B")
    judge = model_argument(workspace, judge, "judge", urls=True)
    named = [workspace.relative(run.path), *(_shown(workspace, name) for name in (b, judge))]
    command = ["judge", "--a", named[0], "--b", named[1], "--judge", named[2]]  # the job runs in the workspace
    if command[-1].startswith(("http://", "https://")) and str(judge_model or "").strip():
        command += ["--judge-model", str(judge_model).strip()]
    if limit not in (None, ""):
        if int(limit) < 1:
            raise UIError("the number of prompts to judge must be 1 or more (leave it empty for all)")
        command += ["--limit", str(int(limit))]
    if str(prompts or "").strip():
        command += ["--data", str(workspace.resolve(prompts, "prompts file"))]
    elif not (run.read_recipe().get("data") or {}).get("test"):
        raise UIError(f"{run.name} has no test set to take prompts from; type a prompts file (JSONL) inside the "
                      "workspace")  # fmt: skip
    return command


def _shown(workspace: Workspace, name: str) -> str:
    """A path inside the workspace as the job (which runs there) takes it, relative; any other name as it is."""
    return workspace.relative(Path(name)) if Path(name).is_absolute() else name


def judge_log(run: RunDir) -> Path:
    return run.eval_dir / JUDGE_LOG


def judge_results(run: RunDir, since: float | None = None) -> tuple[str, Any]:
    """(one line per judged pair of models, the win/tie/loss table) from eval/judge/*/summary.json; with `since`,
    a note when no summary was written after that time (the job ended without a result)."""
    from tunelab.eval.judge import describe
    from tunelab.eval.report_rows import judge_rows

    paths = sorted((run.eval_dir / "judge").glob("*/summary.json"))
    summaries = [s for s in (read_json(p) for p in paths) if isinstance(s, dict)]
    lines = [f"- {describe(s)}" for s in summaries]
    if since is not None and not any(p.stat().st_mtime >= since for p in paths):
        lines.insert(0, f"⚠️ the judge job ended without a result; its log ({JUDGE_LOG}) above says why")
    return "\n".join(lines), frame(JUDGE_COLUMNS, judge_rows(summaries)) if summaries else None


def started_now() -> float:
    return time.time() - 1.0  # summary files written from now on (with a little slack for the clock's grain)
