"""Supervised fine-tuning: data → model → TRL SFTTrainer → train → save. Bookkeeping lives in callbacks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunelab.config.schema import Recipe
from tunelab.config.train_args import build_sft_config
from tunelab.data.pipeline import Splits
from tunelab.model.adapters import apply_method, count_parameters
from tunelab.runs import RunDir, write_json
from tunelab.train.callbacks import GracefulStop, standard_callbacks, use_concise_progress
from tunelab.train.packing import packing_collator, restore_attention, use_packed_attention
from tunelab.train.speed import apply_threads, plan_speed
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
    args = build_sft_config(
        recipe.train,
        str(run.checkpoints),
        recipe.seed,
        has_validation=splits.validation is not None,
        plan=plan,
        include_num_input_tokens_seen="non_padding",
    )
    write_json(run.path / "training.json", plan.as_dict())
    callbacks = standard_callbacks(run, recipe.train)
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
    checkpoint = run.last_checkpoint() if resume else None
    if checkpoint is not None:
        run.truncate_metrics_after(int(checkpoint.name.split("-")[-1]))
    stopper = next(c for c in callbacks if isinstance(c, GracefulStop))
    stopper.install()
    try:
        output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    finally:
        stopper.uninstall()
    seconds, tokens = float(output.metrics.get("train_runtime", 0.0)), int(trainer.state.num_input_tokens_seen)
    write_json(run.path / "training.json", plan.as_dict() | {"train_seconds": seconds, "tokens_seen": tokens,
               "real_tokens_per_second": tokens / seconds if seconds else None})  # fmt: skip
    # accelerate wraps forward() in bf16 autocast for mixed precision; unwrap so the returned model (evaluated and
    # compared with the merged export) computes in full precision like the saved weights.
    model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    restore_attention(model.get_base_model() if hasattr(model, "get_base_model") else model)
    model.eval()
    save_trained(model, tokenizer, run, recipe)
    return TrainResult(
        model=model,
        interrupted=stopper.requested,
        global_step=trainer.state.global_step,
        best_checkpoint=trainer.state.best_model_checkpoint,
        parameters=count_parameters(trainer.model),
        train_seconds=seconds,
        tokens_seen=tokens,
    )


def save_trained(model, tokenizer, run: RunDir, recipe: Recipe) -> None:
    """LoRA → adapter/ (PEFT format); full and freeze → merged/ (a complete model folder)."""
    target = run.adapter if recipe.method.type == "lora" else run.merged
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    if recipe.method.type != "lora":
        model.generation_config.save_pretrained(target)
