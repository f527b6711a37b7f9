"""Load a recipe: YAML file → dotted overrides → strict schema → file and combination checks.

Every problem is collected and reported at once as a `RecipeError`, each with its YAML path and a hint. What only a
higher layer can check (the stage's trainer settings, a registry's datasets, an evaluation task) comes in as
`Checks`; `tunelab.recipe.load_recipe` passes all of them, and is what the CLI, the UI and the workflow call.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from tunelab.config.schema import Recipe, method_sections, reward_sections
from tunelab.config.train_args import SCORE_HEADS
from tunelab.errors import RecipeError

Problem = tuple[str, str]


def _no_problems(_: Any) -> list[Problem]:
    return []


@dataclass(frozen=True)
class Checks:
    """Checks a higher layer adds: on the raw mapping (reported beside schema problems), on the validated recipe
    (beside file and combination problems), and last, once everything else is clean (building the trainer's config)."""

    raw: Callable[[dict[str, Any]], list[Problem]] = _no_problems
    recipe: Callable[[Recipe], list[Problem]] = _no_problems
    final: Callable[[Recipe], list[Problem]] = _no_problems


class RecipeLoader(yaml.SafeLoader):
    """YAML 1.1 reads `2e-4` (no dot) as a string; recipes are full of learning rates written that way."""


RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=RecipeLoader)  # noqa: S506 - a SafeLoader subclass


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = (), checks: Checks = Checks()) -> Recipe:
    """Read, override and validate a recipe; relative data paths are resolved against the recipe's folder."""
    path = Path(path)
    raw = without_bookkeeping(read_yaml(path))
    apply_overrides(raw, overrides, source=str(path))
    return validate_recipe(raw, source=str(path), base_dir=path.resolve().parent, checks=checks)


BOOKKEEPING_KEYS = ("_versions", "_created")  # what a run adds to the recipe.yaml it saves


def without_bookkeeping(raw: dict[str, Any]) -> dict[str, Any]:
    """A run's saved recipe (runs/<name>/recipe.yaml) runs again as it is: its bookkeeping keys are not settings."""
    return {key: value for key, value in raw.items() if key not in BOOKKEEPING_KEYS}


def read_yaml(path: Path) -> dict[str, Any]:
    source = str(path)
    if not path.is_file():
        raise RecipeError(source, [("", f"file not found: {path.resolve()}")])
    try:
        raw = parse_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise RecipeError(source, [("", "not UTF-8 text; save the recipe as UTF-8")]) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error)
        raise RecipeError(source, [(where, f"YAML syntax error: {problem}")]) from None
    if raw is None:
        raise RecipeError(source, [("", "the recipe is empty; see examples/quickstart/recipe.yaml")])
    if not isinstance(raw, dict):
        raise RecipeError(source, [("", f"expected a mapping of sections at the top level, got {type(raw).__name__}")])
    return raw


