"""Supervised fine-tuning: data → model → TRL SFTTrainer → train → save. Bookkeeping lives in callbacks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunelab.config.schema import Recipe
from tunelab.config.train_args import build_sft_config
from tunelab.data.pipeline import Splits
from tunelab.model.adapters import apply_method, count_parameters
from tunelab.runs import RunDir
from tunelab.train.callbacks import GracefulStop, standard_callbacks, use_concise_progress


@dataclass
class TrainResult:
    model: Any
    interrupted: bool
    global_step: int
    best_checkpoint: str | None
    parameters: dict[str, int]


def run_sft(recipe: Recipe, run: RunDir, model, tokenizer, splits: Splits, resume: bool = False) -> TrainResult:
    from transformers import set_seed
    from trl import SFTTrainer

    set_seed(recipe.seed)  # adapter initialisation is random too
    model = apply_method(model, recipe.method)
    args = build_sft_config(
        recipe.train,
        str(run.checkpoints),
        recipe.seed,
        has_validation=splits.validation is not None,
        include_num_input_tokens_seen="non_padding",
    )
    callbacks = standard_callbacks(run, recipe.train)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=splits.train,
        eval_dataset=splits.validation,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    use_concise_progress(trainer)
    checkpoint = run.last_checkpoint() if resume else None
    if checkpoint is not None:
        run.truncate_metrics_after(int(checkpoint.name.split("-")[-1]))
    stopper = next(c for c in callbacks if isinstance(c, GracefulStop))
    stopper.install()
    try:
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    finally:
        stopper.uninstall()
    # accelerate wraps forward() in bf16 autocast for mixed precision; unwrap so the returned model (evaluated and
    # compared with the merged export) computes in full precision like the saved weights.
    model = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    model.eval()
    save_trained(model, tokenizer, run, recipe)
    return TrainResult(
        model=model,
        interrupted=stopper.requested,
        global_step=trainer.state.global_step,
        best_checkpoint=trainer.state.best_model_checkpoint,
        parameters=count_parameters(trainer.model),
    )


def save_trained(model, tokenizer, run: RunDir, recipe: Recipe) -> None:
    """LoRA → adapter/ (PEFT format); full and freeze → merged/ (a complete model folder)."""
    target = run.adapter if recipe.method.type == "lora" else run.merged
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    if recipe.method.type != "lora":
        model.generation_config.save_pretrained(target)
