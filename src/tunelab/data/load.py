"""Files and registry datasets → canonical records: read rows (sources), convert each (formats for conversations,
preference for pairs and unpaired preferences), stamp id and source.

A format is an SFT layout (alpaca, sharegpt, openai), a kind whose layout is told from the fields ("preference",
"unpaired"), one exact preference layout ("preference:sharegpt", as a LLaMA-Factory registry entry says), or "auto":
the kind and the layout told from the fields.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tunelab.data.formats import CONVERTERS, FORMATS, _field_list, check_mapping, detect_format
from tunelab.data.preference import READERS, check_layout_mapping, detect_layout
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
    return convert_rows(read_rows(path, invalid)[:limit], path, format, columns, tags, invalid)


def convert_rows(
    rows: list[tuple[str, dict]],
    path: Path,
    format: str = "auto",
    columns: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
    invalid: list[DataError] | None = None,
) -> list[dict[str, Any]]:
    """`load_source` on rows already read from `path` (`sources.read_rows`)."""
    fmt = _file_format(rows, format)
    convert = _converter(fmt, columns, tags, path.name)
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


def _converter(fmt: str, columns: Mapping[str, str] | None, tags: Mapping[str, str] | None, where: str):
    if fmt in CONVERTERS:
        check_mapping(fmt, columns, tags, where)
        return CONVERTERS[fmt]
    if fmt not in READERS:
        names = ", ".join(("auto", *FORMATS, *KIND_DEFAULTS))
        raise DataError(where, f"unknown format {fmt!r}", fix=f"use one of: {names}")
    check_layout_mapping(fmt, columns, tags, where)
    return READERS[fmt]


KIND_DEFAULTS = {"preference": "preference:trl", "unpaired": "unpaired:trl"}
"""The formats that name a kind of data, and the layout an empty file of that kind is taken to have."""


def _file_format(rows: list[tuple[str, dict]], format: str) -> str:
    if format != "auto" and format not in KIND_DEFAULTS:
        return format
    if not rows:
        return KIND_DEFAULTS.get(format, "openai")
    first_where, first_row = rows[0]
    fmt = _row_format(first_row, first_where, format)
    for where, row in rows[1:]:
        other = _row_format(row, where, format)
        if other != fmt:
            raise DataError(
                where,
                f"mixed formats in one file: this record is {other}, the first ({first_where}) is {fmt}",
                fix="keep one format per file (split the file), or set the format explicitly",
            )
    return fmt


def _row_format(row: dict, where: str, format: str) -> str:
    layout = detect_layout(row)
    if format == "auto":
        return layout or detect_format(row, where)
    if layout is None or not layout.startswith(f"{format}:"):
        raise _not_of_kind(row, where, format)
    return layout


def _stamp(record: dict[str, Any], path: Path, index: int, where: str) -> dict[str, Any]:
    """Put `id` first (default "<file stem>-<index>", index 0-based among the rows) and add `source`."""
    number = where.rsplit(" ", 1)[-1]
    return {"id": record.get("id", f"{path.stem}-{index}"), **record, "source": f"{path.name}:{number}"}


def _not_of_kind(row: Mapping[str, Any], where: str, kind: str) -> DataError:
    """The error for a row that is not of the kind a file was declared to hold."""
    what = {"preference": "a preference pair", "unpaired": "an unpaired preference"}[kind]
    fix = {
        "preference": "expected prompt + chosen/rejected, chosen/rejected conversations or Human/Assistant texts, "
        "conversations or instruction + chosen/rejected (LLaMA-Factory), or question + response_j/response_k",
        "unpaired": "expected prompt + completion + label, or a conversation (or instruction/output) + kto_tag",
    }[kind]
    return DataError(where, f"not {what} (fields: {_field_list(row)})", fix=fix)
