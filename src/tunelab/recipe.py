"""A recipe with every check: the schema, files and combinations (config/), the stage's trainer settings (train/),
the registry's datasets (data/), the evaluation's schema file and forgetting task (eval/), what the method can
export (model/). This is the `load_recipe` the CLI, the web UI and the workflow use."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from tunelab.config import load as config_load
from tunelab.config.load import Checks, Problem
from tunelab.config.schema import Recipe
from tunelab.config.train_args import check_train_section
from tunelab.errors import DataError, RecipeError, TunelabError


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Read, override and validate a recipe file; relative paths are resolved against the recipe's folder."""
    return config_load.load_recipe(path, overrides, checks=CHECKS)


def validate_recipe(raw: dict[str, Any], source: str, base_dir: Path) -> Recipe:
    """Validate a recipe mapping (the web UI's form) as `load_recipe` validates a file."""
    return config_load.validate_recipe(raw, source, base_dir, checks=CHECKS)


def _stage_config_class(stage_name: Any) -> type:
    from tunelab.train.stages import STAGES, get_stage

    known = isinstance(stage_name, str) and stage_name in STAGES  # a raw mapping may hold anything there
    return get_stage(stage_name if known else "sft").config_class()


def _raw_train_problems(raw: dict[str, Any]) -> list[Problem]:
    """The train section checked beside schema problems (the stage falls back to sft when its own name is wrong)."""
    train = raw.get("train")
    return check_train_section(train, _stage_config_class(raw.get("stage"))) if isinstance(train, dict) else []


def _recipe_problems(recipe: Recipe) -> list[Problem]:
    train = check_train_section(recipe.train, _stage_config_class(recipe.stage)) + _fixed_train_problems(recipe)
    checks = _registry_problems(recipe) + _eval_problems(recipe) + _export_problems(recipe) + _reward_problems(recipe)
    return checks + train


def _reward_problems(recipe: Recipe) -> list[Problem]:
    """An RL stage needs rewards and nothing else takes them; each reward's own settings are checked here too."""
    from tunelab.config.schema import RL_STAGES

    if recipe.stage not in RL_STAGES:
        if recipe.reward:
            return [("reward", f"stage {recipe.stage} does not use rewards (only {', '.join(RL_STAGES)}); remove it")]
        return []
    problems: list[Problem] = []
    if not recipe.reward:
        problems.append(("reward", f"stage {recipe.stage} scores its samples with rewards; add a list, e.g. "
                                   "reward: [{type: json_valid}, {type: field_accuracy}]"))  # fmt: skip
    if "reward_weights" in recipe.train:
        problems.append(("train.reward_weights", "set `weight:` on each entry of reward: instead"))
    if recipe.stage == "ppo" and recipe.method.type != "lora":
        why = "the reference is the adapter disabled, the value model a second adapter on the same base"
        problems.append(("method.type", f"stage ppo trains a LoRA policy ({why}); use method.type: lora"))
    if recipe.stage == "ppo" and recipe.train.get("gradient_accumulation_steps", 1) != 1:
        fix = "remove it and set num_mini_batches (and the batch size) instead"
        problems.append(("train.gradient_accumulation_steps",
                         f"stage ppo takes one optimizer step per minibatch of each rollout batch; {fix}"))  # fmt: skip
    if recipe.stage == "ppo":
        problems += _ppo_batch_problems(recipe.train)
    for index, reward in enumerate(recipe.reward):
        problem = _one_reward_problem(reward)
        if problem:
            problems.append((f"reward[{index}]", problem))
    return problems


def _ppo_batch_problems(train: dict[str, Any]) -> list[Problem]:
    """PPO's counts are whole numbers from 1, and a rollout batch has a prompt for every minibatch."""
    problems: list[Problem] = []
    for key in ("num_generations", "num_ppo_epochs", "num_mini_batches", "per_device_train_batch_size"):
        value = train.get(key, 1)
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            problems.append((f"train.{key}", f"must be 1 or more, got {value}"))
    prompts, minibatches = train.get("per_device_train_batch_size", 8), train.get("num_mini_batches", 1)
    if isinstance(prompts, int) and isinstance(minibatches, int) and 1 <= prompts < minibatches:
        problems.append(("train.num_mini_batches", f"{minibatches} minibatches of a rollout batch of {prompts} prompts "
                         f"(per_device_train_batch_size; a prompt's answers share one minibatch); use at most "
                         f"{prompts} or raise the batch size"))  # fmt: skip
    return problems


