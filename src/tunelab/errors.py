"""Errors a user can act on.

Every error tunelab raises on purpose is a `TunelabError`; the CLI prints its message without a traceback and exits
non-zero. Messages name the file, record or field and say how to fix the problem.
"""

from __future__ import annotations


class TunelabError(Exception):
    """Base class: the message is shown to the user as is."""

    exit_code = 1


class RecipeError(TunelabError):
    """A recipe has one or more problems; all are reported at once."""

    exit_code = 2

    def __init__(self, source: str, problems: list[tuple[str, str]]):
        self.source = source
        self.problems = problems
        count = len(problems)
        lines = [f"{source} is not valid ({count} problem{'s' if count != 1 else ''}):"]
        lines += [f"  {where}: {what}" if where else f"  {what}" for where, what in problems]
        super().__init__("\n".join(lines))


class DataError(TunelabError):
    """A data file or record cannot be used. `where` is e.g. `orders.jsonl line 12` or `data.json record 3`."""

    def __init__(self, where: str, problem: str, fix: str = ""):
        self.where = where
        self.problem = problem
        self.fix = fix
        message = f"{where}: {problem}"
        if fix:
            message += f"\n  fix: {fix}"
        super().__init__(message)


class ModelError(TunelabError):
    """A model cannot be found, loaded or converted."""


class RunError(TunelabError):
    """A run directory is missing, incomplete or would be overwritten."""
