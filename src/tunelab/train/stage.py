"""The shape every training stage has: the few hooks in which one stage differs from another (train/stages.py
holds the registry of stages and explains how to add one)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class Stage:
    name: str
    reads: Literal["messages", "preference", "unpaired", "prompts"]  # the record kind its data must hold
    produces: Literal["policy", "reward_model"]  # a model that generates, or one that scores
    summary: str
    config_class: Callable[[], type]  # the TRL config class its `train:` section is checked against and built into
    build_datasets: Callable[..., Any]  # (recipe_data, recipe, tokenizer, clusters) → data.pipeline.Splits
    build_trainer: Callable[..., Any]  # (recipe, run, model, tokenizer, splits, plan, callbacks) → a Trainer
    evaluate: Callable[..., dict[str, float]]  # (model, tokenizer, records, recipe, eval_dir, label) → metrics
    test_warnings: Callable[..., list[str]]  # (test records, tokenizer, recipe) → what to say before evaluating
    prompted_baselines: bool = False  # its evaluation generates answers to conversations (eval/prompted.py applies)
    packs_sequences: bool = False  # its trainer takes tunelab's padding-free packed batches (per-sequence attention)
    prepare_model: Callable[[Any], Any] = lambda model: model  # the loaded causal LM → the model this stage trains
    describe: Callable[[Any, Any], dict[str, Any]] = lambda recipe, model: {}  # (recipe, model) → for training.json
    fixed_train: dict[str, Any] = field(default_factory=dict)  # train settings the stage is defined by (simpo's loss)


def trainer_stage(name: str, summary: str, classes: Callable[[], tuple[type, type]], **hooks: Any) -> Stage:
    """A stage around a TRL trainer: `classes()` → (trainer class, config class); it produces a policy unless `hooks`
    (the other Stage fields) say otherwise."""
    return Stage(**({"name": name, "summary": summary, "produces": "policy", "config_class": lambda: classes()[1]}
                    | hooks))  # fmt: skip
