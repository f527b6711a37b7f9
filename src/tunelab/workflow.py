"""`tunelab run`: data → baseline evaluation → fine-tuning → evaluation → merged export, in one run directory."""

from __future__ import annotations

import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.config.schema import Recipe
from tunelab.errors import DataError, TunelabError
from tunelab.jsonl import read_jsonl
from tunelab.runs import RunDir, read_json, write_json
from tunelab.train.stage import Stage
from tunelab.train.stages import get_stage


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


def saved_recipe(recipe: Recipe) -> dict[str, Any]:
    """The recipe as the run saves it: every default written out, and `export.merge` and `eval.base` as they apply (a
    method that saves a full model has nothing to merge; without a test set there is no base evaluation), so that
    `tunelab run runs/<name>/recipe.yaml --resume` validates."""
    from tunelab.model.methods import method_spec

    document = recipe.model_dump(mode="json")
    document["export"]["merge"] = recipe.export.merge and method_spec(recipe.method).can_merge
    document["eval"]["base"] = recipe.eval.base and recipe.data.test is not None
    return document


def run_recipe(recipe: Recipe, resume: bool = False, overwrite: bool = False, log=print,
               base_from: str | None = None) -> RunOutcome:  # fmt: skip
    """Run the whole workflow; any TunelabError is recorded in status.json and re-raised. `base_from`: a run whose
    evaluation of the same base model is taken instead of repeating it (shared_baseline.py). In a distributed run
    (started by torchrun or `--nproc`) rank 0 does all of it and the other ranks only train (train_as_worker)."""
    from tunelab.train.distributed import Handoff, single_process_world, start

    if recipe.train.get("deepspeed"):
        single_process_world()
    if not start(recipe.train.get("ddp_timeout")).main:
        return train_as_worker(recipe, resume)
    handoff = Handoff()
    try:
        return _run_as_main(recipe, resume, overwrite, log, base_from, handoff)
    except BaseException as error:
        handoff.fail(f"{type(error).__name__}: {error}")  # the other ranks stop too, instead of waiting
        raise


def train_as_worker(recipe: Recipe, resume: bool) -> RunOutcome:
    """A rank other than 0: wait for rank 0's tokenised datasets, load the model, train its shard of each batch."""
    from tunelab.train.distributed import share_from_rank0, world
    from tunelab.train.fit import fit

    message = share_from_rank0()
    run = RunDir(Path(recipe.output_dir) / recipe.name)
    if message["state"] == "failed":
        raise TunelabError(f"rank {world().rank}: nothing to train, rank 0 stopped first ({message['message']})")
    if message["state"] == "done":
        return RunOutcome(run, "worker")
    model, tokenizer, _ = _load_model(recipe, lambda line: None)
    trained = fit(get_stage(recipe.stage), recipe, run, model, tokenizer, message["splits"], resume=resume)
    return RunOutcome(run, "worker", global_step=trained.global_step)


def _run_as_main(recipe: Recipe, resume: bool, overwrite: bool, log, base_from, handoff) -> RunOutcome:
    from tunelab.shared_baseline import check_source
    from tunelab.train.fit import training_fingerprint

    check_source(base_from)
    # Read and audit every data file before touching the run directory: bad data must not cost an earlier run.
    recipe_data, audit = _audit_first(recipe, log)
    run = RunDir.prepare(Path(recipe.output_dir) / recipe.name, resume=resume, overwrite=overwrite)
    run.write_recipe(saved_recipe(recipe), library_versions())
    run.adopt_estimate(training_fingerprint(recipe))  # `tunelab estimate`'s, for the report to set beside the actuals
    if audit is not None:
        from tunelab.data.audit_report import write_audit

        write_audit(audit.report, run.data_dir / "audit")
    run.set_status("preparing", fresh=True, phase="loading the model")
    try:
        outcome = _run_stages(recipe, run, resume, log, recipe_data, audit, base_from, handoff)
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


def preflight_warnings(recipe: Recipe) -> list[str]:
    """What `tunelab validate` can tell before a run without training or converting anything: what the stage says
    of the test records (for sft: references longer than eval.max_new_tokens, whose answers would be cut there)."""
    from tunelab.model.load import local_folder

    if not recipe.data.test:
        return []
    folder = local_folder(recipe.model.name)
    if folder is None:
        return [f"test answer lengths not checked: {recipe.model.name} is not on disk yet (the first run fetches or "
                "converts it)"]  # fmt: skip
    from tunelab.data.load import load_source
    from tunelab.model.load import load_tokenizer

    tokenizer = _chat_ready(load_tokenizer(folder, trust_remote_code=recipe.model.trust_remote_code))
    records = load_source(recipe.data.test, invalid=[])[: recipe.eval.limit]
    return get_stage(recipe.stage).test_warnings(records, tokenizer, recipe)


