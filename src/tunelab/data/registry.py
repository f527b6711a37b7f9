"""LLaMA-Factory's `dataset_info.json`: dataset names → local files with their format, columns and tags.

People who already keep their data the LLaMA-Factory way can point tunelab at the same registry. Data files sit next
to the registry (`file_name` is relative to its folder). Conversations load for SFT, `"ranking": true` entries as
preference pairs and `kto_tag` entries as unpaired preferences (KTO); entries tunelab cannot read from local text files
get an error that says what to do.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tunelab.errors import DataError

HUB_KEYS = ("hf_hub_url", "ms_hub_url", "om_hub_url", "script_url", "cloud_file_name")
FORMATTING = {"alpaca": "alpaca", "sharegpt": "sharegpt", "openai": "openai"}
MEDIA_COLUMNS = ("images", "videos", "audios")
PAIR_COLUMNS = ("chosen", "rejected")


def registry_entries(path: str | Path, names: str | Sequence[str]) -> list[dict[str, Any]]:
    """One {path, format, columns, tags} source per name, in order. `names` may be "a,b" as in LLaMA-Factory."""
    path = Path(path)
    registry = read_registry(path)
    wanted = [name.strip() for name in names.split(",")] if isinstance(names, str) else [str(n).strip() for n in names]
    wanted = [name for name in wanted if name]
    if not wanted:
        raise DataError(path.name, "no dataset names given", fix="name one or more entries of the registry")
    return [_entry_source(path, name, _lookup(registry, name, path)) for name in wanted]


def read_registry(path: str | Path) -> dict[str, Any]:
    """The parsed registry: a JSON object of name → entry."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            str(path.resolve()), "dataset registry not found", fix="point to LLaMA-Factory's dataset_info.json"
        )
    try:
        registry = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise DataError(
            path.name, "the file is not valid UTF-8", fix="re-encode it as UTF-8 (e.g. with iconv)"
        ) from exc
    except json.JSONDecodeError as exc:
        raise DataError(f"{path.name} line {exc.lineno}", f"invalid JSON: {exc.msg} (column {exc.colno})") from exc
    if not isinstance(registry, dict):
        raise DataError(path.name, "expected a JSON object of dataset name → entry")
    return registry


def _lookup(registry: dict[str, Any], name: str, path: Path) -> dict[str, Any]:
    if name in registry:
        entry = registry[name]
        if not isinstance(entry, dict):
            raise DataError(_where(path, name), "the entry is not a JSON object")
        return entry
    close = difflib.get_close_matches(name, list(registry), n=5, cutoff=0.6)
    fix = f"did you mean: {', '.join(close)}?" if close else f"the names are the top-level keys of {path.name}"
    raise DataError(path.name, f"no dataset named {name!r} ({len(registry)} entries)", fix=fix)


def _entry_source(path: Path, name: str, entry: dict[str, Any]) -> dict[str, Any]:
    where = _where(path, name)
    _reject_unsupported(entry, where)
    columns = _names_dict(entry.get("columns"), "columns", where)
    tags = _names_dict(entry.get("tags"), "tags", where)
    formatting = entry.get("formatting", "alpaca")
    if formatting not in FORMATTING:
        raise DataError(where, f"unknown formatting {formatting!r}", fix=f"use one of: {', '.join(FORMATTING)}")
    kind = _kind(entry, columns or {}, where)
    return {
        "path": str(_data_file(path, entry, where)),
        "format": f"{kind}:{FORMATTING[formatting]}" if kind else FORMATTING[formatting],
        "columns": columns,
        "tags": tags,
    }


def _kind(entry: dict[str, Any], columns: dict[str, str], where: str) -> str | None:
    """ "preference" for ranking entries, "unpaired" for KTO entries (kto_tag), None for conversations."""
    pairs = bool(entry.get("ranking")) or any(key in columns for key in PAIR_COLUMNS)
    if pairs and "kto_tag" in columns:
        raise DataError(
            where,
            "is both ranking (chosen/rejected pairs) and KTO (kto_tag)",
            fix="make it one: `ranking` with chosen/rejected columns, or a kto_tag column",
        )
    return "preference" if pairs else "unpaired" if "kto_tag" in columns else None


def _reject_unsupported(entry: dict[str, Any], where: str) -> None:
    """Multimodal data is for other models; say so instead of failing row by row."""
    columns = entry.get("columns") if isinstance(entry.get("columns"), dict) else {}
    media = [key for key in MEDIA_COLUMNS if key in columns]
    if media:
        raise DataError(where, f"has {'/'.join(media)}: tunelab trains on text only", fix="choose a text dataset")


def _data_file(path: Path, entry: dict[str, Any], where: str) -> Path:
    hubs = [key for key in HUB_KEYS if entry.get(key)]
    file_name = entry.get("file_name")
    if not file_name:
        if hubs:
            raise DataError(where, f"needs a download ({hubs[0]}: {entry[hubs[0]]})", fix=_download_fix(path))
        raise DataError(where, "has no file_name", fix="set file_name to a data file next to the registry")
    data_file = path.parent / str(file_name)
    if data_file.is_dir():
        raise DataError(where, f"file_name is a folder ({data_file})", fix="list each file of it as its own entry")
    if not data_file.is_file():
        problem = f"file_name {file_name!r} not found (looked at {data_file.resolve()})"
        raise DataError(where, problem, fix=_download_fix(path) if hubs else "put the file next to the registry")
    return data_file


def _download_fix(path: Path) -> str:
    return (
        f"tunelab reads local files only: download the data, put the file next to {path.name} "
        f"(in {path.parent.resolve()}) and set the entry's file_name"
    )


def _names_dict(value: Any, key: str, where: str) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise DataError(where, f"{key} must be an object of name → field name")
    return dict(value) or None


def _where(path: Path, name: str) -> str:
    return f'{path.name} entry "{name}"'
