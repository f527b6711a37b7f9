"""Supervised fine-tuning: data → model → TRL SFTTrainer → train → save. Bookkeeping lives in callbacks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunelab.config.schema import Recipe
from tunelab.config.train_args import build_sft_config
from tunelab.data.pipeline import Splits
from tunelab.model.adapters import apply_method, count_parameters
from tunelab.runs import RunDir, read_json, save_folder_atomic, write_json
from tunelab.train.callbacks import GracefulStop, standard_callbacks, use_concise_progress
from tunelab.train.packing import packing_collator, restore_attention, use_packed_attention
from tunelab.train.speed import apply_threads, plan_speed
from tunelab.train.trackers import Tracking
from tunelab.train.trainer import TunelabSFTTrainer


@dataclass
class TrainResult:
    model: Any
    interrupted: bool
    global_step: int
    best_checkpoint: str | None
    parameters: dict[str, int]
    train_seconds: float = 0.0
    tokens_seen: int = 0  # non-padding input tokens the optimizer steps consumed


def run_sft(recipe: Recipe, run: RunDir, model, tokenizer, splits: Splits, resume: bool = False) -> TrainResult:
    from transformers import set_seed

    set_seed(recipe.seed)  # adapter initialisation is random too
    plan = plan_speed(recipe.train, model.config, recipe.data.max_length)
    apply_threads(plan)
    if plan.padding_free and use_packed_attention(model):
        plan.attention = model.config._attn_implementation
    model = apply_method(model, recipe.method)
    tracking = Tracking(recipe.train.get("report_to"), run.path, recipe.name)
    write_json(run.path / "training.json", plan.as_dict() | tracking.describe())
    callbacks = standard_callbacks(run, recipe.train) + tracking.callbacks()
    stopper = next(c for c in callbacks if isinstance(c, GracefulStop))
    with tracking:  # the trackers' integrations read their settings when the trainer is built and when it starts
        trainer = build_trainer(recipe, run, model, tokenizer, splits, plan, callbacks)
        tracking.attach(trainer)
        output = run_trainer(trainer, run, stopper, resume)
    seconds, tokens = float(output.metrics.get("train_runtime", 0.0)), int(trainer.state.num_input_tokens_seen)
    write_json(run.path / "training.json", plan.as_dict() | tracking.describe() | {"train_seconds": seconds,
               "tokens_seen": tokens, "real_tokens_per_second": tokens / seconds if seconds else None})  # fmt: skip
    model = trained_model(trainer)
    save_trained(model, tokenizer, run, recipe)
    result = TrainResult(
        model=model,
        interrupted=stopper.requested,
        global_step=trainer.state.global_step,
        best_checkpoint=trainer.state.best_model_checkpoint,
        parameters=count_parameters(trainer.model),
        train_seconds=seconds,
        tokens_seen=tokens,
    )
    if not result.interrupted:  # a resumed run that was killed after this point does not train again
        training = read_json(run.path / "training.json", {})
        write_json(run.path / "training.json", training | {"completed": True, "global_step": result.global_step,
                   "best_checkpoint": result.best_checkpoint, "parameters": result.parameters,
                   "fingerprint": training_fingerprint(recipe)})  # fmt: skip
    return result


def build_trainer(recipe: Recipe, run: RunDir, model, tokenizer, splits: Splits, plan, callbacks):
    """TRL's trainer with tunelab's settings, collator, loss and progress lines."""
    args = build_sft_config(
        recipe.train,
        str(run.checkpoints),
        recipe.seed,
        has_validation=splits.validation is not None,
        plan=plan,
        include_num_input_tokens_seen="non_padding",
        run_name=recipe.train.get("run_name") or recipe.name,  # MLflow's and W&B's name for the run
    )
    trainer = TunelabSFTTrainer(
        model=model,
        args=args,
        train_dataset=splits.train,
        eval_dataset=splits.validation,
        processing_class=tokenizer,
        data_collator=packing_collator() if plan.padding_free else None,
        callbacks=callbacks,
        label_only_loss=plan.label_only_loss,
    )
    use_concise_progress(trainer)
    return trainer


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

    parts = recipe.model_dump(mode="json", include={"seed", "model", "data", "method", "train"})
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_trained(model, tokenizer, run: RunDir, recipe: Recipe) -> None:
    """LoRA → adapter/ (PEFT format); full and freeze → merged/ (a complete model folder). Saved beside the target
    and renamed into place, so a kill while saving never leaves half a model there."""
    lora = recipe.method.type == "lora"

    def write(folder) -> None:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        if not lora:
            model.generation_config.save_pretrained(folder)

    save_folder_atomic(run.adapter if lora else run.merged, write)


def finished_training(run: RunDir, recipe: Recipe) -> dict[str, Any] | None:
    """training.json of a run whose training completed, with this recipe, and saved its model; else None."""
    training = read_json(run.path / "training.json", {})
    saved = run.adapter / "adapter_config.json" if recipe.method.type == "lora" else run.merged / "config.json"
    same = training.get("fingerprint") == training_fingerprint(recipe)
    return training if training.get("completed") and same and saved.is_file() else None


def load_trained(run: RunDir, recipe: Recipe, model, training: dict[str, Any]) -> TrainResult:
    """The model a finished training saved (adapter on the given base model, or the full model folder)."""
    if recipe.method.type == "lora":
        from peft import PeftModel

        trained = PeftModel.from_pretrained(model, str(run.adapter))
    else:
        from transformers import AutoModelForCausalLM

        trained = AutoModelForCausalLM.from_pretrained(run.merged, dtype=model.dtype)
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