def _audit_first(recipe: Recipe, log):
    """Load the recipe's data and audit it; refuse leaking or invalid data before anything is written."""
    from tunelab.data.generations import with_previous_generation
    from tunelab.data.pipeline import check_audit, drop_leaked, load_recipe_sets

    recipe_data = load_recipe_sets(recipe.data, recipe.seed, recipe.stage)
    with_previous_generation(recipe, recipe_data)  # continue_from: the previous generation's data too
    if not recipe.data.audit:
        return recipe_data, None
    from tunelab.data.audit import audit_sets
    from tunelab.data.audit_report import summary_lines
    from tunelab.model.load import load_tokenizer

    tokenizer = load_tokenizer(recipe.model.name, trust_remote_code=recipe.model.trust_remote_code)
    data = recipe.data
    audit = audit_sets(recipe_data.sets, recipe_data.roles, recipe_data.invalid, _chat_ready(tokenizer),
                       data.max_length, data.contamination_against, data.near_threshold)  # fmt: skip
    for line in summary_lines(audit.report):
        log(f"[tunelab] {line.strip()}")
    try:
        check_audit(audit, data, len(audit.records))
        drop_leaked(recipe_data, audit, data, log)  # data.leakage=drop: leaked test/validation records left out
    except DataError as error:
        where = _write_refused_audit(recipe, audit.report)
        raise type(error)(error.where, error.problem, f"{error.fix}\n  audit report: {where}") from None
    return recipe_data, audit


def _chat_ready(tokenizer):
    from tunelab.data.tokenize import ensure_chat_template

    ensure_chat_template(tokenizer)
    return tokenizer


def _write_refused_audit(recipe: Recipe, report: dict[str, Any]) -> Path:
    """A refused run keeps its audit: inside a new run directory, or beside an existing run (never inside it)."""
    from tunelab.data.audit_report import write_audit

    run_dir = Path(recipe.output_dir) / recipe.name
    started = RunDir.is_run(run_dir) or (run_dir / "status.json").exists()  # a log file alone is not a run
    target = run_dir / "data" / "audit" if not started else run_dir.with_name(f"{recipe.name}.refused-audit")
    write_audit(report, target)
    if not (run_dir / "recipe.yaml").exists() and target.is_relative_to(run_dir):
        RunDir(run_dir).set_status("refused", reason="data audit")
    return target / "report.md"


def _run_stages(recipe: Recipe, run: RunDir, resume: bool, log, recipe_data, audit, base_from, handoff) -> RunOutcome:
    from tunelab.data.pipeline import train_clusters

    stage = get_stage(recipe.stage)
    model, tokenizer, model_dir = _load_model(recipe, log)
    clusters = train_clusters(audit.clusters, len(recipe_data.train)) if audit else []
    splits = stage.build_datasets(recipe_data, recipe, tokenizer, clusters)
    _write_data_summary(run, splits.summary, log)
    for warning in stage.test_warnings(splits.test_records, tokenizer, recipe):
        log(f"[tunelab] warning: {warning}")  # before any evaluation, so a user can stop and fix the recipe
    results: dict[str, Any] = read_json(run.eval_dir / "metrics.json", {}) if resume else {}
    _evaluate_baselines(stage, recipe, run, model, tokenizer, splits, recipe_data, results, base_from, log)
    if _checks_forgetting(recipe, stage):
        _general_ability(model, tokenizer, recipe, run, "base", results, log)
    trained = _train(stage, recipe, run, model, tokenizer, splits, resume, log, handoff)
    if trained.interrupted:
        run.set_status("interrupted", step=trained.global_step)
        log(f"[tunelab] stopped at step {trained.global_step}; continue with: tunelab run <recipe> --resume")
        return RunOutcome(run, "interrupted", results, trained.global_step)
    if splits.test_records:
        _phase(run, "evaluating the tuned model", log)
        results["tuned"] = stage.evaluate(trained.model, tokenizer, splits.test_records, recipe, run.eval_dir, "tuned")
        write_json(run.eval_dir / "metrics.json", results)
        _compare_base_and_tuned(run, log)
    if _checks_forgetting(recipe, stage):
        _general_ability(trained.model, tokenizer, recipe, run, "tuned", results, log)
        _forgetting_verdict(recipe, run, log)
    if recipe_data.previous is not None:
        from tunelab.continual import against_previous_generation

        _phase(run, "evaluating on the previous run's test set", log)
        against_previous_generation(stage, trained.model, tokenizer, recipe_data, run, log)
    records = _verification_records(splits.test_records, recipe_data)
    check = _export(stage, recipe, run, model_dir, trained.model, tokenizer, records, log)
    run.set_status("completed", step=trained.global_step, parameters=trained.parameters)
    from tunelab.eval.run_report import write_report

    log(f"[tunelab] report: {write_report(run)['html']}")  # `tunelab report <run>` writes it again if need be
    return RunOutcome(run, "completed", results, trained.global_step, check)


