"""The shape of the source: no function or method of src/tunelab over 80 lines, no module over 400 lines, and no
stretch of six or more lines written twice (the `duplicates` tool, where it is installed).

A long function or module is split where it does two things; one that must stay whole goes in an allow-list below
with its reason. The allow-lists only shrink: an entry that no longer exceeds its limit fails the test, so it is
removed as soon as the code is split. Complexity, branches and statements per function are ruff's (pyproject.toml,
checked by tests/test_lint.py).
"""

from __future__ import annotations

import ast
import shutil
import subprocess
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "tunelab"
MAX_FUNCTION_LINES = 80
MAX_FILE_LINES = 400

# "tunelab/path.py::Class.method" (nested functions: "outer.inner") → why it stays longer than the limit
LONG_FUNCTIONS: dict[str, str] = {}
# "tunelab/path.py" → why it stays longer than the limit
LONG_FILES: dict[str, str] = {}
# ("tunelab/a.py", "tunelab/b.py"), in the order `duplicates` names them → why the repeated lines stay
DUPLICATES: dict[tuple[str, str], str] = {}


def source_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def name_of(path: Path) -> str:
    return path.relative_to(SRC).as_posix()


def function_lengths(path: Path) -> dict[str, int]:
    """Qualified name → lines from `def` to the function's last line (its docstring and nested functions included)."""
    lengths: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                qualified = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    lengths[qualified] = child.end_lineno - child.lineno + 1
                visit(child, qualified + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)), "")
    return lengths


def check_allow_list(found: dict, allowed: dict, what: str, limit: str, fix: str = "split them") -> None:
    over = {key: size for key, size in found.items() if key not in allowed}
    stale = sorted(set(allowed) - set(found))
    assert not over, f"{what} over {limit}: {over}; {fix} (or, if one must stay, allow-list it with why)"
    assert not stale, f"allow-listed {what} no longer over {limit} (or gone): remove {stale} from the allow-list"


def test_no_function_is_longer_than_80_lines():
    found = {
        f"{name_of(path)}::{name}": length
        for path in source_files()
        for name, length in function_lengths(path).items()
        if length > MAX_FUNCTION_LINES
    }
    check_allow_list(found, LONG_FUNCTIONS, "functions", f"{MAX_FUNCTION_LINES} lines")


def test_no_module_is_longer_than_400_lines():
    found = {name_of(path): len(path.read_text(encoding="utf-8").splitlines()) for path in source_files()}
    found = {name: lines for name, lines in found.items() if lines > MAX_FILE_LINES}
    check_allow_list(found, LONG_FILES, "modules", f"{MAX_FILE_LINES} lines")


def duplicate_rows(output: str) -> list[tuple[str, str, str]]:
    """(row, first file, second file) of each row `D1 a.py:10-24 ~ b.py:40-54 [shape] [boilerplate] ...`."""
    rows = []
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0][:1] == "D" and parts[0][1:].isdigit() and parts[2] == "~":
            rows.append((line, parts[1].rsplit(":", 1)[0], parts[3].rsplit(":", 1)[0]))
    return rows


@pytest.mark.skipif(shutil.which("duplicates") is None, reason="the `duplicates` tool is not installed")
def test_no_lines_are_written_twice():
    """Pairs of six or more lines alike (to the letter or in shape), boilerplate aside: one function serves both."""
    done = subprocess.run(["duplicates", "--repo", str(SRC), "--most", "200", "--seconds", "120"],
                          capture_output=True, text=True, timeout=300, check=True)  # fmt: skip
    assert "incomplete:" not in done.stdout and "more pairs)" not in done.stdout, done.stdout  # every pair listed
    rows = [row for row in duplicate_rows(done.stdout) if "boilerplate" not in row[0].split()]
    found = {(first, second): row for row, first, second in rows}
    check_allow_list(found, DUPLICATES, "repeated lines", "six lines", fix="make one function serve both places")
