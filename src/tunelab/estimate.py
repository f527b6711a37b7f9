"""`tunelab estimate <recipe>`: what the run will need before it runs — memory, time and cost, here and on GPUs.

- The workload is counted, not guessed: the recipe's data is loaded and tokenised as `run` does it (sequences, tokens,
  steps, validation passes).
- This machine: a calibration in a child process does what the run does, briefly (`calibration_child`): one batch of
  each evaluation before training, the longest prompts first, then a few real training steps. It gives seconds per
  trained token, the first step's extra cost, one validation pass and the process's peak memory to the end of
  training; they are extrapolated to the whole run. `tunelab run` copies the estimate into the run and
  the report puts it beside what the run measured.
- GPUs: FLOPs over an assumed utilisation, and a memory model per method (train/costs.py), with the bundled, dated
  price table (train/gpus.py) or the user's.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tunelab.config.schema import Recipe
from tunelab.errors import TunelabError
from tunelab.runs import RunDir, estimate_beside, read_json, write_json

CALIBRATION_STEPS = 8


def estimate_path(recipe: Recipe) -> Path:
    """Where `tunelab estimate` leaves its estimate: beside the run it is for (`tunelab run` copies it in)."""
    return estimate_beside(Path(recipe.output_dir) / recipe.name)


def workload(recipe: Recipe) -> dict[str, Any]:
    """Sequences, tokens and steps of the run, from the recipe's data tokenised as `run` tokenises it."""
    from tunelab.data.generations import with_previous_generation
    from tunelab.data.pipeline import load_recipe_sets
    from tunelab.data.tokenize import ensure_chat_template
    from tunelab.model.load import load_tokenizer
    from tunelab.train.costs import steps_for
    from tunelab.train.stages import get_stage

    recipe_data = load_recipe_sets(recipe.data, recipe.seed, recipe.stage)
    with_previous_generation(recipe, recipe_data)
    tokenizer = load_tokenizer(recipe.model.name, trust_remote_code=recipe.model.trust_remote_code)
    ensure_chat_template(tokenizer)
    splits = get_stage(recipe.stage).build_datasets(recipe_data, recipe, tokenizer, [])
    lengths = [len(ids) for ids in splits.train["input_ids"]] if "input_ids" in splits.train.column_names else []
    train = recipe.train
    micro, accumulation = (
        int(train.get("per_device_train_batch_size", 8)),
        int(train.get("gradient_accumulation_steps", 1)),
    )
    epochs = float(train.get("num_train_epochs", 3.0))
    steps = steps_for(len(splits.train), micro, accumulation, epochs, train.get("max_steps"))
    tokens = sum(lengths)
    per_step = tokens / max(1, len(lengths)) * micro * accumulation
    trained = min(tokens * epochs, steps * per_step) if train.get("max_steps") else tokens * epochs
    validation = len(splits.validation) if splits.validation is not None else 0
    eval_steps = int(train.get("eval_steps") or 0) if validation else 0
    return {"sequences": len(splits.train), "tokens": tokens, "epochs": epochs, "micro_batch": micro,
            "accumulation": accumulation, "steps": steps, "trained_tokens": int(trained),
            "max_length": recipe.data.max_length, "validation": validation, "validation_passes":
            steps // eval_steps if eval_steps else 0, "test": len(splits.test_records)}  # fmt: skip


def parameter_counts(recipe: Recipe) -> tuple[Any, dict[str, int] | None]:
    """(model config, {"total", "trainable"}) with the method applied to a weightless copy of the model (None when
    the method cannot be applied that way; the calibration run counts them then)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from tunelab.model.adapters import count_parameters
    from tunelab.model.load import model_folder
    from tunelab.model.methods import apply_method

    config = AutoConfig.from_pretrained(
        model_folder(recipe.model.name), trust_remote_code=recipe.model.trust_remote_code
    )
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
            counts = count_parameters(apply_method(model, recipe.method))
    except Exception:  # a method that needs real weights (PiSSA's SVD, LoftQ): the calibration counts instead
        return config, None
    return config, {"total": int(counts["total"]), "trainable": int(counts["trainable"])}


def evaluation_batches(recipe: Recipe) -> list[tuple[str, list[dict], Any]]:
    """What the run evaluates before training, one batch each, of the test records with the longest prompts:
    (label, records as asked, the recipe with that evaluation's batch size). The batch with the most tokens decides
    the memory an evaluation takes."""
    from tunelab.data.load import load_source
    from tunelab.data.pipeline import load_recipe_sets
    from tunelab.data.quality import prompt_text
    from tunelab.eval.metrics import load_json_schema
    from tunelab.eval.prompted import baseline_records, same_memory_batches, wanted_baselines
    from tunelab.train.stages import get_stage

    if not recipe.data.test:
        return []
    records = [r for r in load_source(recipe.data.test, invalid=[]) if r.get("messages")]
    longest = sorted(records, key=lambda r: len(prompt_text(r)), reverse=True)[: recipe.eval.batch_size]
    batches = [("base", longest, recipe)] if recipe.eval.base and "base" in recipe.eval.baselines else []
    if get_stage(recipe.stage).prompted_baselines and wanted_baselines(recipe):
        train = load_recipe_sets(recipe.data, recipe.seed, recipe.stage).train
        schema = load_json_schema(recipe.eval.json_schema).schema if recipe.eval.json_schema else None
        for label in wanted_baselines(recipe):
            asked = baseline_records(label, longest, train, recipe.eval.k_shot, schema)
            scaled = same_memory_batches(recipe, longest, asked)
            batches.append((label, asked[: scaled.eval.batch_size], scaled))
    return batches


def calibration_child(original: str, calibration: str) -> None:
    """The calibration process: the model loaded once, as `run` loads it; one batch of each evaluation the run makes
    before training (and the forgetting probe), in the same order; then the calibration recipe's training steps."""
    from tunelab.data.pipeline import load_recipe_sets
    from tunelab.recipe import load_recipe
    from tunelab.train.fit import fit
    from tunelab.train.stages import get_stage
    from tunelab.workflow import _checks_forgetting, _general_ability, _load_model

    recipe, short = load_recipe(original), load_recipe(calibration)
    stage = get_stage(recipe.stage)
    model, tokenizer, _ = _load_model(short, lambda line: None)
    run = RunDir.prepare(Path(short.output_dir) / short.name)
    run.write_recipe(saved_recipe_of(short), {})
    for label, records, asked in evaluation_batches(recipe):
        stage.evaluate(model, tokenizer, records, asked, run.eval_dir, label)
    if _checks_forgetting(recipe, stage):
        _general_ability(model, tokenizer, recipe, run, "base", {}, lambda line: None)
    splits = stage.build_datasets(load_recipe_sets(short.data, short.seed, short.stage), short, tokenizer, [])
    fit(stage, short, run, model, tokenizer, splits)


def saved_recipe_of(recipe: Recipe) -> dict[str, Any]:
    from tunelab.workflow import saved_recipe

    return saved_recipe(recipe)


def calibration_recipe(recipe: Recipe, folder: Path, steps: int) -> Path:
    import yaml

    """The recipe, trained for `steps` steps in `folder`: no audit, evaluation, checkpoints or export; one validation
    pass at the last step (to time it) when the recipe validates."""
    from tunelab.workflow import saved_recipe

    document = saved_recipe(recipe)
    document |= {"name": "calibration", "output_dir": str(folder), "continue_from": None}
    document["model"]["name"] = recipe.model.name
    document["data"] |= {"test": None, "audit": False, "replay": 0.0}  # calibration_child evaluates, then trains
    document["eval"] |= {"base": False, "baselines": [], "forgetting": {"enabled": False}}
    document["export"]["merge"] = False
    validates = document["data"].get("validation") is not None
    document["train"] = dict(document["train"]) | {
        "max_steps": steps, "logging_steps": 1, "save_steps": 10**6, "report_to": "none",
        "eval_steps": steps if validates else None, "early_stopping_patience": None, "load_best_model_at_end": False,
    }  # fmt: skip
    document["train"] = {k: v for k, v in document["train"].items() if v is not None}
    path = folder / "calibration.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return path


def calibrate(recipe: Recipe, steps: int, log) -> dict[str, Any]:
    """Evaluate and train as the run does, briefly, in a child process (its peak memory is the run's alone: see
    calibration_child); returns its timings."""
    import yaml

    with tempfile.TemporaryDirectory(prefix="tunelab-calibration-") as scratch:
        folder = Path(scratch)
        path = calibration_recipe(recipe, folder, steps)
        log(
            f"[tunelab] calibrating: one batch of each evaluation before training, then {steps} training steps of "
            f"{recipe.name}, on this machine"
        )
        started = time.monotonic()
        original = folder / "recipe.yaml"
        original.write_text(yaml.safe_dump(saved_recipe_of(recipe), allow_unicode=True), encoding="utf-8")
        child = (
            "from tunelab.allocator import prepare_process; prepare_process()\n"  # first, as the CLI does
            f"from tunelab.estimate import calibration_child; calibration_child({str(original)!r}, {str(path)!r})"
        )
        done = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True)
        if done.returncode != 0:
            tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-8:])
            raise TunelabError(f"the calibration run failed (exit {done.returncode}); what it said last:\n{tail}")
        run = RunDir(folder / "calibration")
        training = read_json(run.path / "training.json") or {}
        return {"steps": steps, "wall_seconds": round(time.monotonic() - started, 1)} | timings(training, run.metrics())


