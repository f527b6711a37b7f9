"""The recipe form, derived from the recipe schema: one field spec per YAML key, with its kind of widget, closed
choices, default and description. Sections, choices and method variants come from `config/schema.py`, so a stage or
method added there appears in the UI without UI changes.

This module is pure (no Gradio): `field_specs()` describes the form, `values_to_recipe()` turns the form's values back
into a recipe mapping holding only what differs from the defaults (so the YAML stays short and explicit choices mean
what they say), and `recipe_to_values()` fills the form from a recipe.
"""

from __future__ import annotations

import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from tunelab.config.schema import Recipe

# `train:` is forwarded to TRL's SFTConfig; the form shows the keys people set most, the rest go in a YAML box.
TRAIN_FIELDS: list[tuple[str, str, Any, str]] = [
    ("learning_rate", "float", 2e-4, "peak learning rate"),
    ("num_train_epochs", "float", 1, "passes over the training data"),
    ("max_steps", "int", -1, "stop after this many steps (-1: by epochs)"),
    ("per_device_train_batch_size", "int", 8, "examples per step"),
    ("gradient_accumulation_steps", "int", 1, "steps whose gradients are summed before an update"),
    ("lr_scheduler_type", "choice", "cosine", "learning-rate schedule"),
    ("warmup_steps", "float", 0.05, "warm-up steps (a fraction below 1)"),
    ("logging_steps", "int", 5, "a metrics.jsonl row every N steps"),
    ("eval_steps", "int", 50, "validation loss every N steps"),
    ("save_steps", "int", 50, "a resumable checkpoint every N steps"),
    ("early_stopping_patience", "opt_int", None, "stop when the eval loss has not improved N times (needs validation)"),
]
SCHEDULERS = ["cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial"]
SKIPPED = {("data", "allow_leakage"), ("data", "sources")}  # deprecated spelling; sources have their own widget


@dataclass
class FieldSpec:
    path: str  # dotted YAML path, e.g. "data.max_length" or "method.r"
    kind: str  # text | optional_text | int | float | opt_int | opt_float | bool | choice | multichoice | list |
    #            number_or_text | yaml
    default: Any = None
    choices: list[Any] = field(default_factory=list)
    description: str = ""
    variant: str | None = None  # for method knobs: the method type this field belongs to
    required: bool = False

    @property
    def key(self) -> str:
        """Unique per widget: method knobs of different variants share a path."""
        return f"{self.path}@{self.variant}" if self.variant else self.path


