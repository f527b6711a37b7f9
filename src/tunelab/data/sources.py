"""All data-file I/O: read a file into (location, row) pairs.

Rows are plain dicts exactly as stored; turning them into canonical records is `formats.py`'s job. Locations name the
file and the line (JSON Lines, 1-based) or the record (JSON list, CSV, Parquet; 0-based), so every later error can
point at the place to fix.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tunelab.errors import DataError

MAX_LINE_BYTES = 64 * 1024 * 1024
"""A longer JSON Lines line is refused: it is almost surely not one record (or not JSON Lines at all)."""

Row = tuple[str, dict[str, Any]]


def read_rows(path: str | Path, bad_lines: list[DataError] | None = None) -> list[Row]:
    """Read a .json, .jsonl, .csv or .parquet file into (location, row) pairs; raise DataError on any problem.

    With a `bad_lines` list, a JSON Lines line that is not a JSON object is recorded there and skipped instead of
    raised, so an audit can list every bad line of a file at once.
    """
    path = Path(path)
    _check_is_file(path)
    reader = _READERS.get(path.suffix.lower())
    if reader is None:
        supported = ", ".join(sorted(_READERS))
        raise DataError(
            path.name,
            f"unsupported file type {path.suffix or '(no extension)'!r}",
            fix=f"save the data as one of: {supported}",
        )
    try:
        rows = _read_jsonl(path, bad_lines) if reader is _read_jsonl else reader(path)
    except OSError as exc:
        raise DataError(
            str(path.resolve()), f"cannot read the file: {exc.strerror or exc}", fix=_PERMISSION_FIX
        ) from exc
    if not rows and not bad_lines:
        raise DataError(path.name, "no records", fix="the file is empty; add records or remove it from the recipe")
    return rows


_PERMISSION_FIX = "check that the file is readable by the current user"


def _check_is_file(path: Path) -> None:
    resolved = path.resolve()
    if not path.exists():
        raise DataError(
            str(resolved),
            "file not found",
            fix=f"check the path; relative paths are resolved from the current folder ({Path.cwd()})",
        )
    if not path.is_file():
        raise DataError(str(resolved), "is a folder, not a file", fix="point to a data file inside it")


def _kind(value: Any) -> str:
    """A JSON-ish name for a value's type, for error messages."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def _decode(data: bytes, name: str) -> str:
    """UTF-8 text (a leading byte-order mark is dropped); undecodable bytes are reported with their line."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise _not_utf8(f"{name} line {line}", data[exc.start], name) from exc


def _not_utf8(where: str, byte: int, name: str) -> DataError:
    return DataError(
        where,
        f"the file is not valid UTF-8 (byte 0x{byte:02x})",
        fix=f"re-encode it, e.g. `iconv -f GBK -t UTF-8 {name} > utf8_{name}` (use the file's real encoding after -f)",
    )


# --- JSON Lines ---------------------------------------------------------------------------------------------------


def _iter_file_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Stream (line number, text) without holding the file in memory; refuse absurdly long lines."""
    with path.open("rb") as handle:
        line_no = 0
        while raw := handle.readline(MAX_LINE_BYTES + 1):
            line_no += 1
            if len(raw) > MAX_LINE_BYTES:
                raise DataError(
                    f"{path.name} line {line_no}",
                    f"line is longer than {MAX_LINE_BYTES // (1024 * 1024)} MB",
                    fix="JSON Lines needs one record per line; check that the file is really JSON Lines",
                )
            try:
                yield line_no, raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise _not_utf8(f"{path.name} line {line_no}", raw[exc.start], path.name) from exc


def _parse_lines(lines: Iterator[tuple[int, str]], name: str, bad_lines: list[DataError] | None = None) -> list[Row]:
    rows = []
    for line_no, text in lines:
        if not text.strip():
            continue
        where = f"{name} line {line_no}"
        try:
            rows.append((where, _parse_object(text, where)))
        except DataError as error:
            if bad_lines is None:
                raise
            bad_lines.append(error)
    return rows


def _parse_object(text: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            where, f"invalid JSON: {exc.msg} (column {exc.colno})", fix="each line must be one JSON object"
        ) from None
    if not isinstance(value, dict):
        raise DataError(where, f"expected a JSON object {{...}}, got {_kind(value)}")
    return value


def _read_jsonl(path: Path, bad_lines: list[DataError] | None = None) -> list[Row]:
    return _parse_lines(_iter_file_lines(path), path.name, bad_lines)


# --- JSON ---------------------------------------------------------------------------------------------------------


def _read_json(path: Path) -> list[Row]:
    """A JSON list of objects; JSON Lines saved as .json is detected by its first line being a whole object."""
    text = _decode(path.read_bytes(), path.name)
    if _first_line_is_object(text):
        return _parse_lines(enumerate(text.split("\n"), start=1), path.name)
    try:
        value = json.loads(text) if text.strip() else []
    except json.JSONDecodeError as exc:
        raise DataError(f"{path.name} line {exc.lineno}", f"invalid JSON: {exc.msg} (column {exc.colno})") from exc
    if not isinstance(value, list):
        raise DataError(path.name, f"the top level is {_kind(value)}, expected a list of objects", fix=_list_fix(value))
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            raise DataError(f"{path.name} record {index}", f"expected a JSON object {{...}}, got {_kind(item)}")
    return [(f"{path.name} record {index}", item) for index, item in enumerate(value)]


def _first_line_is_object(text: str) -> bool:
    # split("\n"), not splitlines(): JSON strings may hold U+2028 and other characters splitlines() breaks on.
    first = next((line for line in text.split("\n") if line.strip()), "")
    if not first.lstrip().startswith("{"):
        return False
    try:
        return isinstance(json.loads(first), dict)
    except json.JSONDecodeError:
        return False


def _list_fix(value: Any) -> str:
    if isinstance(value, dict):
        lists = [key for key, item in value.items() if isinstance(item, list)]
        if len(lists) == 1:
            return f'the records seem to be under "{lists[0]}"; save that list as the top level of the file'
    return "write the records as a JSON list [{...}, {...}], or one object per line in a .jsonl file"


# --- CSV and Parquet ----------------------------------------------------------------------------------------------


def _read_csv(path: Path) -> list[Row]:
    """CSV with a header row; every cell is a string (nested fields may hold JSON text)."""
    text = _decode(path.read_bytes(), path.name)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = reader.fieldnames or []
    duplicates = sorted({name for name in header if header.count(name) > 1})
    if duplicates:
        raise DataError(f"{path.name} line 1", f"repeated column names in the header: {', '.join(duplicates)}")
    rows = []
    try:
        for index, row in enumerate(reader):
            where = f"{path.name} record {index}"
            if None in row or None in row.values():
                raise DataError(
                    f"{where} (line {reader.line_num})",
                    f"the row has a different number of fields than the header ({len(header)})",
                    fix="quote cells that contain commas, quotes or newlines",
                )
            rows.append((where, row))
    except csv.Error as exc:
        raise DataError(f"{path.name} line {reader.line_num}", f"malformed CSV: {exc}") from exc
    return rows


def _read_parquet(path: Path) -> list[Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, ValueError) as exc:
        raise DataError(
            path.name, f"cannot read as Parquet: {exc}", fix="check that the file is a Parquet file"
        ) from exc
    return [(f"{path.name} record {index}", row) for index, row in enumerate(table.to_pylist())]


_READERS = {
    ".json": _read_json,
    ".jsonl": _read_jsonl,
    ".ndjson": _read_jsonl,
    ".csv": _read_csv,
    ".parquet": _read_parquet,
}
