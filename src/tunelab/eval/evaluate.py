"""`tunelab eval`: held-out metrics for a run or any model, on the run's test set or a given file.

For a run, the recipe supplies the test file, the metrics, the JSON schema and the generation settings; flags
override them. Results for a run's own test set update `eval/metrics.json` ("tuned"); other files are kept apart
under `eval/<file stem>/` so that nothing a run produced is overwritten by an evaluation on other data.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.errors import DataError, TunelabError
from tunelab.runs import read_json, write_json


@dataclass
class EvalSettings:
    data: str | None = None
    metrics: list[str] | None = None
    json_schema: str | None = None
    max_new_tokens: int | None = None
    batch_size: int | None = None
    limit: int | None = None
    out: str | None = None


def guess_metrics(records: list[dict[str, Any]]) -> list[str]:
    """JSON metrics when the references are JSON objects, text overlap metrics otherwise."""
    from tunelab.eval.metrics import parse_json_answer

    references = [r["messages"][-1].get("content", "") for r in records if r.get("messages")]
    if references and all(isinstance(parse_json_answer(ref), dict) for ref in references):
        return ["json_validity", "field_accuracy", "exact_match"]
    return ["exact_match", "rouge_l", "bleu"]


def _recipe_eval(target) -> tuple[dict[str, Any], dict[str, Any]]:
    if target.run is None:
        return {}, {}
    recipe = target.run.read_recipe()
    return recipe.get("data", {}), recipe.get("eval", {})


def _test_records(path: str, system: str | None, limit: int | None) -> list[dict[str, Any]]:
    from tunelab.data.load import load_source
    from tunelab.data.pipeline import with_system_prompt

    records = [with_system_prompt(r, system) for r in load_source(path)]
    if not records:
        raise DataError(path, "the test set is empty", fix="add records (each ending with the reference answer)")
    return records[:limit] if limit else records


def evaluate_target(target_name: str, settings: EvalSettings, log=print) -> tuple[dict[str, Any], Path]:
    """Generate and score; returns (report, output folder)."""
    from tunelab.eval.heldout import evaluate_model
    from tunelab.eval.metrics import check_metrics, load_json_schema
    from tunelab.model.targets import load_target, resolve_target

    target = resolve_target(target_name)
    data_section, eval_section = _recipe_eval(target)
    own_test = settings.data is None
    path = data_section.get("test") if own_test else settings.data
    if path is None:
        raise TunelabError(f"{target_name}: no test set to evaluate; pass --data test.jsonl")
    records = _test_records(path, data_section.get("system"), settings.limit or eval_section.get("limit"))
    metrics = check_metrics(settings.metrics or (eval_section.get("metrics") if own_test else None) or
                            guess_metrics(records))  # fmt: skip
    schema_path = settings.json_schema or eval_section.get("json_schema")
    validator = load_json_schema(schema_path) if schema_path else None
    if "json_schema" in metrics and validator is None:
        raise TunelabError("metric json_schema needs a schema: pass --json-schema schema.json")
    folder = _out_folder(target, settings, own_test, path)
    label = "tuned" if target.run is not None else target.label
    model, tokenizer, _ = load_target(target)
    log(f"[tunelab] evaluating {target_name} on {len(records)} records of {Path(path).name}: {', '.join(metrics)}")
    report = evaluate_model(
        model, tokenizer, records, folder / f"predictions_{label}.jsonl", metrics,
        max_new_tokens=settings.max_new_tokens or eval_section.get("max_new_tokens", 256),
        batch_size=settings.batch_size or eval_section.get("batch_size", 16), label=label, schema_validator=validator,
    )  # fmt: skip
    write_json(folder / f"report_{label}.json", report)
    if target.run is not None and own_test and settings.out is None:
        results = read_json(folder / "metrics.json", {})
        results["tuned"] = results.get("tuned", {}) | report["metrics"]
        write_json(folder / "metrics.json", results)
    return report, folder


def _out_folder(target, settings: EvalSettings, own_test: bool, path: str) -> Path:
    if settings.out:
        return Path(settings.out)
    if target.run is not None:
        return target.run.eval_dir if own_test else target.run.eval_dir / Path(path).stem
    return Path("eval") / target.label
