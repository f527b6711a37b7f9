"""`tunelab data audit`: audit data files, or what a recipe trains and evaluates on, as `tunelab run` would.

The checks themselves are pure data work (`data/audit.py`); this module adds what needs more than data: the recipe
with every check (`tunelab.recipe`) and the model's tokenizer, which measures record lengths against max_length.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.data.audit import AuditResult, audit_sets
from tunelab.data.workbench import load_lenient, recipe_inputs
from tunelab.errors import DataError


def audit_paths(
    train: list[str | Path],
    evaluation: list[str | Path] = (),
    against: list[str | Path] = (),
    model: str | None = None,
    max_length: int | None = None,
    threshold: float = 0.8,
) -> AuditResult:
    """Audit files: each is its own set (named by file name); `evaluation` files must not overlap the others."""
    invalid: list[DataError] = []
    sets: dict[str, list[dict]] = {}
    roles: dict[str, str] = {}
    inputs: dict[str, list[Path]] = {}
    for role, paths in (("train", train), ("eval", evaluation)):
        for path in paths:
            name = _unique_name(Path(path).name, sets)
            sets[name] = load_lenient(path, invalid=invalid)
            roles[name], inputs[name] = role, [Path(path)]
    tokenizer = _tokenizer(model) if model else None
    result = audit_sets(sets, roles, invalid, tokenizer, max_length, list(against), threshold)
    result.inputs = inputs
    return result


def _unique_name(name: str, taken: dict[str, Any]) -> str:
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name}#{number}", number + 1
    return candidate


def _tokenizer(model: str):
    from tunelab.data.tokenize import ensure_chat_template
    from tunelab.model.load import load_tokenizer

    tokenizer = load_tokenizer(model)
    ensure_chat_template(tokenizer)
    return tokenizer


def audit_recipe(
    recipe_path: str | Path, against: list[str | Path] = (), threshold: float | None = None
) -> AuditResult:
    """Audit what a recipe trains and evaluates on (training sources, validation and test files), as `run` would."""
    from tunelab.data.generations import with_previous_generation
    from tunelab.data.pipeline import load_recipe_sets
    from tunelab.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    data = recipe.data
    loaded = load_recipe_sets(data, recipe.seed, recipe.stage)
    with_previous_generation(recipe, loaded)  # continue_from: both generations, as `run` audits them
    benchmarks = [*data.contamination_against, *against]
    tokenizer = _tokenizer(recipe.model.name)
    near = threshold if threshold is not None else data.near_threshold
    result = audit_sets(loaded.sets, loaded.roles, loaded.invalid, tokenizer, data.max_length, benchmarks, near)
    result.inputs = recipe_inputs(data)
    if data.leakage == "drop":  # what `tunelab run` would leave out
        from tunelab.data.audit import mark_dropped

        mark_dropped(result.report, result.leaked_records())
    return result
