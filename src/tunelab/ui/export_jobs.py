"""Exports started from the UI: `tunelab export` as a background job (ui/jobs.py), one at a time per workspace,
remembered in `.tunelab-ui/export.json` so a reloaded page shows it again; when it is done, its verification.

The export kinds are one closed list, `EXPORT_KINDS`: the page's choice, the default folder, the command's flags and
what a run must have are all read from it, so a new kind (GGUF, quantized) is one more line there.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.runs import RunDir, process_is_gone, read_json, write_json
from tunelab.ui import jobs
from tunelab.ui.workspace import UIError, Workspace

EXPORT_STATE = "export.json"
EXPORT_LOG = "export.log"
DTYPES = ("float32", "bfloat16", "float16")  # `tunelab export --dtype`


@dataclass(frozen=True)
class ExportKind:
    key: str  # the page's choice and the default folder: <run>/export/<key>
    english: str
    chinese: str
    flags: tuple[str, ...]  # `tunelab export <run> <flags>`
    needs: str  # "adapter": the run's LoRA adapter; "model": any trained model (adapter or merged weights)
    dtype: bool  # takes --dtype


EXPORT_KINDS: dict[str, ExportKind] = {kind.key: kind for kind in (
    ExportKind("adapter", "the LoRA adapter in PEFT format (vLLM's --lora-modules loads it)",
               "PEFT 格式的 LoRA 适配器（vLLM 的 --lora-modules 可直接加载）", (), "adapter", False),
    ExportKind("merged", "one model folder (adapter merged into the base model), checked against the run's model",
               "合并后的完整模型目录（适配器并入基础模型），并与运行的模型逐一核对", ("--merged",), "model", True),
)}  # fmt: skip


def kind_of(key: str | None) -> ExportKind:
    if key not in EXPORT_KINDS:
        raise UIError(f"choose what to export: {', '.join(EXPORT_KINDS)}")
    return EXPORT_KINDS[key]


def default_out(workspace: Workspace, run: str | None, key: str | None) -> str:
    """Where an export goes unless told: <run>/export/<kind>."""
    if not run or key not in EXPORT_KINDS:
        return ""
    return workspace.relative(workspace.resolve(run, "run", must_exist=False) / "export" / key)


def check_exportable(workspace: Workspace, run: RunDir, kind: ExportKind) -> None:
    """Refuse, in words, a run that is running or has nothing of the kind to export."""
    name = workspace.relative(run.path)
    live = run.live_process()
    if live is not None:
        raise UIError(f"{name} is still running (process {live}); export it when it has finished")
    if kind.needs == "adapter" and not (run.adapter / "adapter_config.json").is_file():
        method = run.read_recipe().get("method", {}).get("type", "?")
        raise UIError(f"{name} has no LoRA adapter to export (method {method}, state "
                      f"{run.status().get('state', 'unknown')}); export it as merged for its full model, "
                      "or finish the run first")  # fmt: skip
    if kind.needs == "model":
        run.model_for_inference()  # says "no trained model yet (no adapter/ or merged/)" when there is none


def check_out(workspace: Workspace, out: Path, overwrite: bool) -> None:
    """An export folder must not hold a run or other files: only an earlier export may be replaced (--overwrite)."""
    name = workspace.relative(out)
    holds_run = any(path == out or path.is_relative_to(out) for path in workspace.run_dirs())
    if out == workspace.root or holds_run or RunDir.is_run(out):
        raise UIError(f"{name} is or holds a run directory; export into a new folder (e.g. <run>/export/...)")
    if RunDir.is_run(out.parent):
        raise UIError(f"{name} is inside the run itself, beside its adapter and checkpoints; export into "
                      f"{workspace.relative(out.parent)}/export/... instead")  # fmt: skip
    if out.exists() and not out.is_dir():
        raise UIError(f"{name} is a file; export into a folder")
    if out.is_dir() and any(out.iterdir()):
        if not _is_export(out):
            raise UIError(f"{name} already holds files that are not an earlier export; choose a new folder")
        if not overwrite:
            raise UIError(f"{name} already holds an export; tick 'replace' to overwrite it, or choose a new folder")


def _is_export(folder: Path) -> bool:
    weights = ("config.json", "adapter_config.json")
    return (folder / "README.md").is_file() and any((folder / name).is_file() for name in weights)


def start_export(workspace: Workspace, run_text: str, key: str, dtype: str | None, out_text: str,
                 overwrite: bool) -> dict[str, Any]:  # fmt: skip
    """Check everything the page can check, then launch `tunelab export` in the background."""
    current = export_state(workspace)
    if current and not process_is_gone(current):
        raise UIError(f"an export of {current['run']} is running (process {current['pid']}); wait for it to finish")
    kind = kind_of(key)
    run = RunDir.open(workspace.resolve(run_text, "run"))
    check_exportable(workspace, run, kind)
    out = workspace.resolve(out_text, "output folder", must_exist=False)
    check_out(workspace, out, overwrite)
    if kind.dtype and dtype not in DTYPES:
        raise UIError(f"choose the merged model's dtype: {', '.join(DTYPES)}")
    command = ["export", workspace.relative(run.path), *kind.flags, "--out", workspace.relative(out)]
    command += ["--dtype", dtype] if kind.dtype else []
    command += ["--overwrite"] if overwrite else []
    started = time.time()
    pid = jobs.start_job(workspace, command, workspace.state / EXPORT_LOG)
    state = {"pid": pid, "process_started": _started(pid), "run": workspace.relative(run.path), "kind": kind.key,
             "dtype": dtype if kind.dtype else None, "out": workspace.relative(out),
             "started": started}  # fmt: skip
    write_json(workspace.state / EXPORT_STATE, state)
    return state


def _started(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:  # it already ended (a very quick failure): the log says why
        return None


def export_state(workspace: Workspace) -> dict[str, Any] | None:
    state = read_json(workspace.state / EXPORT_STATE)
    return state if isinstance(state, dict) and {"pid", "run", "kind", "out", "started"} <= state.keys() else None


def export_progress(workspace: Workspace) -> tuple[str, str]:
    """(what the last export started here is doing or did, its verification when it is a finished merged export)."""
    state = export_state(workspace)
    if state is None:
        return "", ""
    out = workspace.root / state["out"]
    what = f"{state['kind']} export of **{state['run']}** into `{state['out']}`"
    if not process_is_gone(state):
        return f"{what}: running for {time.time() - state['started']:.0f} s…", ""
    code = jobs.exit_code(workspace.state / EXPORT_LOG, state["pid"])
    readme = out / "README.md"
    written = readme.is_file() and readme.stat().st_mtime >= state["started"] - 1  # when this UI lost the exit code
    if code == 0 or (code is None and written):
        return f"✓ {what}: done", verification_text(out)
    return f"⚠️ {what} failed: {_last_error(workspace)}", ""


def _last_error(workspace: Workspace) -> str:
    lines = [line.strip() for line in jobs.log_tail(workspace.state / EXPORT_LOG, 30).splitlines() if line.strip()]
    errors = [line.removeprefix("error: ") for line in lines if line.startswith("error: ")]
    return errors[-1] if errors else (lines[-1] if lines else "it ended without a word; see .tunelab-ui/export.log")


def verification_text(out: Path) -> str:
    """A merged export's verification.json in words: identical greedy outputs, max |Δlogit|, prompts compared."""
    check = read_json(out / "verification.json")
    if not isinstance(check, dict):
        return "" if (out / "adapter_config.json").is_file() else f"⚠️ {out.name} has no readable verification.json"
    same = check.get("identical_outputs")
    verdict = "✓ identical greedy outputs" if same else f"✗ {check.get('mismatches', '?')} outputs differ"
    rows = [("merged vs the run's model", verdict), ("max \\|Δlogit\\|", f"{check.get('max_abs_logit_diff', 0):.2e}"),
            ("prompts compared", check.get("prompts", "?")), ("dtype", check.get("dtype", "?"))]  # fmt: skip
    table = "\n".join(f"| {name} | {value} |" for name, value in rows)
    return f"**Verification** (`verification.json`)\n\n| check | result |\n|---|---|\n{table}"
