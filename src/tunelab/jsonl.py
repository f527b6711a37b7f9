"""JSON Lines: the one reader and the one writer behind every .jsonl file tunelab reads or writes.

Lines are split at "\\n" only (`str.splitlines` would also break at U+2028 and other characters that JSON strings
may hold unescaped) and a byte-order mark before the first line is dropped. Blank lines are skipped.

A line that cannot be read (not UTF-8, or not JSON) raises by default. A caller that tolerates such lines passes
`on_bad_line(line_number, error)`: it is called instead and the line is skipped, unless the callback raises. `skip`
drops bad lines silently (a line cut off by a kill, or being written right now); a callback can collect them to list
every bad line of a file at once, or turn the error into the caller's own message.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from tunelab.runs import write_atomic

BadLine = Callable[[int, ValueError], None]
"""Called with a bad line's 1-based number and its error: UnicodeDecodeError, json.JSONDecodeError, or the plain
ValueError json raises for an integer too long to convert."""


class LineTooLong(ValueError):
    """A line longer than `max_line_bytes`: the file is almost surely not JSON Lines, so reading stops."""

    def __init__(self, line: int, limit: int):
        super().__init__(f"line {line} is longer than {limit} bytes")
        self.line, self.limit = line, limit


def skip(line: int, error: ValueError) -> None:
    """An `on_bad_line` that drops the line."""


def parse_lines(lines: Iterable[tuple[int, str]], on_bad_line: BadLine | None = None) -> Iterator[tuple[int, Any]]:
    """(line number, JSON value) for each non-blank (line number, text); see the module docstring for bad lines."""
    for number, text in lines:
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except ValueError as error:  # json.JSONDecodeError, or an integer too long to convert
            if on_bad_line is None:
                raise
            on_bad_line(number, error)
            continue
        yield number, value


def iter_jsonl(
    path: str | Path,
    on_bad_line: BadLine | None = None,
    *,
    errors: str = "strict",
    max_line_bytes: int | None = None,
) -> Iterator[tuple[int, Any]]:
    """Stream (line number, JSON value) from a file without holding it in memory.

    `errors` is the UTF-8 decoding policy ("replace" reads damaged text instead of reporting the line as bad); a line
    over `max_line_bytes` raises `LineTooLong` whatever `on_bad_line` does.
    """
    return parse_lines(_file_lines(Path(path), on_bad_line, errors, max_line_bytes), on_bad_line)


def read_jsonl(
    path: str | Path, on_bad_line: BadLine | None = None, *, errors: str = "strict", missing_ok: bool = False
) -> list[Any]:
    """The JSON values of a file's lines, in order; with `missing_ok`, a file that does not exist reads as []."""
    path = Path(path)
    if missing_ok and not path.is_file():
        return []
    return [value for _, value in iter_jsonl(path, on_bad_line, errors=errors)]


def _file_lines(path: Path, on_bad_line: BadLine | None, errors: str, limit: int | None) -> Iterator[tuple[int, str]]:
    with path.open("rb") as handle:
        number = 0
        while raw := handle.readline(-1 if limit is None else limit + 1):
            number += 1
            if limit is not None and len(raw) > limit:
                raise LineTooLong(number, limit)
            try:
                yield number, raw.decode("utf-8-sig" if number == 1 else "utf-8", errors=errors)
            except UnicodeDecodeError as error:
                if on_bad_line is None:
                    raise
                on_bad_line(number, error)


def jsonl_text(records: Iterable[Any]) -> str:
    """One JSON value per line, non-ASCII text kept as it is."""
    return "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


def write_jsonl(path: str | Path, records: Iterable[Any]) -> None:
    """Write records as JSON Lines atomically (a temporary name, then renamed), creating the folder if needed."""
    write_atomic(Path(path), jsonl_text(records))
