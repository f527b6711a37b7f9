"""Numbers as people read them in tables and reports, formatted the same way everywhere."""

from __future__ import annotations

from typing import Any

MISSING = "—"


def percent(value: Any, digits: int = 1) -> str:
    """A fraction as a percentage, `0.1234` → `12.3%`; anything that is not a number (None, a string) → `—`."""
    return f"{value:.{digits}%}" if isinstance(value, int | float) else MISSING
