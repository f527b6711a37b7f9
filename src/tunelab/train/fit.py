"""What every stage's training shares: speed plan, method, trackers, callbacks, resume, graceful stop, unwrapping,
saving, and recognising a training that had already finished. A stage only builds its trainer (train/stages.py)."""

from __future__ import annotations

import shutil
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from tunelab.config.schema import Recipe
from tunelab.data.pipeline import Splits
from tunelab.model.adapters import count_parameters
from tunelab.model.methods import apply_method, method_spec
from tunelab.model.peft_methods import forget_initial_adapter, save_kwargs
from tunelab.model.quantized_base import weight_bytes
from tunelab.runs import RunDir, read_json, save_folder_atomic, write_json
from tunelab.train import method_training
from tunelab.train.callbacks import GracefulStop, TimeBudget, standard_callbacks
from tunelab.train.distributed import StopTogether, own_folder, world
from tunelab.train.frozen_bf16 import frozen_weights_in_bf16, qualifies
from tunelab.train.lean_activations import lean_activations
from tunelab.train.neftune import PackedNeftune
from tunelab.train.packing import restore_attention, use_packed_attention
from tunelab.train.speed import apply_threads, plan_speed
from tunelab.train.stage import Stage
from tunelab.train.trackers import Tracking


@dataclass
class TrainResult:
    model: Any
    interrupted: bool
    global_step: int
    best_checkpoint: str | None
    parameters: dict[str, int]
    train_seconds: float = 0.0
    tokens_seen: int = 0  # non-padding input tokens the optimizer steps consumed


def fit(stage: Stage, recipe: Recipe, run: RunDir, model, tokenizer, splits: Splits, resume: bool = False):
    """Train `model` with the stage's trainer under tunelab's bookkeeping; save what it trained into the run."""
    from transformers import set_seed

    set_seed(recipe.seed)  # adapter initialisation is random too (the same on every rank: DDP starts them equal)
    place = world()
    spec = method_spec(recipe.method)
    plan = _speed_plan(stage, recipe, model, spec)
    model = apply_method(stage.prepare_model(model), recipe.method)
    plan.frozen_bf16 = plan.frozen_bf16 and qualifies(stage, recipe.method, plan)
    tracking = Tracking(recipe.train.get("report_to") if place.main else "none", run.path, recipe.name)
    described = {"stage": stage.name, "method": recipe.method.type, "processes": place.size}
    described |= stage.describe(recipe, model) | plan.as_dict()
    callbacks = _callbacks(run, recipe, tracking, place)
    stopper = next(c for c in callbacks if isinstance(c, GracefulStop))
    lean = lean_activations(model) if plan.lean_activations else nullcontext(False)
    frozen = _frozen_bf16(model, run, spec, place) if plan.frozen_bf16 else nullcontext()
    record = (lambda data: write_json(run.path / "training.json", data)) if place.main else (lambda data: None)
    with tracking, lean as leaned, frozen:  # the trackers' integrations read their settings when the trainer is built
        described["lean_activations"] = plan.lean_activations = leaned
        described["weight_bytes"] = weight_bytes(model)  # as held while training (frozen bf16, quantised)
        record(described | tracking.describe())
        trainer = stage.build_trainer(recipe, run, model, tokenizer, splits, plan, callbacks)
        method_training.install(trainer, recipe.method)
        if plan.padding_free and recipe.train.get("neftune_noise_alpha"):  # noise per packed sequence, not per row
            PackedNeftune(float(recipe.train["neftune_noise_alpha"])).install(trainer)
        if getattr(trainer, "training_notes", None):  # what the stage did while building (rm: a fitted score head)
            described |= trainer.training_notes
            record(described | tracking.describe())
        tracking.attach(trainer)
        output = run_trainer(trainer, run, stopper, resume)
    sharded = sharded_parameters(trainer)
    model = None if sharded else trained_model(trainer)  # sharded: rank 0 reads the gathered weights back (workflow)
    figures = training_figures(trainer, output, model, callbacks)
    record(described | tracking.describe() | figures)
    result = TrainResult(model, stopper.requested, trainer.state.global_step, trainer.state.best_model_checkpoint,
                         count_parameters(trainer.model), figures["train_seconds"], figures["tokens_seen"])  # fmt: skip
    if sharded:
        save_gathered(trainer, tokenizer, run, recipe)  # every rank takes part in gathering the shards
    elif place.main:  # the other ranks hold the same weights (DDP keeps them equal); rank 0 saves them
        save_trained(model, tokenizer, run, recipe)
    if place.main and not result.interrupted:  # a resumed run that was killed after this point does not train again
        _mark_completed(run, recipe, result)
    return result


