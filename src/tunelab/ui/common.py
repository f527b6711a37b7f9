"""What every tab shares: the workspace, the words, and the rule that an error is shown in the page, in plain words.

A tab module holds `TEXT` (its words in English and Chinese) and `build(ctx)`, which adds its components inside a
`gr.Tab`; handlers are small functions of the component values that call the library or `jobs`.
"""

from __future__ import annotations

import contextlib
import functools
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from tunelab.errors import TunelabError
from tunelab.ui.i18n import Labels
from tunelab.ui.workspace import UIError, Workspace


@dataclass
class UIContext:
    workspace: Workspace
    labels: Labels = field(default_factory=Labels)
    shared: dict[str, Any] = field(default_factory=dict)  # components one tab offers another (e.g. the run picker)

    def t(self, key: str) -> str:
        return self.labels.text(key)


@contextlib.contextmanager
def message_tab(ctx: UIContext, c: dict[str, Any], text: dict, name: str, prefix: str) -> Iterator[None]:
    """Add a tab's words (`text`) and open its `gr.Tab` (`c["tab"]`, relabelled on a language switch) with the line
    for its messages on top (`c["message"]`, elem_id `<prefix>-message`); what the `with` makes goes below it."""
    import gradio as gr

    ctx.labels.add(text)
    with gr.Tab(ctx.t(f"tab.{name}"), id=name, elem_id=f"tab-{name}") as c["tab"]:
        ctx.labels.follow(c["tab"], f"tab.{name}")
        c["message"] = gr.Markdown(elem_id=f"{prefix}-message", elem_classes="message")
        yield


def problem_text(error: BaseException) -> str:
    """An error as the page shows it: tunelab's own messages as they are (they name the file and the fix); anything
    else is a bug, said so, with its type (the UI's console has the traceback)."""
    if isinstance(error, TunelabError):
        return f"⚠️ {error}"
    if isinstance(error, OSError):
        return f"⚠️ {error.strerror or error}: {getattr(error, 'filename', '') or ''}".rstrip(": ")
    traceback.print_exception(error)
    return f"⚠️ unexpected {type(error).__name__}: {error} (a bug in tunelab's UI; the server console has details)"


def guarded(outputs: int, message: int = 0) -> Callable:
    """Decorate a handler with `outputs` return values so that an error becomes the text of output `message` and the
    other outputs stay as they are (gr.skip), instead of a red toast or a console-only traceback."""

    def decorate(handler: Callable) -> Callable:
        @functools.wraps(handler)
        def wrapper(*args, **kwargs):
            import gradio as gr

            try:
                return handler(*args, **kwargs)
            except (TunelabError, OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
                values = [gr.skip()] * outputs
                values[message] = problem_text(error)
                return tuple(values) if outputs > 1 else values[0]

        return wrapper

    return decorate


def fail(message: str) -> None:
    raise UIError(message)
