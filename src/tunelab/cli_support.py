"""What the command line does around every verb: a bug reported as one (not as the user's fault), and plain output
when piped."""

from __future__ import annotations

import os
import sys

INTERNAL_ERROR = 70  # EX_SOFTWARE: a bug in tunelab (a TunelabError exits 1, or 2 for a recipe problem)


def internal_error(error: Exception) -> int:
    """An exception that is not a TunelabError is a bug in tunelab, not a problem with the user's input: one line
    that says so, the traceback in a file to attach to a bug report (TUNELAB_DEBUG=1 raises it instead)."""
    import tempfile
    import traceback

    if os.environ.get("TUNELAB_DEBUG"):
        raise error
    text = "".join(traceback.format_exception(error))
    with tempfile.NamedTemporaryFile("w", prefix="tunelab-error-", suffix=".txt", delete=False) as handle:
        handle.write(text)
    print(f"error: internal error ({type(error).__name__}: {error}). This is a bug in tunelab, not in your input; "
          f"the traceback is in {handle.name} (run with TUNELAB_DEBUG=1 to see it here).", file=sys.stderr)  # fmt: skip
    return INTERNAL_ERROR


def quiet_bars_when_piped() -> None:
    """Output to a file or a pipe gets plain lines: no `\r` progress-bar frames from the libraries underneath."""
    if not sys.stderr.isatty():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # also transformers' bars
        os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TQDM_DISABLE", "1")  # plain tqdm bars, e.g. transformers' GGUF conversion


def adapter_names(items: list[str]) -> dict[str, str]:
    from tunelab.errors import TunelabError

    adapters = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise TunelabError(f"--adapter {item!r}: write NAME=PATH, e.g. --adapter orders=runs/orders")
        if name in adapters:
            raise TunelabError(f"--adapter {name!r} is given twice; each adapter needs its own name")
        adapters[name] = path
    return adapters


def key_from_env(variable: str | None, flag: str) -> str | None:
    from tunelab.errors import TunelabError

    if variable is None:
        return None
    key = os.environ.get(variable, "")
    if not key:
        raise TunelabError(f"{flag} {variable}: that environment variable is empty; export a key in it first")
    return key