def apply_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...], source: str) -> None:
    """Apply `a.b.c=value` overrides in place; values are parsed as YAML (`8` is an int, `null` is None)."""
    problems: list[Problem] = []
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            problems.append((item, "an override must look like section.key=value, e.g. train.max_steps=20"))
            continue
        try:
            value = parse_yaml(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        problem = _set_dotted(raw, key.strip().split("."), value)
        if problem:
            problems.append((key.strip(), problem))
    if problems:
        raise RecipeError(f"{source} (overrides)", problems)


def _set_dotted(node: Any, parts: list[str], value: Any) -> str | None:
    for depth, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                return f"'{part}' is not an index of the list at {'.'.join(parts[:depth])}"
            node = node[int(part)]
            continue
        if not isinstance(node, dict):
            return f"{'.'.join(parts[:depth])} is not a section"
        node = node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            return f"'{last}' is not an index of the list"
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        return f"{'.'.join(parts[:-1])} is not a section"
    return None


def validate_recipe(raw: dict[str, Any], source: str, base_dir: Path, checks: Checks = Checks()) -> Recipe:
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as error:
        problems = [_describe(e, Recipe) for e in error.errors()]
        raise RecipeError(source, problems + checks.raw(raw) + _raw_file_problems(raw, base_dir)) from None
    _resolve_paths(recipe, base_dir)
    problems = check_files(recipe) + check_combinations(recipe) + continual_problems(recipe) + checks.recipe(recipe)
    if problems:
        raise RecipeError(source, problems)
    problems = checks.final(recipe)
    if problems:
        raise RecipeError(source, problems)
    return recipe


def _raw_file_problems(raw: dict[str, Any], base_dir: Path) -> list[Problem]:
    """Missing data files, checked on the raw mapping so they are reported alongside schema problems."""
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    named: list[tuple[str, Any]] = [("data.registry", data.get("registry")), ("data.test", data.get("test"))]
    evaluation = raw.get("eval") if isinstance(raw.get("eval"), dict) else {}
    named.append(("eval.json_schema", evaluation.get("json_schema")))
    if isinstance(data.get("validation"), str):
        named.append(("data.validation", data["validation"]))
    sources = data.get("sources") if isinstance(data.get("sources"), list) else []
    named += [(f"data.sources[{i}].path", s.get("path")) for i, s in enumerate(sources) if isinstance(s, dict)]
    rewards = raw.get("reward") if isinstance(raw.get("reward"), list) else []
    named += [(f"reward[{i}].json_schema", r.get("json_schema")) for i, r in enumerate(rewards) if isinstance(r, dict)]
    problems = []
    for where, value in named:
        if isinstance(value, str) and not (base_dir / Path(value).expanduser()).is_file():
            problems.append((where, f"file not found: {(base_dir / Path(value).expanduser()).resolve()}"))
    return problems


def _describe(error: dict[str, Any], schema: type[BaseModel]) -> Problem:
    loc = error["loc"]
    where = ".".join(str(part) for index, part in enumerate(loc) if _union_sections(loc, index) is None)
    kind = error["type"]
    if kind == "extra_forbidden":
        return where, "unknown key" + _did_you_mean(error["loc"], schema)
    if kind == "missing":
        return where, "required key is missing"
    if kind == "union_tag_invalid":
        sections = reward_sections() if error["loc"][0] == "reward" else method_sections()
        got = error.get("input", {}).get("type")
        return f"{where or 'method'}.type", f"unknown choice {got!r}; choose {_choices(sections)}"
    got = error.get("input")
    shown = f"{got!r}" if not isinstance(got, dict | list) else type(got).__name__
    return where, f"{error['msg']}, got {shown}"


def _choices(names) -> str:
    names = list(names)
    return ", ".join(names[:-1]) + f" or {names[-1]}" if len(names) > 1 else "".join(names)


def _union_sections(loc: tuple[Any, ...], index: int) -> dict[str, type[BaseModel]] | None:
    """The union's sections when loc[index] is pydantic's tag for the branch taken (method.<lora>.r,
    reward.0.<regex>.pattern), else None."""
    part = loc[index]
    if loc[:1] == ("method",) and index == 1 and part in method_sections():
        return method_sections()
    if loc[:1] == ("reward",) and index == 2 and part in reward_sections():
        return reward_sections()
    return None


def _did_you_mean(loc: tuple[Any, ...], schema: type[BaseModel]) -> str:
    model: Any = schema
    for index, part in enumerate(loc[:-1]):
        sections = _union_sections(loc, index)
        if sections is not None:
            model = sections[part]
            continue
        field = getattr(model, "model_fields", {}).get(part)
        annotation = getattr(field, "annotation", None)
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else model
        if field is not None and _list_item_model(annotation):
            model = _list_item_model(annotation)
    names = list(getattr(model, "model_fields", {}))
    close = difflib.get_close_matches(str(loc[-1]), names, n=1)
    return f" (did you mean {close[0]}?)" if close else (f"; allowed: {', '.join(names)}" if names else "")


def _list_item_model(annotation: Any) -> Any:
    args = getattr(annotation, "__args__", ())
    return args[0] if len(args) == 1 and isinstance(args[0], type) and issubclass(args[0], BaseModel) else None


def _resolve_paths(recipe: Recipe, base_dir: Path) -> None:
    def resolve(value: str | None) -> str | None:
        if value is None:
            return None
        path = Path(value).expanduser()
        return str(path if path.is_absolute() else (base_dir / path).resolve())

    for source in recipe.data.sources:
        source.path = resolve(source.path)
    recipe.data.registry = resolve(recipe.data.registry)
    recipe.data.contamination_against = [resolve(p) for p in recipe.data.contamination_against]
    recipe.data.test = resolve(recipe.data.test)
    if isinstance(recipe.data.validation, str):
        recipe.data.validation = resolve(recipe.data.validation)
    recipe.eval.json_schema = resolve(recipe.eval.json_schema)
    if recipe.continue_from:  # a run folder: as the command line names it (from here), else beside the recipe
        named = Path(recipe.continue_from).expanduser()
        recipe.continue_from = str(named.resolve() if named.exists() or named.is_absolute() else resolve(str(named)))
    for reward in recipe.reward:
        _resolve_reward_paths(reward, resolve)
    recipe.eval.forgetting.data = resolve(recipe.eval.forgetting.data)
    if Path(recipe.eval.forgetting.task).suffix or "/" in recipe.eval.forgetting.task:
        recipe.eval.forgetting.task = resolve(recipe.eval.forgetting.task)


def _resolve_reward_paths(reward: Any, resolve: Callable[[str | None], str | None]) -> None:
    if reward.type == "json_schema":
        reward.json_schema = resolve(reward.json_schema)
    elif reward.type == "reward_model":
        reward.run = resolve(reward.run)
    elif reward.type == "python" and ":" in reward.function:
        path, _, name = reward.function.rpartition(":")
        reward.function = f"{resolve(path)}:{name}"


def check_files(recipe: Recipe) -> list[Problem]:
    problems: list[Problem] = []
    for index, source in enumerate(recipe.data.sources):
        if not Path(source.path).is_file():
            problems.append((f"data.sources[{index}].path", f"file not found: {source.path}"))
    named = {"data.registry": recipe.data.registry, "data.test": recipe.data.test}
    if isinstance(recipe.data.validation, str):
        named["data.validation"] = recipe.data.validation
    for index, path in enumerate(recipe.data.contamination_against):
        if not Path(path).exists():
            problems.append((f"data.contamination_against[{index}]", f"not found: {path}"))
    for index, reward in enumerate(recipe.reward):
        if reward.type in REWARD_FILES:
            key = REWARD_FILES[reward.type]
            named[f"reward[{index}].{key}"] = getattr(reward, key).rpartition(":")[0] or getattr(reward, key)
    for where, value in named.items():
        if value is not None and not Path(value).is_file():
            problems.append((where, f"file not found: {value}"))
    return problems


def continual_problems(recipe: Recipe) -> list[Problem]:
    """`continue_from`: a finished SFT run, trained from the recipe's model; it becomes the model the run starts
    from (model.name is set to it). `data.replay` needs it."""
    if not recipe.continue_from:
        return [("data.replay", "replays the previous run's data: set continue_from (or --continue-from runs/<run>)")
                ] if recipe.data.replay else []  # fmt: skip
    from tunelab.runs import RunDir, read_json

    run = Path(recipe.continue_from)
    if not RunDir.is_run(run):
        return [("continue_from", f"{run} is not a tunelab run directory (it has no recipe.yaml)")]
    previous = RunDir(run).read_recipe()
    state = (read_json(run / "status.json") or {}).get("state")
    if state != "completed":
        return [("continue_from", f"{run} is {state or 'not started'}, not completed: finish it first "
                 f"(tunelab run {run / 'recipe.yaml'} --resume)")]  # fmt: skip
    if recipe.stage != "sft" or previous.get("stage", "sft") != "sft":
        return [("continue_from", "continual training continues an sft run with an sft run")]
    start = str(previous.get("model", {}).get("name"))
    named = recipe.model.name if "name" in recipe.model.model_fields_set else None
    if named not in (None, start, str(run)) and Path(named).resolve() != run:
        return [("model.name", f"{run} was trained from {start}, not {named}: leave model.name out (the run "
                 "starts from the previous run's trained model)")]  # fmt: skip
    recipe.model.name = str(run)
    return []


# reward type → its key naming a file it reads (a schema; a Python module, before ":function"), checked like data files
REWARD_FILES = {"json_schema": "json_schema", "python": "function"}


def _score_head_problems(recipe: Recipe) -> list[Problem]:
    head = recipe.train.get("score_head")
    if head is not None and recipe.stage != "rm":
        return [("train.score_head", f"a reward model's head (stage: rm); stage {recipe.stage} has none: remove it")]
    if isinstance(head, str) and head not in SCORE_HEADS:
        return [("train.score_head", f"{head!r} is not a choice: random (a new head) or probe (fitted first)")]
    return []


def check_combinations(recipe: Recipe) -> list[Problem]:
    data, problems = recipe.data, []
    if not data.sources and not data.datasets:
        problems.append(("data", "no training data: add data.sources (files) or data.registry + data.datasets"))
    if data.datasets and not data.registry:
        problems.append(("data.datasets", "names a registry's datasets but data.registry is not set"))
    ratios = [source.ratio for source in data.sources]
    if any(r is not None for r in ratios):
        if None in ratios or data.datasets:
            problems.append(("data.sources", "give every source a ratio (registry datasets cannot be mixed by ratio)"))
        elif abs(sum(ratios) - 1) > 1e-6:
            problems.append(("data.sources", f"ratios must sum to 1, they sum to {sum(ratios):g}"))
    if data.registry and not data.datasets:
        problems.append(("data.datasets", "data.registry is set; list the dataset names to use from it"))
    patience = recipe.train.get("early_stopping_patience")
    if patience is not None and data.validation is None:
        problems.append(("train.early_stopping_patience", "early stopping needs validation data; set data.validation"))
    if recipe.train.get("load_best_model_at_end") and data.validation is None:
        problems.append(("train.load_best_model_at_end", "needs validation data; set data.validation"))
    problems += _score_head_problems(recipe)
    if data.test is None and recipe.eval.base and "base" in recipe.eval.model_fields_set:
        problems.append(("eval.base", "base evaluation needs a test set; set data.test"))
    return problems
