"""Files and registry datasets → canonical records: read rows (sources), convert each (formats), stamp id and source."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tunelab.data.formats import CONVERTERS, check_mapping, detect_format
from tunelab.data.registry import registry_entries
from tunelab.data.sources import read_rows
from tunelab.errors import DataError


def load_source(
    path: str | Path,
    format: str = "auto",
    columns: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
    limit: int | None = None,
    invalid: list[DataError] | None = None,
) -> list[dict[str, Any]]:
    """Canonical records of one file; `format="auto"` tells it from the first row and insists the rest agree.

    With an `invalid` list, records that cannot be converted (and malformed JSON Lines lines) are listed there and
    left out instead of stopping at the first one; the caller decides whether that many invalid records is acceptable.
    """
    path = Path(path)
    if limit is not None and limit < 0:
        raise DataError(path.name, f"limit must be 0 or more, got {limit}")
    rows = read_rows(path, invalid)[:limit]
    fmt = _file_format(rows, format)
    check_mapping(fmt, columns, tags, path.name)
    convert = CONVERTERS[fmt]
    records = []
    for index, (where, row) in enumerate(rows):
        try:
            records.append(_stamp(convert(row, where, columns, tags), path, index, where))
        except DataError as error:
            if invalid is None:
                raise
            invalid.append(error)
    return records


def load_registry_datasets(
    registry_path: str | Path,
    names: str | Sequence[str],
    limit: int | None = None,
    invalid: list[DataError] | None = None,
) -> list[dict[str, Any]]:
    """Records of the named datasets of a LLaMA-Factory dataset_info.json, in order; `limit` applies to each."""
    records: list[dict[str, Any]] = []
    for spec in registry_entries(registry_path, names):
        records += load_source(spec["path"], spec["format"], spec["columns"], spec["tags"], limit, invalid)
    return records


def _file_format(rows: list[tuple[str, dict]], format: str) -> str:
    if format != "auto":
        return format
    if not rows:
        return "openai"
    first_where, first_row = rows[0]
    fmt = detect_format(first_row, first_where)
    for where, row in rows[1:]:
        other = detect_format(row, where)
        if other != fmt:
            raise DataError(
                where,
                f"mixed formats in one file: this record is {other}, the first ({first_where}) is {fmt}",
                fix="keep one format per file (split the file), or set the format explicitly",
            )
    return fmt


def _stamp(record: dict[str, Any], path: Path, index: int, where: str) -> dict[str, Any]:
    """Put `id` first (default "<file stem>-<index>", index 0-based among the rows) and add `source`."""
    number = where.rsplit(" ", 1)[-1]
    return {"id": record.get("id", f"{path.stem}-{index}"), **record, "source": f"{path.name}:{number}"}