def _speed_plan(stage: Stage, recipe: Recipe, model, spec):
    """train/speed.py's plan, narrowed to what the stage and the method allow; threads set."""
    plan = plan_speed(recipe.train, model.config, recipe.data.max_length)
    apply_threads(plan)
    plan.padding_free = plan.padding_free and stage.packs_sequences and not spec.virtual_tokens
    plan.label_only_loss = plan.label_only_loss and not spec.virtual_tokens  # PEFT shifts the labels past its tokens
    if plan.padding_free and use_packed_attention(model):
        plan.attention = model.config._attn_implementation
    return plan


def _callbacks(run: RunDir, recipe: Recipe, tracking: Tracking, place) -> list:
    """Rank 0 (or the only process) keeps the run's metrics and status; a distributed run's ranks stop together."""
    callbacks = standard_callbacks(run, recipe.train, writes=place.main) + tracking.callbacks()
    return callbacks + ([StopTogether()] if place.distributed else [])  # last: after every callback that may stop


@contextmanager
def _frozen_bf16(model, run: RunDir, spec, place):
    """The frozen weights held in bf16 while training, their fp32 values parked in the run (per rank; the other
    ranks' folders go once the weights are back)."""
    park = run.path if place.main else own_folder(run.path, place)
    with frozen_weights_in_bf16(model, park, spec.low_precision_base) as converted:
        yield converted
    if park != run.path:
        shutil.rmtree(park, ignore_errors=True)


def training_figures(trainer, output, model, callbacks) -> dict[str, Any]:
    """What training.json records once training ends: time, tokens, speed, rollout share, distance from the
    pretrained weights, the process's peak memory, and where a time budget stopped it."""
    seconds, tokens = float(output.metrics.get("train_runtime", 0.0)), int(trainer.state.num_input_tokens_seen)
    figures = {
        "train_seconds": seconds,
        "tokens_seen": tokens,
        "real_tokens_per_second": tokens / seconds if seconds else None,
        "peak_rss_bytes": peak_rss_bytes(),  # the process so far: loading, base evaluation, training
    } | _rollout_time(trainer, seconds)
    distance = method_training.distance_from_pretrained(trainer, model) if model is not None else None
    figures |= {"distance_from_pretrained": distance} if distance is not None else {}
    budget = next((c for c in callbacks if isinstance(c, TimeBudget)), None)
    return figures | ({"stopped_by_time_budget_at_step": budget.stopped_at} if budget and budget.stopped_at else {})


def peak_rss_bytes() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _rollout_time(trainer, seconds: float) -> dict[str, Any]:
    """For the RL stages: the time spent sampling (train/rollout.py), and its share of the training time."""
    timing = getattr(trainer, "rollout_timing", None)
    if timing is None or not timing.calls:
        return {}
    share = timing.seconds / seconds if seconds else None
    return {"rollout_seconds": round(timing.seconds, 2), "rollout_tokens": timing.tokens, "rollout_share": share}


def _mark_completed(run: RunDir, recipe: Recipe, result: TrainResult) -> None:
    training = read_json(run.path / "training.json", {})
    write_json(run.path / "training.json", training | {"completed": True, "global_step": result.global_step,
               "best_checkpoint": result.best_checkpoint, "parameters": result.parameters,
               "fingerprint": training_fingerprint(recipe)})  # fmt: skip


