"""`tunelab data audit ... --write-clean DIR`: the audited sets without what the audit found wrong, as new files.

For each set (an input file, or a recipe's train / validation / test) one JSON Lines file of canonical records
(`messages`, keeping `id`, `category` and the rest; the loader's `source` stamp is left out), named after the input:
without invalid records, without extra exact-duplicate copies (the first copy is kept, in input order: training files
first), and, for evaluation sets, without the records that duplicate or near-duplicate training records (leakage).
`clean_summary.json` lists every removed record and why. Input files are never written: a folder that is not empty
is refused unless `overwrite`, and even then an output that would replace an input file is refused.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from tunelab.data.audit import AuditResult
from tunelab.errors import DataError
from tunelab.runs import write_json

SUMMARY = "clean_summary.json"


def check_clean_dir(out_dir: str | Path, overwrite: bool = False) -> None:
    """Refuse a file, or a non-empty folder unless `overwrite` (checked before a long audit, and again on writing)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(str(out), "is a file, not a folder", "give --write-clean a folder for the cleaned files")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise DataError(
            str(out),
            "the folder for the cleaned files is not empty",
            "choose a new folder, or add --overwrite to replace the cleaned files in it (inputs are never replaced)",
        )


def write_clean(result: AuditResult, out_dir: str | Path, overwrite: bool = False) -> dict[str, Any]:
    """Write one cleaned JSONL per set and `clean_summary.json` into `out_dir`; returns the summary."""
    from tunelab.data.workbench import _refuse_overwrite
    from tunelab.jsonl import write_jsonl

    check_clean_dir(out_dir, overwrite)
    out = Path(out_dir)
    removals = _removals(result)
    outputs = _output_names(list(result.report["sets"]))
    _refuse_overwrite([out / name for name in outputs.values()], [p for ps in result.inputs.values() for p in ps])
    indices: dict[str, list[int]] = {name: [] for name in outputs}
    for index, label in enumerate(result.labels):
        indices[label].append(index)
    files = {}
    for name, file_name in outputs.items():
        kept = [_canonical(result.records[i]) for i in indices[name] if i not in removals]
        write_jsonl(out / file_name, kept)
        removed = {"invalid": _invalid_count(result, name)}
        removed |= Counter(removals[i]["reason"] for i in indices[name] if i in removals)
        files[name] = {
            "inputs": [str(p) for p in result.inputs.get(name, [])],
            "role": result.report["sets"][name]["role"],
            "output": file_name,
            "records": len(indices[name]) + removed["invalid"],
            "kept": len(kept),
            "removed": removed,
        }
    invalid = [{"reason": "invalid", "where": e.where, "problem": e.problem} for e in result.invalid_errors]
    summary = {"folder": str(out), "files": files, "removed": invalid + [removals[i] for i in sorted(removals)]}
    write_json(out / SUMMARY, summary)
    return summary


def _removals(result: AuditResult) -> dict[int, dict[str, Any]]:
    """Record index → why it is left out: leaked evaluation records, then extra exact-duplicate copies."""
    removals = {item["index"]: _leaked_entry(item) for item in result.leaked_records()}
    for group in result.exact_groups:
        first = group[0]
        for other in group[1:]:
            if other not in removals:
                removals[other] = {
                    "reason": "exact_duplicate",
                    **_ref(result, other),
                    "copy_of": _ref(result, first),
                }
    return removals


def _leaked_entry(item: dict[str, Any]) -> dict[str, Any]:
    kept = ("set", "id", "source", "train_set", "train_id", "kind", "similarity")
    return {"reason": "leaked", **{key: item[key] for key in kept}}


def _ref(result: AuditResult, index: int) -> dict[str, str]:
    record = result.records[index]
    return {"set": result.labels[index], "id": str(record.get("id")), "source": str(record.get("source", ""))}


def _output_names(sets: list[str]) -> dict[str, str]:
    """Set name → output file name: the input's stem ("orders" for orders.json) or the recipe set name, unique."""
    names: dict[str, str] = {}
    for name in sets:
        stem = Path(name.split("#")[0]).stem or "records"
        candidate, number = f"{stem}.jsonl", 2
        while candidate in names.values() or candidate == SUMMARY:
            candidate, number = f"{stem}-{number}.jsonl", number + 1
        names[name] = candidate
    return names


def _canonical(record: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in record.items() if key != "source"}


def _invalid_count(result: AuditResult, name: str) -> int:
    """Invalid records of this set's files (their `where` starts with the file name, e.g. "a.jsonl line 6")."""
    prefixes = tuple(f"{path.name} " for path in result.inputs.get(name, []))
    return sum(1 for error in result.invalid_errors if prefixes and error.where.startswith(prefixes))


def clean_lines(summary: dict[str, Any]) -> list[str]:
    """What was removed and where the cleaned files are, for the console."""
    lines = [f"cleaned files in {summary['folder']}:"]
    for info in summary["files"].values():
        removed = [f"{count} {_REASONS[reason]}" for reason, count in info["removed"].items() if count]
        detail = f"; removed {', '.join(removed)}" if removed else "; nothing removed"
        lines.append(f"  {info['output']}: {info['kept']} of {info['records']} records kept{detail}")
    lines.append(f"every removed record and why: {Path(summary['folder']) / SUMMARY}")
    return lines


_REASONS = {"invalid": "invalid", "exact_duplicate": "exact duplicate", "leaked": "leaked from training"}