def timings(training: dict[str, Any], rows: list[dict]) -> dict[str, Any]:
    """Per-step durations from the logged token counts and speeds (one log row per step), the first step's extra
    cost, the rest of the training loop's time (the validation pass) and the peak memory."""
    steps = [r for r in rows if "tokens_per_second" in r and r.get("tokens_per_second")]
    tokens, previous = [], 0
    for row in steps:
        tokens.append(row["tokens_seen"] - previous)
        previous = row["tokens_seen"]
    durations = [t / row["tokens_per_second"] for t, row in zip(tokens, steps, strict=True)]
    if len(durations) < 3:
        raise TunelabError("the calibration run logged fewer than 3 steps; give --steps 4 or more")
    per_token = sum(durations[1:]) / max(1, sum(tokens[1:]))
    return {
        "seconds_per_token": per_token,
        "first_step_extra_seconds": max(0.0, durations[0] - per_token * tokens[0]),
        "validation_pass_seconds": max(0.0, float(training.get("train_seconds", 0.0)) - sum(durations)),
        "peak_rss_bytes": int(training.get("peak_rss_bytes") or 0),
        "parameters": training.get("parameters"),
        "step_seconds": [round(d, 3) for d in durations],
    }


def this_machine(calibration: dict[str, Any], work: dict[str, Any]) -> dict[str, Any]:
    from tunelab.hardware import cpu_class
    from tunelab.train.gpus import CPU_HOURLY_USD

    seconds = (calibration["first_step_extra_seconds"] + calibration["seconds_per_token"] * work["trained_tokens"]
               + calibration["validation_pass_seconds"] * work["validation_passes"])  # fmt: skip
    return {"cpu": cpu_class(), "train_seconds": round(seconds, 1), "peak_rss_bytes": calibration["peak_rss_bytes"],
            "cost_usd": round(seconds / 3600 * CPU_HOURLY_USD, 4), "hourly_usd": CPU_HOURLY_USD}  # fmt: skip


