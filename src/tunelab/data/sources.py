"""All data-file I/O: read a file into (location, row) pairs.

Rows are plain dicts exactly as stored; turning them into canonical records is `formats.py`'s job. Locations name the
file and the line (JSON Lines, 1-based) or the record (JSON list, CSV, Parquet; 0-based), so every later error can
point at the place to fix.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tunelab.errors import DataError
from tunelab.jsonl import BadLine, LineTooLong, iter_jsonl, parse_lines

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


def _read_jsonl(path: Path, bad_lines: list[DataError] | None = None) -> list[Row]:
    """Stream the file (it is never held in memory whole); refuse absurdly long lines."""
    values = iter_jsonl(path, _on_bad_line(path.name, bad_lines), max_line_bytes=MAX_LINE_BYTES)
    try:
        return _objects(values, path.name, bad_lines)
    except LineTooLong as error:
        raise DataError(
            f"{path.name} line {error.line}",
            f"line is longer than {MAX_LINE_BYTES // (1024 * 1024)} MB",
            fix="JSON Lines needs one record per line; check that the file is really JSON Lines",
        ) from None


def _parse_lines(lines: Iterable[tuple[int, str]], name: str, bad_lines: list[DataError] | None = None) -> list[Row]:
    return _objects(parse_lines(lines, _on_bad_line(name, bad_lines)), name, bad_lines)


def _objects(values: Iterable[tuple[int, Any]], name: str, bad_lines: list[DataError] | None) -> list[Row]:
    rows = []
    for line_no, value in values:
        where = f"{name} line {line_no}"
        if isinstance(value, dict):
            rows.append((where, value))
        else:
            _bad_line(DataError(where, f"expected a JSON object {{...}}, got {_kind(value)}"), bad_lines)
    return rows


def _on_bad_line(name: str, bad_lines: list[DataError] | None) -> BadLine:
    """Text that is not UTF-8 always stops the read; a line that is not JSON is recorded in `bad_lines` if given."""

    def report(line_no: int, error: ValueError) -> None:
        where = f"{name} line {line_no}"
        if isinstance(error, UnicodeDecodeError):
            raise _not_utf8(where, error.object[error.start], name) from error
        if not isinstance(error, json.JSONDecodeError):
            raise error
        problem = f"invalid JSON: {error.msg} (column {error.colno})"
        _bad_line(DataError(where, problem, fix="each line must be one JSON object"), bad_lines)

    return report


def _bad_line(error: DataError, bad_lines: list[DataError] | None) -> None:
    if bad_lines is None:
        raise error from None
    bad_lines.append(error)


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
