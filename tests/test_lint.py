"""ruff on the source with the project's rules (pyproject.toml), complexity and size per function included, so that a
test run enforces them as `make lint` does; and every per-file exception there is still needed, so the list of
exceptions only shrinks."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def ruff() -> list[str]:
    if importlib.util.find_spec("ruff") is not None:
        return [sys.executable, "-m", "ruff"]
    if shutil.which("ruff"):
        return ["ruff"]
    pytest.skip("ruff is not installed")


def per_file_ignores() -> dict[str, list[str]]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return config["tool"]["ruff"]["lint"].get("per-file-ignores", {})


def test_ruff_passes_on_the_source():
    done = subprocess.run([*ruff(), "check", "--no-cache", "src"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_each_per_file_exception_is_still_needed():
    for path, rule in [(path, rule) for path, rules in sorted(per_file_ignores().items()) for rule in rules]:
        command = [*ruff(), "check", "--no-cache", "--select", rule, "--config", "lint.per-file-ignores = {}", path]
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        assert done.returncode == 1, (
            f"{path} passes {rule} now (or is gone): remove it from [tool.ruff.lint.per-file-ignores] in pyproject.toml"
            f"\n{done.stdout}{done.stderr}"
        )
