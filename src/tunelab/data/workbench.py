"""Library entry points behind `tunelab data split|mix`: read inputs, call the pure parts, write new files.

No command here writes into an input file: outputs always go to new paths, written atomically. `tunelab data audit`,
which measures lengths with a model's tokenizer, is `tunelab.audit`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.errors import DataError
from tunelab.jsonl import write_jsonl
from tunelab.runs import write_json


def load_lenient(path: str | Path, fmt: str = "auto", invalid: list[DataError] | None = None, **kw) -> list[dict]:
    """Records of a file with invalid records listed in `invalid` instead of raised."""
    from tunelab.data.load import load_source

    return load_source(path, fmt, kw.get("columns"), kw.get("tags"), kw.get("limit"), invalid)


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
    """Split one file without leakage: near-duplicate clusters stay inside one split (for preference data: pairs
    with near-duplicate prompts); writes <split>.jsonl + ids."""
    from tunelab.data.dedup import find_duplicates, prompt_text
    from tunelab.data.split import generated_links, split_records, split_summary

    records = load_lenient(path)
    clusters = find_duplicates([prompt_text(r) for r in records], threshold=threshold).clusters
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
    from tunelab.data.kinds import sets_kind
    from tunelab.data.mix import mix_sources

    loaded = [(Path(p).name, load_lenient(p), ratio) for p, ratio in sources]
    sets_kind({name: records for name, records, _ in loaded})
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
