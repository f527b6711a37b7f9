"""One evaluation of the base model shared by runs that would each repeat it: `tunelab run --base-from RUN` (what
`tunelab compare-methods` does for every method after the first) takes the base model's held-out predictions and
forgetting-probe answers from another run instead of generating them again — only when they are the same
evaluation: the same model loaded the same way, the same test records (by id), the same metrics, generation
settings and probe."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from tunelab.errors import RunError
from tunelab.runs import RunDir, read_json, write_json

BASE_FILES = ("predictions_base.jsonl", "report_base.json")


def _evaluation_settings(recipe: dict[str, Any]) -> dict[str, Any]:
    """What decides the base model's scores: the model, how it is loaded (QLoRA's quantised base differs), the data
    section (test file, system prompt, lengths) and the eval section (metrics, generation settings, probe)."""
    from tunelab.model.methods import method_spec

    method = recipe.get("method") or {}
    loads_own_way = bool(method_spec(method.get("type", "lora")).loading)
    return {"model": recipe.get("model"), "data": recipe.get("data"), "eval": recipe.get("eval"),
            "stage": recipe.get("stage"), "loading": method if loads_own_way else None}  # fmt: skip


def adopt_base_evaluation(run: RunDir, source_path: str | Path, log) -> dict[str, Any] | None:
    """Copy the base model's evaluation (and its prompted baselines') from `source_path` into `run`; their metrics by
    label, or None (and a log line saying why) when that run's evaluation is not the same one."""
    source = RunDir.open(source_path)
    ours, theirs = run.read_recipe(), source.read_recipe()
    metrics = read_json(source.eval_dir / "metrics.json", {}).get("base")
    why = None
    if _evaluation_settings(ours) != _evaluation_settings(theirs):
        why = "its model, loading, data or eval settings differ"
    elif read_json(source.data_dir / "splits.json", {}).get("test") != read_json(run.data_dir / "splits.json", {}).get(
        "test"
    ):
        why = "its test records differ"
    elif metrics is None or not all((source.eval_dir / name).is_file() for name in BASE_FILES):
        why = "it has no complete base-model evaluation"
    if why:
        log(f"[tunelab] --base-from {source.path}: not used ({why}); evaluating the base model here")
        return None
    for name in BASE_FILES:
        shutil.copy2(source.eval_dir / name, run.eval_dir / name)
    adopted = {"base": metrics} | _adopt_prompted(source, run)
    probe = source.eval_dir / "forgetting" / "base"
    if probe.is_dir():
        shutil.copytree(probe, run.eval_dir / "forgetting" / "base", dirs_exist_ok=True)
    write_json(run.eval_dir / "base_from.json", {"run": str(source.path)})
    log(f"[tunelab] base model's evaluation taken from {source.path} (same model, test records and settings)")
    return adopted


def _adopt_prompted(source: RunDir, run: RunDir) -> dict[str, Any]:
    """The prompted baselines the source evaluated (the same settings give the same prompts and shots)."""
    found = read_json(source.eval_dir / "metrics.json", {})
    adopted = {}
    for label in ("zero_shot", "k_shot"):
        names = (f"predictions_{label}.jsonl", f"report_{label}.json")
        if label in found and all((source.eval_dir / name).is_file() for name in names):
            for name in names:
                shutil.copy2(source.eval_dir / name, run.eval_dir / name)
            adopted[label] = found[label]
    return adopted


def check_source(path: str | Path | None) -> None:
    if path is not None and not RunDir.is_run(path):
        raise RunError(f"--base-from {path}: not a run directory")
