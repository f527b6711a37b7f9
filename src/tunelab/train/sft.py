"""Supervised fine-tuning: conversations → tokenized examples with trained tokens marked → TRL's SFTTrainer with
tunelab's loss and collator. Evaluated by generating answers for the test set. Bookkeeping is train/fit.py's."""

from __future__ import annotations

from tunelab.config.schema import Recipe
from tunelab.data.pipeline import RecipeData, Splits, build_splits
from tunelab.runs import RunDir
from tunelab.train.args import build_training_args
from tunelab.train.callbacks import use_concise_progress
from tunelab.train.packing import packing_collator
from tunelab.train.stage import Stage


def sft_config_class() -> type:
    from trl import SFTConfig

    return SFTConfig


def build_datasets(recipe_data: RecipeData, recipe: Recipe, tokenizer, clusters) -> Splits:
    return build_splits(recipe_data, recipe.data, tokenizer, recipe.seed, clusters, recipe.eval.limit)


def build_trainer(recipe: Recipe, run: RunDir, model, tokenizer, splits: Splits, plan, callbacks):
    """TRL's trainer with tunelab's settings, collator, loss and progress lines."""
    from tunelab.train.trainer import TunelabSFTTrainer

    args = build_training_args(
        sft_config_class(),
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


def evaluate(
    model, tokenizer, records: list[dict], recipe: Recipe, eval_dir, label: str, extra_scores=None
) -> dict[str, float]:
    """Greedy answers for the test records, scored with the recipe's metrics (predictions and report in eval_dir);
    `extra_scores` as in eval.heldout.evaluate_model."""
    from tunelab.eval.heldout import evaluate_model
    from tunelab.eval.metrics import load_json_schema
    from tunelab.runs import write_json

    schema = load_json_schema(recipe.eval.json_schema) if recipe.eval.json_schema else None
    report = evaluate_model(
        model,
        tokenizer,
        records,
        eval_dir / f"predictions_{label}.jsonl",
        recipe.eval.metrics,
        max_new_tokens=recipe.eval.max_new_tokens,
        batch_size=recipe.eval.batch_size,
        label=label,
        schema_validator=schema,
        extra_scores=extra_scores,
    )
    write_json(eval_dir / f"report_{label}.json", report)
    return report["metrics"]


def test_warnings(records: list[dict], tokenizer, recipe: Recipe) -> list[str]:
    """References longer than eval.max_new_tokens would be cut off and scored as failures."""
    from tunelab.eval.lengths import reference_length_warning

    warning = reference_length_warning(records, tokenizer, recipe.eval.max_new_tokens)
    return [warning] if warning else []


SFT = Stage(
    name="sft",
    reads="messages",
    produces="policy",
    summary="supervised fine-tuning on conversations: the loss on the assistant's tokens",
    config_class=sft_config_class,
    build_datasets=build_datasets,
    build_trainer=build_trainer,
    evaluate=evaluate,
    test_warnings=test_warnings,
    packs_sequences=True,
    prompted_baselines=True,
)