def _one_reward_problem(reward) -> str | None:
    import re

    if reward.type == "json_schema" and Path(reward.json_schema).is_file():
        from tunelab.eval.metrics import load_json_schema

        try:
            load_json_schema(reward.json_schema)
        except TunelabError as error:
            return str(error)
    if reward.type == "regex":
        try:
            re.compile(reward.pattern)
        except re.error as error:
            return f"pattern {reward.pattern!r} is not a regular expression: {error}"
    if reward.type == "reward_model":
        from tunelab.model.reward import is_reward_model

        if not Path(reward.run).exists():
            return f"run: not found: {reward.run}"
        if not is_reward_model(reward.run):
            return f"run: {reward.run} is not a reward model (a run of stage: rm, or a folder with a scalar head)"
    if reward.type == "python" and ":" not in reward.function:
        return f"function: write it as path/to/file.py:function_name, got {reward.function!r}"
    return None


def _fixed_train_problems(recipe: Recipe) -> list[Problem]:
    """A train setting that contradicts what the stage is (simpo is CPO with loss_type simpo) is refused, not
    silently overridden."""
    from tunelab.train.stages import get_stage

    problems: list[Problem] = []
    for key, value in get_stage(recipe.stage).fixed_train.items():
        if key in recipe.train and recipe.train[key] != value:
            other = " (stage cpo takes the other loss types)" if key == "loss_type" else ""
            problems.append(
                (f"train.{key}", f"stage {recipe.stage} always uses {key}: {value}; remove train.{key}{other}")
            )
    return problems


def _registry_problems(recipe: Recipe) -> list[Problem]:
    """Unknown dataset names and missing data files in a LLaMA-Factory registry, found before anything runs."""
    data = recipe.data
    if not (data.registry and data.datasets and Path(data.registry).is_file()):
        return []
    from tunelab.data.registry import registry_entries

    try:
        registry_entries(data.registry, data.datasets)
    except DataError as error:
        return [("data.datasets", str(error).replace("\n", " "))]
    return []


def _eval_problems(recipe: Recipe) -> list[Problem]:
    """The JSON schema parses and is a schema; the forgetting benchmark can be found."""
    problems: list[Problem] = []
    schema = recipe.eval.json_schema
    if schema is not None:
        from tunelab.eval.metrics import load_json_schema

        try:
            load_json_schema(schema)
        except TunelabError as error:
            problems.append(("eval.json_schema", str(error)))
    if "json_schema" in recipe.eval.metrics and schema is None:
        problems.append(("eval.metrics", "json_schema needs a schema file: set eval.json_schema"))
    forgetting = recipe.eval.forgetting
    if forgetting.enabled:
        from tunelab.eval.tasks import check_task

        problem = check_task(forgetting.task, forgetting.data)
        if problem:
            problems.append(("eval.forgetting", problem))
    return problems


def _export_problems(recipe: Recipe) -> list[Problem]:
    from tunelab.model.methods import method_spec

    spec = method_spec(recipe.method)
    if recipe.export.merge and not spec.can_merge and "merge" in recipe.export.model_fields_set:
        return [("export.merge", f"method {spec.name}: {spec.no_merge}; remove export.merge or set it to false")]
    return []


def _trainer_config_problems(recipe: Recipe) -> list[Problem]:
    """Construct the stage's TRL config once, so that inconsistent train settings fail here, not mid-run."""
    from tunelab.train.args import build_training_args

    has_validation = recipe.data.validation is not None
    with tempfile.TemporaryDirectory() as scratch:
        try:
            build_training_args(_stage_config_class(recipe.stage), recipe.train, scratch, recipe.seed, has_validation)
        except RecipeError as error:
            return list(error.problems)
    return []


CHECKS = Checks(raw=_raw_train_problems, recipe=_recipe_problems, final=_trainer_config_problems)
