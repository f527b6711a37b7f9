"""Held-out metrics as pure functions: per-record scores, then set-level aggregates and a per-category breakdown.

Per-record scores keep the counts an aggregate needs (field accuracy is a micro average over all reference fields),
so aggregating a resumed run's saved scores gives the same numbers as scoring everything at once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError
from tunelab.formatting import percent

METRICS = {"json_validity", "json_schema", "field_accuracy", "exact_match", "rouge_l", "bleu"}
# per held-out preference pair, 0 or 1 (eval/preference.py); the implicit reward only for a tuned dpo/kto adapter
PAIR_METRICS = {"pair_accuracy", "length_rule", "implicit_reward_accuracy"}
# the RL stages' configured rewards on a held-out answer (train/rl.py): Σ weight · value, in the rewards' own units
REWARD_METRICS = {"reward"}
SCORED_METRICS = METRICS | PAIR_METRICS | REWARD_METRICS
UNCATEGORIZED = "(none)"

_FENCED = re.compile(r"\A```(?:json)?\s*(.*?)\s*```\Z", re.DOTALL | re.IGNORECASE)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _loads_strict(text: str) -> Any:
    return json.loads(text, parse_constant=_reject_constant)


def parse_json_answer(text: str) -> Any | None:
    """The JSON value of an answer, or None when it is not JSON.

    The stripped text must be JSON as a whole, or a single fenced block (```json ... ``` or ``` ... ```) and nothing
    else: prose around the JSON does not count, because an application could not parse it either.
    """
    stripped = text.strip()
    candidates = [stripped]
    fenced = _FENCED.match(stripped)
    if fenced:
        candidates.append(fenced.group(1))
    for candidate in candidates:
        try:
            return _loads_strict(candidate)
        except ValueError:
            continue
    return None


def json_valid(pred: str) -> bool:
    """True when the prediction parses as a JSON object (a dict); arrays and scalars are not valid answers."""
    return isinstance(parse_json_answer(pred), dict)


def values_equal(a: Any, b: Any) -> bool:
    """JSON equality where types matter: 2 != "2", true != 1; ints and floats compare as numbers (2 == 2.0)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(values_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def field_accuracy(pred_obj: Any, ref_obj: dict) -> tuple[int, int]:
    """(correct, total) over the reference's top-level keys; a missing key or a non-object prediction is wrong."""
    total = len(ref_obj)
    if not isinstance(pred_obj, dict):
        return 0, total
    correct = sum(1 for key, value in ref_obj.items() if key in pred_obj and values_equal(pred_obj[key], value))
    return correct, total


def exact_match(pred: str, ref: str) -> bool:
    """Equal after stripping leading and trailing whitespace."""
    return pred.strip() == ref.strip()


def check_metrics(metrics: Iterable[str]) -> list[str]:
    """The requested metric names in a stable order; unknown names are an error that lists the known ones."""
    names = list(dict.fromkeys(metrics))
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise TunelabError(f"unknown metric {', '.join(unknown)}; choose from {', '.join(sorted(METRICS))}")
    if not names:
        raise TunelabError(f"no metrics requested; choose from {', '.join(sorted(METRICS))}")
    return names


def json_schema_validator(schema: dict[str, Any], where: str = "JSON schema"):
    """A validator for `schema` (its own draft), or a TunelabError naming what is wrong with the schema."""
    from jsonschema import SchemaError, validators

    cls = validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except SchemaError as error:
        raise TunelabError(f"{where}: not a valid JSON Schema ({error.message})") from None
    return cls(schema)


def load_json_schema(path: str | Path):
    """A validator for the JSON Schema in `path`; errors name the file and what is wrong."""
    path = Path(path)
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise TunelabError(f"{path}: cannot read the JSON schema ({error.strerror or error})") from None
    except ValueError as error:
        raise TunelabError(f"{path}: not valid JSON ({error}); a JSON Schema is a JSON object") from None
    if not isinstance(schema, dict):
        raise TunelabError(f"{path}: a JSON Schema must be a JSON object, got {type(schema).__name__}")
    return json_schema_validator(schema, where=str(path))


def schema_valid(pred: str, validator) -> bool:
    """True when the prediction is JSON (as json_validity reads it) and satisfies the schema."""
    value = parse_json_answer(pred)
    return value is not None and validator.is_valid(value)


def score_record(pred: str, ref: str, metrics: Sequence[str], schema_validator=None) -> dict[str, Any]:
    """Scores of one prediction. field_accuracy is {"correct", "total"}, or None when the reference is no object;
    bleu is {"stats", "sentence"} so that the set gets corpus BLEU."""
    from tunelab.eval.text_metrics import bleu_statistics, rouge_l

    scores: dict[str, Any] = {}
    if "json_validity" in metrics:
        scores["json_validity"] = 1.0 if json_valid(pred) else 0.0
    if "json_schema" in metrics:
        if schema_validator is None:
            raise TunelabError("metric json_schema needs a schema: set eval.json_schema (or --json-schema)")
        scores["json_schema"] = 1.0 if schema_valid(pred, schema_validator) else 0.0
    if "field_accuracy" in metrics:
        ref_obj = parse_json_answer(ref)
        if isinstance(ref_obj, dict):
            correct, total = field_accuracy(parse_json_answer(pred), ref_obj)
            scores["field_accuracy"] = {"correct": correct, "total": total}
        else:
            scores["field_accuracy"] = None
    if "exact_match" in metrics:
        scores["exact_match"] = 1.0 if exact_match(pred, ref) else 0.0
    if "rouge_l" in metrics:
        scores["rouge_l"] = round(rouge_l(pred, ref), 6)
    if "bleu" in metrics:
        scores["bleu"] = bleu_statistics(pred, ref)
    return scores


def score_records(
    predictions: Sequence[str], references: Sequence[str], metrics: Iterable[str], schema_validator=None
) -> list[dict]:
    """Per-record scores for aligned predictions and references."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    names = check_metrics(metrics)
    pairs = zip(predictions, references, strict=True)
    return [score_record(pred, ref, names, schema_validator) for pred, ref in pairs]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def aggregate(scores: Sequence[dict[str, Any]]) -> dict[str, float | None]:
    """Set-level values: shares for json_validity, json_schema and exact_match, correct/total fields for
    field_accuracy, mean ROUGE-L F1, corpus BLEU (all in [0, 1]).

    A metric with nothing to measure (e.g. no reference is a JSON object) is None rather than a misleading 0.
    """
    from tunelab.eval.text_metrics import corpus_bleu

    names = [name for name in sorted(SCORED_METRICS) if any(name in s for s in scores)]
    result: dict[str, float | None] = {}
    for name in names:
        if name == "field_accuracy":
            counts = [s[name] for s in scores if s.get(name)]
            total = sum(c["total"] for c in counts)
            result[name] = sum(c["correct"] for c in counts) / total if total else None
        elif name == "bleu":
            result[name] = corpus_bleu([s[name]["stats"] for s in scores if s.get(name)])
        else:
            result[name] = _mean([s[name] for s in scores if s.get(name) is not None])
    return result


def aggregate_by_category(scores: Sequence[dict], categories: Sequence[str | None]) -> dict[str, dict[str, Any]]:
    """{category: {metric: value, "count": n}}; empty when no record has a category.

    Records without one are grouped under "(none)" so that the groups add up to the whole set.
    """
    if not any(categories):
        return {}
    groups: dict[str, list[dict]] = {}
    for score, category in zip(scores, categories, strict=True):
        groups.setdefault(category or UNCATEGORIZED, []).append(score)
    return {name: {**aggregate(group), "count": len(group)} for name, group in sorted(groups.items())}


def is_share(name: str) -> bool:
    """Whether a metric is a fraction in [0, 1], shown in percent and compared in points (not the rewards)."""
    return name not in REWARD_METRICS


def format_value(name: str, value: Any) -> str:
    """A metric's value as shown: `93.9%` for shares, `1.442` for a reward; `—` when it is not a number."""
    if is_share(name) or not isinstance(value, int | float):
        return percent(value)
    return f"{value:.3f}"


def format_change(name: str, before: Any, after: Any) -> str:
    """`+8.3 pts` for shares, `+0.007` for a reward; empty when either side is missing."""
    if not (isinstance(before, int | float) and isinstance(after, int | float)):
        return ""
    return f"{100 * (after - before):+.1f} pts" if is_share(name) else f"{after - before:+.3f}"
