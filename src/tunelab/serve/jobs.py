"""A request as the engine sees it (`Job`, decoded as one `Row` per choice) and what the engine reports back about
it, as typed events on the job's asyncio queue: a piece of a choice's text, a choice's end, or an error that ends the
whole request."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

import torch

from tunelab.serve.errors import ServeError
from tunelab.serve.sampling import Sampling


@dataclass(frozen=True)
class TextEvent:
    """New text of one choice, safe to show (not inside a possible stop sequence, not half a character)."""

    choice: int
    text: str


@dataclass(frozen=True)
class FinishEvent:
    """One choice is done: why (`stop` or `length`) and how many tokens it generated."""

    choice: int
    reason: str
    tokens: int


@dataclass(frozen=True)
class ErrorEvent:
    """The request failed (`GenerationTimeout`, `GenerationFailed`); no more events follow that matter."""

    error: ServeError


Event = TextEvent | FinishEvent | ErrorEvent


class Job:
    """One API request: prompts × n sequences; results arrive as events on an asyncio queue."""

    def __init__(self, model: str, prompts: list[list[int]], sampling: Sampling, n: int, loop, timeout_s: float):
        self.model, self.prompts, self.sampling, self.n, self.loop = model, prompts, sampling, n, loop
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.cancelled = threading.Event()
        self.deadline = time.monotonic() + timeout_s
        self.rows = len(prompts) * n
        self.checked_at = 0.0  # when the HTTP layer last checked that the client is still there

    def emit(self, event: Event) -> None:
        """Hand `event` to the request's event loop (called from the engine's worker thread)."""
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)

    def cancel(self) -> None:
        self.cancelled.set()


@dataclass
class Row:
    """One sequence the engine decodes: a job's prompt and choice, its own generator, what it produced so far."""

    job: Job
    choice: int
    prompt: list[int]
    generator: torch.Generator | None
    tokens: list[int] = field(default_factory=list)
    sent: int = 0  # characters of text already emitted
    finish: str | None = None