def run_trainer(trainer, run: RunDir, stopper: GracefulStop, resume: bool):
    """Train (from the last checkpoint when resuming) with Ctrl-C asking for a clean stop."""
    checkpoint = run.last_checkpoint() if resume else None
    if resume:  # rows logged after the checkpoint (or all of them, starting over) would be logged again
        run.truncate_metrics_after(int(checkpoint.name.split("-")[-1]) if checkpoint else 0)
    stopper.install()
    try:
        return trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    finally:
        stopper.uninstall()


def trained_model(trainer):
    """The trained model, unwrapped: accelerate wraps forward() in bf16 autocast for mixed precision, and the returned
    model (evaluated and compared with the merged export) must compute in full precision like the saved weights."""
    model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    restore_attention(model.get_base_model() if hasattr(model, "get_base_model") else model)
    model.eval()
    return model


def training_fingerprint(recipe: Recipe) -> str:
    """A digest of what decides the trained weights: a resumed run whose recipe changed (more steps, say) trains on."""
    import hashlib
    import json

    decides = {"seed", "stage", "model", "data", "method", "train"} | ({"reward"} if recipe.reward else set())
    parts = recipe.model_dump(mode="json", include=decides)  # runs without rewards keep the digest they had
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_trained(model, tokenizer, run: RunDir, recipe: Recipe) -> None:
    """The method's result into the run: an adapter into adapter/ (PEFT format), a full model into merged/. Saved
    beside the target and renamed into place, so a kill while saving never leaves half a model there."""
    spec = method_spec(recipe.method)

    def write(folder) -> None:
        model.save_pretrained(folder, **save_kwargs(model))
        tokenizer.save_pretrained(folder)
        if spec.saves == "model" and getattr(model, "generation_config", None) is not None:  # a reward model has none
            model.generation_config.save_pretrained(folder)

    save_folder_atomic(spec.saved_folder(run), write)
    forget_initial_adapter(model)


def sharded_parameters(trainer) -> bool:
    """True when the ranks each hold only a shard of the weights (DeepSpeed ZeRO-3, FSDP): saving them gathers the
    shards from every rank, and rank 0 cannot run the model alone afterwards."""
    if getattr(trainer, "is_fsdp_enabled", False):
        return True
    plugin = getattr(trainer.accelerator.state, "deepspeed_plugin", None) if trainer.is_deepspeed_enabled else None
    return plugin is not None and plugin.zero_stage == 3


def save_gathered(trainer, tokenizer, run: RunDir, recipe: Recipe) -> None:
    """The Trainer gathers the shards (every rank calls this) and rank 0 writes them, as save_trained would."""
    import torch.distributed as dist

    gathered = run.path / ".gathered"
    trainer.save_model(str(gathered))
    dist.barrier()
    if world().main:

        def write(folder) -> None:
            shutil.copytree(gathered, folder)
            tokenizer.save_pretrained(folder)

        save_folder_atomic(method_spec(recipe.method).saved_folder(run), write)
        shutil.rmtree(gathered, ignore_errors=True)
    from transformers.integrations.deepspeed import unset_hf_deepspeed_config

    unset_hf_deepspeed_config()  # else from_pretrained would keep partitioning every model loaded afterwards (ZeRO-3)


def finished_training(run: RunDir, recipe: Recipe) -> dict[str, Any] | None:
    """training.json of a run whose training completed, with this recipe, and saved its model; else None."""
    training = read_json(run.path / "training.json", {})
    same = training.get("fingerprint") == training_fingerprint(recipe)
    saved = method_spec(recipe.method).saved_marker(run).is_file()
    return training if training.get("completed") and same and saved else None


def load_trained(run: RunDir, recipe: Recipe, model, training: dict[str, Any]) -> TrainResult:
    """The model a finished training saved (adapter on the given base model, or the full model folder)."""
    trained = method_spec(recipe.method).load_saved(run, model, recipe.method)
    trained.eval()
    return TrainResult(
        model=trained,
        interrupted=False,
        global_step=int(training.get("global_step", 0)),
        best_checkpoint=training.get("best_checkpoint"),
        parameters=training.get("parameters") or count_parameters(trained),
        train_seconds=float(training.get("train_seconds") or 0.0),
        tokens_seen=int(training.get("tokens_seen") or 0),
    )