def estimate(recipe: Recipe, gpus: list[str] | None = None, prices: str | None = None, mfu: float | None = None,
             steps: int | None = CALIBRATION_STEPS, log=print) -> dict[str, Any]:  # fmt: skip
    """The whole estimate (also written to `estimate_path(recipe)`); `steps=None` skips the calibration."""
    from tunelab.model.methods import method_spec
    from tunelab.train.costs import gpu_rows, method_family, what_would_fit
    from tunelab.train.fit import training_fingerprint
    from tunelab.train.gpus import gpu_table

    table = gpu_table(prices)
    unknown = [name for name in gpus or [] if name not in table]
    if unknown:
        raise TunelabError(f"--gpu {', '.join(unknown)}: not in the table; choose from {', '.join(table)} "
                           "(or add it with --prices)")  # fmt: skip
    work = workload(recipe)
    config, counts = parameter_counts(recipe)
    result: dict[str, Any] = {"recipe": recipe.name, "fingerprint": training_fingerprint(recipe), "workload": work,
                              "created": time.strftime("%Y-%m-%dT%H:%M:%S")}  # fmt: skip
    if steps:
        result["calibration"] = calibrate(recipe, steps, log)
        result["this_machine"] = this_machine(result["calibration"], work)
        counts = counts or result["calibration"]["parameters"]
    if counts is None:
        raise TunelabError(
            "the method's trainable parameters are only known from a calibration run; drop --no-calibrate"
        )
    quantized = bool(method_spec(recipe.method).loading_options(recipe.method))
    family = method_family(recipe.method.type, quantized)
    result["parameters"] = counts
    result["gpu"] = gpu_rows(config, counts, family, work, table, gpus or list(table), mfu) | {"family": family}
    result["gpu"]["advice"] = what_would_fit(result["gpu"]["rows"], family)
    write_json(estimate_path(recipe), result)
    return result


