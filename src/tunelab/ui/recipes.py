"""The Train form's recipe: form values → a recipe mapping with every path checked and made absolute inside the
workspace → the same validation as `tunelab validate`; saving and loading recipe files in `recipes/`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tunelab.errors import RecipeError
from tunelab.ui.schema_form import FieldSpec, recipe_to_values, values_to_recipe
from tunelab.ui.workspace import UIError, Workspace

PATH_FIELDS = ("data.registry", "data.test", "eval.json_schema", "eval.forgetting.data")
Problem = tuple[str, str]


def _get(recipe: dict[str, Any], path: str) -> Any:
    node: Any = recipe
    for part in path.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def _put(recipe: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        recipe = recipe.setdefault(part, {})
    recipe[last] = value


def _inside(workspace: Workspace, value: str, where: str, problems: list[Problem]) -> str:
    try:
        return str(workspace.resolve(value, "file", must_exist=True))
    except UIError as error:
        problems.append((where, str(error)))
        return value


def _model_name(workspace: Workspace, name: str, problems: list[Problem]) -> str:
    """A built-in alias or hub id as it is; anything that names a file or folder must lie inside the workspace."""
    from tunelab.model.load import BUILTIN_MODELS

    if name in BUILTIN_MODELS:
        return name
    looks_like_path = name.startswith(("/", ".", "~")) or (workspace.root / name).exists() or name.endswith(".gguf")
    if looks_like_path or name.count("/") != 1:
        return _inside(workspace, name, "model.name", problems)
    return name  # a hub id ("org/model"); loading it needs the network


def resolve_paths(recipe: dict[str, Any], workspace: Workspace) -> list[Problem]:
    """Make every path in the recipe absolute; report those outside the workspace or missing."""
    problems: list[Problem] = []
    for index, source in enumerate(_get(recipe, "data.sources") or []):
        source["path"] = _inside(workspace, source["path"], f"data.sources[{index}].path", problems)
    for path in PATH_FIELDS:
        value = _get(recipe, path)
        if isinstance(value, str) and value:
            _put(recipe, path, _inside(workspace, value, path, problems))
    validation = _get(recipe, "data.validation")
    if isinstance(validation, str):
        _put(recipe, "data.validation", _inside(workspace, validation, "data.validation", problems))
    against = _get(recipe, "data.contamination_against") or []
    if against:
        where = "data.contamination_against"
        _put(recipe, where, [_inside(workspace, p, f"{where}[{i}]", problems) for i, p in enumerate(against)])
    model = _get(recipe, "model.name")
    if isinstance(model, str) and model:
        _put(recipe, "model.name", _model_name(workspace, model, problems))
    output = recipe.get("output_dir") or "runs"
    try:
        recipe["output_dir"] = str(workspace.resolve(output, "output folder", must_exist=False))
    except UIError as error:
        problems.append(("output_dir", str(error)))
    return problems


def form_recipe(specs: list[FieldSpec], values: dict[str, Any], workspace: Workspace) -> tuple[dict, list[Problem]]:
    """The recipe the form describes, paths resolved, with the problems found on the way."""
    recipe, problems = values_to_recipe(specs, values)
    problems += resolve_paths(recipe, workspace)
    if not recipe.get("name"):
        problems.append(("name", "give the run a name (letters, digits, . _ -)"))
    return recipe, problems


def check(recipe: dict[str, Any], problems: list[Problem], workspace: Workspace):
    """The validated Recipe, or a RecipeError listing every problem (the form's and the schema's) at once."""
    from tunelab.recipe import validate_recipe

    try:
        validated = validate_recipe(yaml.safe_load(yaml.safe_dump(recipe)), "recipe", workspace.root)
    except RecipeError as error:
        raise RecipeError("the recipe", problems + error.problems) from None
    if problems:
        raise RecipeError("the recipe", problems)
    return validated


def recipe_yaml(recipe: dict[str, Any]) -> str:
    return yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True)


def save_recipe(workspace: Workspace, recipe: dict[str, Any]) -> Path:
    """Write the recipe to recipes/<name>.yaml (the form's paths are absolute, so it runs from anywhere)."""
    name = str(recipe.get("name") or "").strip()
    if not name or "/" in name or name.startswith("."):
        raise UIError("give the run a name (letters, digits, . _ -) before saving the recipe")
    path = workspace.recipes / f"{name}.yaml"
    path.write_text(recipe_yaml(recipe), encoding="utf-8")
    return path


def saved_recipes(workspace: Workspace) -> list[str]:
    return sorted(p.name for p in workspace.recipes.glob("*.y*ml"))


def load_recipe_values(specs: list[FieldSpec], workspace: Workspace, name: str) -> dict[str, Any]:
    """The form values of a recipe file in recipes/ (or any YAML path inside the workspace)."""
    path = workspace.resolve(name if "/" in str(name) else f"recipes/{name}", "recipe file")
    try:
        recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise UIError(f"{path.name} is not a readable YAML recipe: {getattr(error, 'problem', error)}") from None
    if not isinstance(recipe, dict):
        raise UIError(f"{path.name} does not hold a recipe (a mapping of sections)")
    recipe = {key: value for key, value in recipe.items() if not str(key).startswith("_")}
    _relative_paths(recipe, path.parent)
    return recipe_to_values(specs, recipe)


def _relative_paths(recipe: dict[str, Any], folder: Path) -> None:
    """Paths relative to a recipe file mean relative to its folder (as `tunelab run` reads them)."""
    for source in _get(recipe, "data.sources") or []:
        if isinstance(source, dict) and isinstance(source.get("path"), str):
            source["path"] = str((folder / source["path"]).resolve())
    for path in (*PATH_FIELDS, "data.validation"):
        value = _get(recipe, path)
        if isinstance(value, str) and value and not Path(value).is_absolute() and (folder / value).exists():
            _put(recipe, path, str((folder / value).resolve()))