def _evaluate_baselines(stage, recipe, run, model, tokenizer, splits, recipe_data, results, base_from, log) -> None:
    """The untouched model on the test set: as the records ask (base), then prompted (eval/prompted.py)."""
    wants_base = recipe.eval.base and "base" in recipe.eval.baselines
    if base_from and splits.test_records and wants_base and "base" not in results:
        from tunelab.shared_baseline import adopt_base_evaluation

        adopted = adopt_base_evaluation(run, base_from, log)
        results |= adopted or {}
    if splits.test_records and wants_base and "base" not in results:
        _phase(run, "evaluating the base model", log, f"on {len(splits.test_records)} test records")
        results["base"] = stage.evaluate(model, tokenizer, splits.test_records, recipe, run.eval_dir, "base")
        write_json(run.eval_dir / "metrics.json", results)
    if splits.test_records and stage.prompted_baselines:
        from tunelab.eval.prompted import evaluate_prompted

        trained_ids = set(splits.summary["ids"]["train"])  # shots come from the training split only
        shots = [r for r in recipe_data.train if r.get("id") in trained_ids]
        announce = lambda text: _phase(run, text, log)  # noqa: E731
        evaluate_prompted(stage, model, tokenizer, splits.test_records, shots, recipe, run.eval_dir, results, announce)


def _checks_forgetting(recipe: Recipe, stage: Stage) -> bool:
    """The general-ability check generates answers: it applies to a stage that produces a policy."""
    return recipe.eval.forgetting.enabled and stage.produces == "policy"


def _compare_base_and_tuned(run: RunDir, log) -> None:
    """Paired-bootstrap intervals for every held-out metric's change (eval/comparison.json)."""
    from tunelab.eval.comparison import describe, write_comparison

    for baseline in ("base", "zero_shot", "k_shot"):
        comparison = write_comparison(run.eval_dir, baseline)  # None without that baseline's predictions
        if comparison is not None:
            log(f"[tunelab] {describe(comparison)}")


def _phase(run: RunDir, phase: str, log=None, detail: str = "") -> None:
    """Say in status.json (and the log) what the run is doing now, so a reader knows where a killed run stopped."""
    run.set_status("running", phase=phase)
    if log is not None:
        log(f"[tunelab] {phase}{' ' + detail if detail else ''}")


def _load_model(recipe: Recipe, log):
    from tunelab.data.tokenize import ensure_chat_template
    from tunelab.model.load import load_model, sync_generation_eos
    from tunelab.model.methods import method_spec

    loading = method_spec(recipe.method).loading_options(recipe.method)
    quantized = (
        f" ({loading['quantization_config'].quant_method} quantised, as the method trains it)" if loading else ""
    )
    log(f"[tunelab] loading model {recipe.model.name}{quantized}")
    model, tokenizer, model_dir = load_model(recipe.model.name, trust_remote_code=recipe.model.trust_remote_code,
                                             **loading)  # fmt: skip
    if ensure_chat_template(tokenizer):
        log("[tunelab] the model has no chat template; using tunelab's ChatML fallback")
    sync_generation_eos(model.generation_config, tokenizer)
    return model, tokenizer, model_dir


