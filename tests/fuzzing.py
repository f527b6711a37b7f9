"""Shared pieces of the property-based tests of tunelab's entry points (tests/fuzz, tests/serve/test_fuzz_http.py).

Every fuzz test is deterministic (`derandomize=True`, no example database) and bounded (a fixed number of
examples), so that CI runs the same cases every time. Each test counts the cases it actually tried in `CASES`;
pytest's summary prints the counts per entry point (tests/conftest.py).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

CASES: Counter[str] = Counter()


def fuzz_settings(examples: int):
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
    )


# Values a YAML or JSON file may hold where something else was expected: wrong types, empty, huge, unicode.
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=24)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
    st.sampled_from(["", " ", "lora", "null", "1e-3", "-1", "0", "🙂", "订单", "../x", "/dev/null", "\x00", "a" * 300]),
)
JUNK = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                    max_leaves=6)  # fmt: skip


def tree_digest(folder: Path) -> str:
    """A digest of every file (name and bytes) under a folder: an earlier run must come out of fuzzing unchanged."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def no_traceback(*texts: str) -> None:
    for text in texts:
        assert "Traceback" not in text, text
