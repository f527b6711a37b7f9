"""`tunelab run`: data → baseline evaluation → fine-tuning → evaluation → merged export, in one run directory."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.config.schema import Recipe
from tunelab.errors import TunelabError
from tunelab.runs import RunDir, read_json, write_json


@dataclass
class RunOutcome:
    run: RunDir
    state: str
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    global_step: int = 0
    merge_check: dict[str, Any] | None = None


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    names = ["tunelab", "torch", "transformers", "peft", "trl", "datasets", "accelerate"]
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def run_recipe(recipe: Recipe, resume: bool = False, overwrite: bool = False, log=print) -> RunOutcome:
    """Run the whole workflow; any TunelabError is recorded in status.json and re-raised."""
    from tunelab.data.pipeline import load_test_records, load_training_records

    # Read every data file before touching the run directory: bad data must not cost an earlier run.
    load_training_records(recipe.data)
    load_test_records(recipe.data)
    run = RunDir.prepare(Path(recipe.output_dir) / recipe.name, resume=resume, overwrite=overwrite)
    run.write_recipe(recipe.model_dump(mode="json"), library_versions())
    run.set_status("preparing")
    try:
        outcome = _run_stages(recipe, run, resume, log)
    except KeyboardInterrupt:
        run.set_status("interrupted")
        raise
    except TunelabError as error:
        run.set_status("failed", error=str(error))
        raise
    except Exception as error:
        run.set_status("failed", error=f"{type(error).__name__}: {error}")
        raise
    return outcome


def _run_stages(recipe: Recipe, run: RunDir, resume: bool, log) -> RunOutcome:
    from tunelab.data.pipeline import build_splits
    from tunelab.data.tokenize import ensure_chat_template
    from tunelab.model.load import load_model, sync_generation_eos
    from tunelab.train.sft import run_sft

    log(f"[tunelab] loading model {recipe.model.name}")
    model, tokenizer, model_dir = load_model(recipe.model.name, trust_remote_code=recipe.model.trust_remote_code)
    if ensure_chat_template(tokenizer):
        log("[tunelab] the model has no chat template; using tunelab's ChatML fallback")
    sync_generation_eos(model.generation_config, tokenizer)
    splits = build_splits(recipe.data, tokenizer, recipe.seed, recipe.eval.limit)
    _write_data_summary(run, splits.summary, log)
    results: dict[str, Any] = read_json(run.eval_dir / "metrics.json", {}) if resume else {}
    if splits.test_records and recipe.eval.base and "base" not in results:
        log(f"[tunelab] evaluating the base model on {len(splits.test_records)} test records")
        results["base"] = _evaluate(model, tokenizer, splits.test_records, recipe, run, "base")
        write_json(run.eval_dir / "metrics.json", results)
    log(f"[tunelab] training ({recipe.method.type}) → {run.path}")
    trained = run_sft(recipe, run, model, tokenizer, splits, resume=resume)
    if trained.interrupted:
        run.set_status("interrupted", step=trained.global_step)
        log(f"[tunelab] stopped at step {trained.global_step}; continue with: tunelab run <recipe> --resume")
        return RunOutcome(run, "interrupted", results, trained.global_step)
    if splits.test_records:
        log("[tunelab] evaluating the tuned model")
        results["tuned"] = _evaluate(trained.model, tokenizer, splits.test_records, recipe, run, "tuned")
        write_json(run.eval_dir / "metrics.json", results)
    check = _export(recipe, run, model_dir, trained.model, tokenizer, splits.test_records, log)
    run.set_status("completed", step=trained.global_step, parameters=trained.parameters)
    return RunOutcome(run, "completed", results, trained.global_step, check)


def _write_data_summary(run: RunDir, summary: dict[str, Any], log) -> None:
    ids = summary.get("ids", {})
    write_json(run.data_dir / "splits.json", ids)
    write_json(run.data_dir / "summary.json", {k: v for k, v in summary.items() if k != "ids"})
    train = summary["train"]
    log(
        f"[tunelab] data: {train.get('kept')} training examples ({train.get('truncated', 0)} truncated, "
        f"{train.get('dropped_no_target', 0)} dropped with nothing to learn), "
        f"{len(ids.get('validation', []))} validation, {len(ids.get('test', []))} test"
    )


def _evaluate(model, tokenizer, records, recipe: Recipe, run: RunDir, label: str) -> dict[str, float]:
    from tunelab.eval.heldout import evaluate_model

    report = evaluate_model(
        model,
        tokenizer,
        records,
        run.eval_dir / f"predictions_{label}.jsonl",
        recipe.eval.metrics,
        max_new_tokens=recipe.eval.max_new_tokens,
        batch_size=recipe.eval.batch_size,
        label=label,
    )
    write_json(run.eval_dir / f"report_{label}.json", report)
    return report["metrics"]


def _sync_saved_generation_config(folder: Path, tokenizer) -> None:
    from transformers import GenerationConfig

    from tunelab.model.load import sync_generation_eos

    config = GenerationConfig.from_pretrained(folder)
    if sync_generation_eos(config, tokenizer):
        config.save_pretrained(folder)


def _export(recipe: Recipe, run: RunDir, model_dir: str, trained, tokenizer, records, log) -> dict[str, Any] | None:
    """Merge the LoRA adapter into the base model and check the merged model answers like the adapter model."""
    if recipe.method.type != "lora" or not recipe.export.merge:
        return None
    from tunelab.data.tokenize import prompt_ids_for_generation
    from tunelab.export.merge import load_merged, merge_adapter_dir, verify_merge

    log(f"[tunelab] merging the adapter into the base model → {run.merged}")
    merge_adapter_dir(model_dir, run.adapter, run.merged, dtype=recipe.export.dtype)
    _sync_saved_generation_config(run.merged, tokenizer)
    prompts = [prompt_ids_for_generation(tokenizer, r["messages"]) for r in records[: recipe.export.verify_prompts]]
    if not prompts:
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": "Hello!"}], add_generation_prompt=True)]
    trained.eval()
    check = verify_merge(trained, load_merged(run.merged), tokenizer, prompts)
    write_json(run.merged / "verification.json", check)
    verdict = "identical" if check["identical_outputs"] else "DIFFERENT"
    log(f"[tunelab] merged vs adapter: {verdict} greedy outputs, max |Δlogit| {check['max_abs_logit_diff']:.2e}")
    return check
