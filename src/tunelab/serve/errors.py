"""What the server refuses or fails at, one type per answer: `STATUS` below maps each type to its HTTP status, so no
status is ever chosen by reading an error's message. Raised where the problem is found (the engine, the adapter
loader) and, for generation on the worker thread, carried to the request by an `ErrorEvent`."""

from __future__ import annotations

from dataclasses import dataclass

from tunelab.errors import ModelError, TunelabError


class ServeError(TunelabError):
    """A request the server took but cannot answer now."""


class Overloaded(ServeError):
    """The queue is full; the client should retry later."""


class GenerationTimeout(ServeError):
    """A request ran past the server's time limit."""


class GenerationFailed(ServeError):
    """Generation itself failed (a bug, out of memory); the server goes on."""


class ModelAlreadyServed(ModelError):
    """An adapter would be loaded under a name the server already serves."""


class AdapterUnusable(ModelError):
    """An adapter path is missing, unreadable or not an adapter for the served base model."""


class AdapterNotLoaded(ModelError):
    """An adapter to unload is not loaded."""


@dataclass(frozen=True)
class Status:
    """How a failure of one type is answered; `retry_after`: with a `Retry-After` header."""

    status: int
    kind: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    retry_after: bool = False


STATUS: dict[type[TunelabError], Status] = {
    Overloaded: Status(429, "rate_limit_error", code="overloaded", retry_after=True),
    GenerationTimeout: Status(504, "server_error"),
    GenerationFailed: Status(500, "server_error"),
    ModelAlreadyServed: Status(409, param="name"),
    AdapterUnusable: Status(400, param="path"),
    AdapterNotLoaded: Status(404, param="name", code="model_not_found"),
    TunelabError: Status(400),  # any other error a user can act on
}
