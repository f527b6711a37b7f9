"""What the preference stages (dpo, kto, orpo, cpo, simpo) share: a TRL trainer built from the stage's config class
with tunelab's settings, the reference model each uses (said in training.json), and their evaluation on held-out
pairs — the starting model's and the tuned model's preference for the chosen answer (log-likelihood), beside the
"longer answer wins" rule, plus the generation metrics of SFT on the prompts with the chosen answer as reference.

Each stage's module (train/dpo.py, ...) names its trainer and config and builds its `Stage` from these pieces.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunelab.config.schema import Recipe
from tunelab.data.kinds import as_conversations, prompt_key
from tunelab.data.pipeline import Splits
from tunelab.runs import RunDir, read_json, write_json
from tunelab.train.args import build_training_args
from tunelab.train.callbacks import use_concise_progress
from tunelab.train.pairs import build_preference_splits
from tunelab.train.stage import Stage, trainer_stage


def experimental(import_trainer: Callable[[], tuple[type, type]]) -> Callable[[], tuple[type, type]]:
    """TRL's experimental trainers (ORPO, CPO) warn on import; tunelab pins the TRL minor it tested them with."""

    def load() -> tuple[type, type]:
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
        return import_trainer()

    return load


def build_preference_trainer(classes: Callable[[], tuple[type, type]], defaults=None, forced=None, speed_up=None):
    """A `Stage.build_trainer` for a TRL preference trainer: (trainer class, config class) from `classes`; `defaults`
    under the recipe's train section, `forced` over it; `speed_up(trainer)` when the speed plan packs sequences."""

    def build(recipe: Recipe, run: RunDir, model, tokenizer, splits: Splits, plan, callbacks):
        trainer_class, config_class = classes()
        train = (defaults or {}) | recipe.train
        args = build_training_args(
            config_class, train, str(run.checkpoints), recipe.seed, has_validation=splits.validation is not None,
            plan=plan, include_num_input_tokens_seen="non_padding", max_length=recipe.data.max_length,
            run_name=recipe.train.get("run_name") or recipe.name, **(forced or {}),
        )  # fmt: skip
        trainer = trainer_class(model=model, args=args, train_dataset=splits.train, eval_dataset=splits.validation,
                                processing_class=tokenizer, callbacks=callbacks)  # fmt: skip
        drop_reference_adapter(trainer)
        if speed_up is not None and plan.padding_free:
            speed_up(trainer)
        use_concise_progress(trainer)
        return trainer

    return build


def drop_reference_adapter(trainer) -> None:
    """TRL copies a LoRA policy's adapter as a frozen "ref" adapter. tunelab's adapter is freshly initialised (a no-op
    until trained), so the reference is the starting model: the adapter disabled, which TRL uses when no "ref" adapter
    exists. Dropping the copy saves its memory and its forward passes."""
    model = trainer.model
    if hasattr(model, "peft_config") and "ref" in model.peft_config:
        model.delete_adapter("ref")
        model.set_adapter("default")


def reference_description(recipe: Recipe, model) -> dict[str, Any]:
    """Which reference model the loss compares with, for training.json."""
    if recipe.train.get("precompute_ref_log_probs"):
        return {"reference": "the starting model's log-probabilities, computed once before training"}
    if hasattr(model, "peft_config"):
        return {"reference": "the starting model: the policy with its adapter disabled (no second copy in memory)"}
    return {"reference": "a frozen copy of the starting model"}


def preference_test_warnings(records: list[dict], tokenizer, recipe: Recipe) -> list[str]:
    """As for SFT, on the chosen answers: references longer than eval.max_new_tokens would be cut off."""
    from tunelab.train.sft import test_warnings

    return test_warnings(as_conversations(records), tokenizer, recipe)


def evaluate_preference(model, tokenizer, records: list[dict], recipe: Recipe, eval_dir: Path, label: str,
                        implicit_reward: bool = False) -> dict:  # fmt: skip
    """Generation metrics on the pairs' distinct prompts (the chosen answer as reference) and the model's preference
    for the chosen answer, in one predictions row per prompt (its pairs' shares: pairs sharing a prompt are resampled
    together), so that base and tuned are compared with the paired intervals. With `implicit_reward` (stages trained
    against a reference: dpo, kto), the tuned adapter model is also scored by its implicit reward, log π − log π_ref
    with π_ref the adapter disabled: the quantity the loss trained (a full fine-tune keeps no reference to do so)."""
    from tunelab.eval.preference import implicit_reward_scorer, log_likelihood_scorer, score_pairs
    from tunelab.jsonl import read_jsonl, write_jsonl
    from tunelab.train.sft import evaluate as evaluate_generation

    conversations = as_conversations(records)
    evaluate_generation(model, tokenizer, conversations, recipe, eval_dir, label)
    scored = score_pairs(records, log_likelihood_scorer(model, tokenizer))
    if implicit_reward and label == "tuned" and hasattr(model, "disable_adapter"):
        for row, implicit in zip(scored, score_pairs(records, implicit_reward_scorer(model, tokenizer)), strict=True):
            row["scores"]["implicit_reward_accuracy"] = implicit["scores"]["pair_accuracy"]
            row["implicit_margin"] = implicit["margin"]
    by_prompt: dict[str, list[dict]] = {}
    for record, row in zip(records, scored, strict=True):
        by_prompt.setdefault(prompt_key(record), []).append(row)
    first_id = {str(conversation["id"]): key for conversation, key in zip(conversations, by_prompt, strict=True)}
    path = eval_dir / f"predictions_{label}.jsonl"
    rows = read_jsonl(path)
    for row in rows:
        pairs = by_prompt[first_id[str(row["id"])]]
        row["scores"] |= {name: sum(p["scores"][name] for p in pairs) / len(pairs) for name in pairs[0]["scores"]}
        row["pair_margins"] = [p["margin"] for p in pairs]
        if "implicit_margin" in pairs[0]:
            row["implicit_margins"] = [p["implicit_margin"] for p in pairs]
    write_jsonl(path, rows)
    return _rewrite_report(eval_dir / f"report_{label}.json", rows)


def _rewrite_report(path: Path, rows: list[dict]) -> dict[str, float]:
    """The stage's report with its metrics recomputed from the rows that now hold the pair scores too, and the mean
    implicit-reward margin (in nats, so beside the metrics, not among them) when there is one."""
    from tunelab.eval.metrics import aggregate, aggregate_by_category

    report = read_json(path, {})
    scores = [row["scores"] for row in rows]
    report["metrics"] = aggregate(scores)
    report["by_category"] = aggregate_by_category(scores, [row.get("category") for row in rows])
    margins = [margin for row in rows for margin in row.get("implicit_margins", [])]
    if margins:
        report["mean_implicit_margin"] = sum(margins) / len(margins)
    write_json(path, report)
    return report["metrics"]


def policy_stage(
    name: str, summary: str, classes, describe=None, defaults=None, forced=None, speed_up=None, **hooks
) -> Stage:
    """A preference stage that trains a policy on pairs with TRL's `classes()` → (trainer, config); `hooks` replace
    the defaults below (another record kind, evaluation, what it produces)."""
    no_reference = {"reference": f"none ({name} needs no reference model)"}
    standard = {
        "reads": "preference", "build_datasets": build_preference_splits, "evaluate": evaluate_preference,
        "build_trainer": build_preference_trainer(classes, defaults, forced, speed_up),
        "test_warnings": preference_test_warnings, "describe": describe or (lambda recipe, model: no_reference),
        "fixed_train": dict(forced or {}),
    }  # fmt: skip
    return trainer_stage(name, summary, classes, **(standard | hooks))