def _strip(annotation: Any) -> tuple[Any, bool]:
    """(annotation without Annotated and None, whether None is allowed)."""
    optional = False
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (typing.Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            optional = optional or len(members) < len(typing.get_args(annotation))
            if len(members) != 1:
                return annotation, optional
            annotation = members[0]
        else:
            return annotation, optional


def _kind(annotation: Any) -> tuple[str, list[Any]]:
    """The widget kind (and choices) for a field's annotation."""
    base, optional = _strip(annotation)
    origin = typing.get_origin(base)
    if origin is Literal:
        return "choice", list(typing.get_args(base)) + ([None] if optional else [])
    if origin in (typing.Union, types.UnionType):
        members = [_strip(a)[0] for a in typing.get_args(base)]
        if any(typing.get_origin(m) is Literal for m in members) and list in [typing.get_origin(m) for m in members]:
            return "list", []  # e.g. target_modules: a list, or "all-linear"
        return ("number_or_text", []) if str in members and float in members else ("text", [])
    if origin is list:
        item, _ = _strip(typing.get_args(base)[0])
        if typing.get_origin(item) is Literal:
            return "multichoice", list(typing.get_args(item))
        return "list", []
    if base is bool:
        return "bool", []
    if base in (int, float):  # an optional number is a text box: empty means "not set" (a number box shows 0)
        return ("opt_" if optional else "") + base.__name__, []
    return ("optional_text" if optional else "text"), []


def _default(info) -> Any:
    if info.default_factory is not None:
        return info.default_factory()
    return None if info.default is PydanticUndefined else info.default


def _section_specs(model: type[BaseModel], prefix: str, variant: str | None = None) -> list[FieldSpec]:
    specs: list[FieldSpec] = []
    for name, info in model.model_fields.items():
        path = f"{prefix}.{name}" if prefix else name
        if (prefix, name) in SKIPPED or (variant and name == "type"):
            continue
        base, _ = _strip(info.annotation)
        if isinstance(base, type) and issubclass(base, BaseModel):
            specs += _section_specs(base, path)
            continue
        kind, choices = _kind(info.annotation)
        specs.append(FieldSpec(path, kind, _default(info), choices, info.description or "", variant,
                               info.is_required()))  # fmt: skip
    return specs


def method_variants() -> dict[str, type[BaseModel]]:
    """method.type → its schema class, from the recipe's discriminated union (new methods appear here)."""
    members = typing.get_args(_strip(Recipe.model_fields["method"].annotation)[0])
    return {typing.get_args(m.model_fields["type"].annotation)[0]: m for m in members}


REWARD_HELP = "the RL stages' rewards (grpo, rloo, ppo), a YAML list, e.g. - {type: field_accuracy}"


def field_specs() -> list[FieldSpec]:
    """Every field of the form, in schema order: top level, model, data, method (type and knobs), train, eval, ..."""
    specs: list[FieldSpec] = []
    for name, info in Recipe.model_fields.items():
        if name == "method":
            variants = method_variants()
            default = Recipe.model_fields["method"].default_factory().type
            specs.append(FieldSpec("method.type", "choice", default, list(variants), "how the model is trained"))
            for variant, model in variants.items():
                specs += _section_specs(model, "method", variant)
        elif name == "reward":
            specs.append(FieldSpec("reward", "yaml_list", [], [], REWARD_HELP))
        elif name == "train":
            for key, kind, default, description in TRAIN_FIELDS:
                choices = SCHEDULERS if kind == "choice" else []
                specs.append(FieldSpec(f"train.{key}", kind, default, choices, description))
            specs.append(FieldSpec("train._extra", "yaml", "", [], "more train: keys (any trl.SFTConfig field), YAML"))
        else:
            base, _ = _strip(info.annotation)
            if isinstance(base, type) and issubclass(base, BaseModel):
                if name == "data":
                    specs.append(FieldSpec("data.sources", "list", [], [], "training files, one per line"))
                specs += _section_specs(base, name)
            else:
                kind, choices = _kind(info.annotation)
                specs.append(FieldSpec(name, kind, _default(info), choices, info.description or "", None,
                                       info.is_required()))  # fmt: skip
    return specs


def sections(specs: list[FieldSpec]) -> dict[str, list[FieldSpec]]:
    """Specs grouped by their first path part ("" for top-level keys), in order."""
    grouped: dict[str, list[FieldSpec]] = {}
    for spec in specs:
        head = spec.path.split(".", 1)[0] if "." in spec.path else ""
        grouped.setdefault(head, []).append(spec)
    return grouped


# --- form values ↔ recipe mapping ---------------------------------------------------------------------------------

NONE_CHOICE = ""  # how a `None` choice shows in a dropdown


def train_defaults() -> dict[str, Any]:
    """The defaults the form shows for its train keys: tunelab's own (config/train_args.py), else TRL's."""
    from tunelab.config.train_args import tunelab_defaults

    ours = tunelab_defaults()
    return {key: ours.get(key, default) for key, _, default, _ in TRAIN_FIELDS}


def widget_default(spec: FieldSpec) -> Any:
    """The value a fresh form shows for a spec."""
    if spec.path.startswith("train.") and spec.kind != "yaml":
        return to_widget(spec, train_defaults()[spec.path.split(".", 1)[1]])
    return to_widget(spec, spec.default)


def to_widget(spec: FieldSpec, value: Any) -> Any:
    """A recipe value as its widget shows it."""
    if spec.kind == "choice":
        return NONE_CHOICE if value is None else value
    if spec.kind in ("list",):
        if isinstance(value, str):
            return value
        items = [item["path"] if isinstance(item, dict) else str(item) for item in value or []]
        return "\n".join(items)
    if spec.kind in ("text", "optional_text", "number_or_text", "opt_int", "opt_float"):
        return "" if value is None else str(value)
    if spec.kind == "yaml":
        return value or ""
    if spec.kind == "yaml_list":
        import yaml

        return yaml.safe_dump(value, sort_keys=False, allow_unicode=True) if value else ""
    return value


def from_widget(spec: FieldSpec, value: Any) -> Any:
    """A widget's value as the recipe holds it (raises ValueError with a plain message when it cannot be read)."""
    reader = _READERS.get(spec.kind)
    return value if reader is None else reader(spec, value)


def _optional_number(spec: FieldSpec, value: Any) -> int | float | None:
    text = str(value if value is not None else "").strip()
    if not text:
        return None
    try:
        return _integer(text) if spec.kind == "opt_int" else float(text)
    except ValueError:
        kind = "a whole number" if spec.kind == "opt_int" else "a number"
        raise ValueError(f"expected {kind} or nothing, got {text!r}") from None


def _list(spec: FieldSpec, value: Any) -> list[Any]:
    items = [part.strip() for part in str(value or "").replace(",", "\n").splitlines() if part.strip()]
    return [{"path": item} for item in items] if spec.path == "data.sources" else items


def _yaml_list(spec: FieldSpec, value: Any) -> list[Any]:
    import yaml

    text = str(value or "").strip()
    try:
        parsed = yaml.safe_load(text) if text else []
    except yaml.YAMLError as error:
        raise ValueError(f"not valid YAML: {getattr(error, 'problem', error)}") from None
    if not isinstance(parsed, list):
        raise ValueError("write a YAML list, one entry per line, e.g. - {type: json_valid}")
    return parsed


def _number_or_text(spec: FieldSpec, value: Any) -> float | str | None:
    text = str(value or "").strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        return text


_READERS: dict[str, typing.Callable[[FieldSpec, Any], Any]] = {  # widget kind → its value as the recipe holds it
    "choice": lambda spec, value: None if value in (NONE_CHOICE, None) else value,
    "int": lambda spec, value: _integer(value),
    "float": lambda spec, value: None if value is None or value == "" else float(value),
    "opt_int": _optional_number,
    "opt_float": _optional_number,
    "list": _list,
    "yaml_list": _yaml_list,
    "optional_text": lambda spec, value: str(value).strip() or None,
    "number_or_text": _number_or_text,
    "text": lambda spec, value: str(value if value is not None else "").strip(),
}


def _integer(value: Any) -> int | None:
    if value is None or value == "":
        return None
    number = float(value)
    if not math.isfinite(number) or number != int(number):
        raise ValueError(f"expected a whole number, got {value}")
    return int(number)


def _set(target: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        target = target.setdefault(part, {})
    target[last] = value


def _get(source: dict[str, Any], path: str, missing: Any = None) -> Any:
    for part in path.split("."):
        if not isinstance(source, dict) or part not in source:
            return missing
        source = source[part]
    return source


def values_to_recipe(specs: list[FieldSpec], values: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """(recipe mapping with the values that differ from the defaults, problems as (YAML path, message))."""
    import yaml

    recipe: dict[str, Any] = {}
    problems: list[tuple[str, str]] = []
    method = values.get("method.type")
    for spec in specs:
        if spec.variant and spec.variant != method or spec.key not in values:
            continue
        if spec.kind == "yaml":
            problems += _merge_extra_train(recipe, values[spec.key], yaml)
            continue
        try:
            value = _recipe_value(spec, values[spec.key])
        except (TypeError, ValueError) as error:
            problems.append((spec.path, str(error)))
            continue
        if spec.required or spec.path == "method.type" or value != _recipe_value(spec, widget_default(spec)):
            _set(recipe, spec.path, value)
    return recipe, problems


def _recipe_value(spec: FieldSpec, widget_value: Any) -> Any:
    value = from_widget(spec, widget_value)
    if spec.kind == "list" and isinstance(spec.default, str) and len(value) == 1 and value[0] == spec.default:
        return spec.default  # a one-word setting such as target_modules: all-linear
    return value


def _merge_extra_train(recipe: dict[str, Any], text: str, yaml) -> list[tuple[str, str]]:
    if not str(text or "").strip():
        return []
    try:
        extra = yaml.safe_load(text)
    except yaml.YAMLError as error:
        return [("train (more keys)", f"not valid YAML: {getattr(error, 'problem', error)}")]
    if not isinstance(extra, dict):
        return [("train (more keys)", "write key: value lines, e.g. weight_decay: 0.01")]
    recipe.setdefault("train", {}).update(extra)
    return []


def recipe_to_values(specs: list[FieldSpec], recipe: dict[str, Any]) -> dict[str, Any]:
    """The form's values for a recipe mapping (keys it does not set keep their defaults)."""
    import yaml

    values: dict[str, Any] = {}
    method = _get(recipe, "method.type", "lora")
    shown = {f"train.{key}" for key, *_ in TRAIN_FIELDS}
    for spec in specs:
        if spec.kind == "yaml":
            extra = {k: v for k, v in (recipe.get("train") or {}).items() if f"train.{k}" not in shown}
            values[spec.key] = yaml.safe_dump(extra, sort_keys=False, allow_unicode=True) if extra else ""
            continue
        missing = object()
        value = _get(recipe, spec.path, missing) if not spec.variant or spec.variant == method else missing
        values[spec.key] = widget_default(spec) if value is missing else to_widget(spec, value)
    return values
