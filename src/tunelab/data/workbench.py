"""Library entry points behind `tunelab data audit|split|mix`: read inputs, call the pure parts, write new files.

No command here writes into an input file: outputs always go to new paths, written atomically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunelab.data.audit import AuditResult, audit_sets
from tunelab.errors import DataError
from tunelab.runs import write_atomic, write_json


def load_lenient(path: str | Path, fmt: str = "auto", invalid: list[DataError] | None = None, **kw) -> list[dict]:
    """Records of a file with invalid records listed in `invalid` instead of raised."""
    from tunelab.data.load import load_source

    return load_source(path, fmt, kw.get("columns"), kw.get("tags"), kw.get("limit"), invalid)


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
    from tunelab.config.load import load_recipe
    from tunelab.data.pipeline import load_recipe_sets

    recipe = load_recipe(recipe_path)
    data = recipe.data
    loaded = load_recipe_sets(data, recipe.seed)
    benchmarks = [*data.contamination_against, *against]
    tokenizer = _tokenizer(recipe.model.name)
    near = threshold if threshold is not None else data.near_threshold
    result = audit_sets(loaded.sets, loaded.roles, loaded.invalid, tokenizer, data.max_length, benchmarks, near)
    result.inputs = recipe_inputs(data)
    if data.leakage == "drop":  # what `tunelab run` would leave out
        from tunelab.data.audit import mark_dropped

        mark_dropped(result.report, result.leaked_records())
    return result


def recipe_inputs(data) -> dict[str, list[Path]]:
    """The files behind each set a recipe names: training sources and registry datasets, validation and test files."""
    from tunelab.data.registry import registry_entries

    train = [Path(source.path) for source in data.sources]
    if data.registry and data.datasets:
        train += [Path(entry["path"]) for entry in registry_entries(data.registry, data.datasets)]
    inputs = {"train": train}
    for name, path in (("validation", data.validation), ("test", data.test)):
        if isinstance(path, str):
            inputs[name] = [Path(path)]
    return inputs


def split_file(
    path: str | Path,
    out_dir: str | Path,
    fractions: dict[str, float],
    seed: int = 42,
    stratify: str | None = None,
    threshold: float = 0.8,
) -> dict[str, Any]:
    """Split one file without leakage: near-duplicate clusters stay inside one split; writes <split>.jsonl + ids."""
    from tunelab.data.dedup import find_duplicates, record_text
    from tunelab.data.split import generated_links, split_records, split_summary

    records = load_lenient(path)
    clusters = find_duplicates([record_text(r) for r in records], threshold=threshold).clusters
    clusters = clusters + generated_links(records)
    assignment = split_records(records, fractions, clusters, seed, stratify)
    out = Path(out_dir)
    _refuse_overwrite([out / f"{name}.jsonl" for name in assignment], [Path(path)])
    for name, indices in assignment.items():
        write_jsonl(out / f"{name}.jsonl", [records[i] for i in indices])
    ids = {name: [records[i]["id"] for i in indices] for name, indices in assignment.items()}
    summary = split_summary(records, assignment, fractions, stratify) | {"seed": seed, "clusters": len(clusters)}
    write_json(out / "split_ids.json", ids)
    write_json(out / "split_summary.json", summary)
    return summary


def mix_files(
    sources: list[tuple[str | Path, float]], out_path: str | Path, seed: int = 42, total: int | None = None
) -> dict[str, Any]:
    from tunelab.data.mix import mix_sources

    loaded = [(Path(p).name, load_lenient(p), ratio) for p, ratio in sources]
    records, report = mix_sources(loaded, seed=seed, total=total)
    _refuse_overwrite([Path(out_path)], [Path(p) for p, _ in sources])
    write_jsonl(Path(out_path), records)
    return report


def _refuse_overwrite(outputs: list[Path], inputs: list[Path]) -> None:
    """Data commands never modify their inputs."""
    sources = {p.resolve() for p in inputs}
    for out in outputs:
        if out.resolve() in sources:
            raise DataError(str(out), "would overwrite an input file", "write the output to a new path or folder")


def write_jsonl(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