def _train(stage: Stage, recipe: Recipe, run: RunDir, model, tokenizer, splits, resume: bool, log, handoff):
    """Train, or on --resume after training had finished (killed while evaluating or merging), load its result."""
    from dataclasses import replace

    from tunelab.train.distributed import sharding_notes
    from tunelab.train.fit import finished_training, fit, load_trained

    finished = finished_training(run, recipe) if resume else None
    # the other ranks of a distributed run train on these datasets (the test records stay here) or have nothing to do
    handoff.send(
        {"state": "train", "splits": replace(splits, test_records=[])} if finished is None else {"state": "done"}
    )
    if finished is not None:
        log(f"[tunelab] training had finished at step {finished.get('global_step')}; using the saved model")
        return load_trained(run, recipe, stage.prepare_model(model), finished)
    _phase(run, "training", log, f"({stage.name}, {recipe.method.type}) → {run.path}")
    for note in sharding_notes(recipe.train):
        log(f"[tunelab] warning: {note}")
    trained = fit(stage, recipe, run, model, tokenizer, splits, resume=resume)
    if trained.model is None:  # sharded across the ranks (ZeRO-3, FSDP): read back what they gathered and saved
        from tunelab.model.adapters import count_parameters
        from tunelab.model.methods import method_spec

        fresh, _, _ = _load_model(recipe, log)
        trained.model = method_spec(recipe.method).load_saved(run, stage.prepare_model(fresh), recipe.method).eval()
        trained.parameters = count_parameters(trained.model)
    return trained


def _verification_records(test_records: list[dict], recipe_data) -> list[dict]:
    """Records whose prompts compare the merged and the adapter model: the test set, else validation, else training
    records — the user's own prompts, so the check exercises what the model was trained for."""
    for records in (test_records, recipe_data.sets.get("validation", []), recipe_data.train):
        if records:
            return records
    return []


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


def _general_ability(model, tokenizer, recipe: Recipe, run: RunDir, label: str, results: dict, log) -> None:
    """Score the model on the forgetting task (once: a resumed run keeps the base model's scores)."""
    from tunelab.eval.bench import run_benchmark
    from tunelab.eval.tasks import load_task

    settings = recipe.eval.forgetting
    folder = run.eval_dir / "forgetting" / label
    report = read_json(folder / "report.json")
    if report is None or not (folder / "items.jsonl").is_file():
        task = load_task(settings.task, settings.data, limit=settings.limit)
        log(f"[tunelab] forgetting check: scoring the {label} model on {len(task.items)} {task.name} items")
        report, _ = run_benchmark(model, tokenizer, task, settings.shots, settings.scoring or task.scoring, folder)
    results.setdefault(label, {})[f"{report['task']}_accuracy"] = report["overall"]["accuracy"]
    write_json(run.eval_dir / "metrics.json", results)


def _forgetting_verdict(recipe: Recipe, run: RunDir, log) -> None:
    from tunelab.eval.forgetting import describe, forgetting_report

    folder = run.eval_dir / "forgetting"
    rows = {label: read_jsonl(folder / label / "items.jsonl") for label in ("base", "tuned")}
    settings = recipe.eval.forgetting
    report = forgetting_report(rows["base"], rows["tuned"], settings.task, settings.threshold)
    write_json(run.eval_dir / "forgetting.json", report)
    log(f"[tunelab] {describe(report)}")


def _sync_saved_generation_config(folder: Path, tokenizer) -> None:
    from transformers import GenerationConfig

    from tunelab.model.load import sync_generation_eos

    config = GenerationConfig.from_pretrained(folder)
    if sync_generation_eos(config, tokenizer):
        config.save_pretrained(folder)


def _export(stage: Stage, recipe: Recipe, run: RunDir, model_dir: str, trained, tokenizer, records, log):
    """Merge the trained adapter into the base model and check the merged model behaves like the adapter model."""
    from tunelab.export.verify import MERGE_CHECKS
    from tunelab.model.methods import method_spec

    if not (recipe.export.merge and method_spec(recipe.method).can_merge):
        return None
    from tunelab.export.merge import merge_adapter_dir

    merge_check = MERGE_CHECKS[stage.produces]
    _phase(run, "merging the adapter into the base model", log, f"→ {run.merged}")
    # the run's own merged/ is replaced: a resumed run may hold one from an attempt killed while verifying it
    merge_adapter_dir(model_dir, run.adapter, run.merged, dtype=recipe.export.dtype, overwrite=True,
                      load_base=merge_check.load_base)  # fmt: skip
    if stage.produces == "policy":
        _sync_saved_generation_config(run.merged, tokenizer)
    _phase(run, "verifying the merged model")
    trained.eval()
    merged = merge_check.load_merged(run.merged)
    check = merge_check.verify(trained, merged, tokenizer, records, recipe.export.verify_prompts)
    check["summary"] = merge_check.describe(check)
    write_json(run.merged / "verification.json", check)
    log(f"[tunelab] {check['summary']}")
    return check