def describe(result: dict[str, Any]) -> list[str]:
    """The estimate as a person reads it (the CLI prints these lines)."""
    from tunelab.train.costs import GIB

    work, counts = result["workload"], result["parameters"]
    lines = [f"{result['recipe']}: {work['sequences']} training sequences, {work['tokens']:,} tokens per epoch, "
             f"{work['steps']} steps ({work['micro_batch']}×{work['accumulation']} per step), "
             f"{work['trained_tokens']:,} tokens trained; {counts['trainable']:,} of {counts['total']:,} "
             "parameters trained"]  # fmt: skip
    if "this_machine" in result:
        here, calibration = result["this_machine"], result["calibration"]
        lines.append(f"this machine ({here['cpu']}): training ≈ {_duration(here['train_seconds'])}, peak memory ≈ "
                     f"{here['peak_rss_bytes'] / GIB:.1f} GiB, ≈ ${here['cost_usd']:.3f} at ${here['hourly_usd']}/h "
                     f"(from {calibration['steps']} real steps: {1000 * calibration['seconds_per_token']:.2f} s per "
                     f"1k tokens, a validation pass {calibration['validation_pass_seconds']:.1f} s)")  # fmt: skip
    gpu = result["gpu"]
    lines.append(f"GPUs ({gpu['family']}; {gpu['flops_per_token'] / 1e9:.2f} GFLOP per token, assumed MFU "
                 f"{gpu['mfu']:.0%}; memory: weights, gradients, AdamW states, activations of one micro-batch, "
                 "1.5 GiB overhead):")  # fmt: skip
    for row in gpu["rows"]:
        lines.append(f"  {row['gpu']:10} {row['memory_needed_gib']:6.1f} GiB of {row['memory_gib']:>3} "
                     f"(checkpointed {row['memory_checkpointed_gib']:.1f}) fits: {row['fits']:27} "
                     f"{_duration(row['seconds']):>9}  ${row['cost_usd']:.4f} at ${row['hourly_usd']}/h")  # fmt: skip
    lines += [f"  does not fit: {line}" for line in gpu["advice"]]
    prices = {row["price_source"] for row in gpu["rows"]}
    lines.append(f"prices: {'; '.join(sorted(p for p in prices if p))}")
    return lines


def _duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
