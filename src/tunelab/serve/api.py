"""What the app (`app.py`) and the route table (`routes.py`) share: the server's settings, OpenAI-shaped errors and
the one table (`STATUS`) that turns a typed failure into its HTTP status, reading and validating requests (`Api`), and
turning a job's events into a whole answer (`collect`) or a stream of server-sent events (`stream`).

Nothing here imports the app or the routes: `routes` imports this module, `app` imports both.
"""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from tunelab.errors import TunelabError
from tunelab.serve.engine import Engine
from tunelab.serve.errors import STATUS
from tunelab.serve.jobs import Event, FinishEvent, Job, TextEvent
from tunelab.serve.sampling import Sampling
from tunelab.serve.schemas import FIELD_NAMES, ChatCompletionRequest, error_body, usage


@dataclass
class ServeSettings:
    api_key: str | None = None
    admin_key: str | None = None
    max_body_bytes: int = 1_000_000
    max_messages: int = 256
    max_prompt_tokens: int = 4096
    max_tokens: int = 2048  # the most a request may ask for
    default_max_tokens: int = 512  # when a request does not say
    max_n: int = 8
    retry_after_s: int = 1
    default_system: bool = True  # a run's shared training system prompt for chat requests that bring none


class OpenAIJSONResponse(JSONResponse):
    """Starlette's JSON, except that a lone surrogate (a `\\ud800` escape in a request, echoed in an error message) is
    written back as that same JSON escape instead of failing to encode as UTF-8."""

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        return text.encode("utf-8", errors="backslashreplace")  # only surrogates, only ever inside JSON strings


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):  # fmt: skip
        super().__init__(message)
        self.status, self.body, self.headers = status, error_body(message, kind, param, code), headers


def error_response(error: ApiError) -> JSONResponse:
    return OpenAIJSONResponse(error.body, status_code=error.status, headers=error.headers)


def api_error(error: TunelabError, retry_after_s: int) -> ApiError:
    """`error` as the API answers it: the entry of `STATUS` for its type or the nearest base class in it."""
    status = next(STATUS[kind] for kind in type(error).__mro__ if kind in STATUS)
    headers = {"Retry-After": str(retry_after_s)} if status.retry_after else None
    return ApiError(status.status, str(error), status.kind, status.param, status.code, headers)


async def read_json(request: Request, limit: int) -> Any:
    """The body as JSON, refusing more than `limit` bytes without reading past them."""
    declared = request.headers.get("content-length")
    if declared and declared.isascii() and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the request body is larger than {limit} bytes", code="request_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"the request body is larger than {limit} bytes", code="request_too_large")
    try:
        return json.loads(body)
    except RecursionError:  # not a ValueError: the parser's own stack limit, e.g. 100,000 nested arrays
        raise ApiError(400, "the request body nests arrays or objects too deeply", code="invalid_json") from None
    except ValueError as error:  # also invalid UTF-8 (UnicodeDecodeError) and integers of more than 4300 digits
        raise ApiError(400, f"the request body is not valid JSON ({error})", code="invalid_json") from None


def parse(model_class, payload: Any):
    if not isinstance(payload, dict):
        raise ApiError(400, "the request body must be a JSON object")
    try:
        return model_class.model_validate(payload)
    except ValidationError as error:
        where, message = _first_problem(error.errors())
        raise ApiError(400, f"{where}: {message}" if where else message, param=where) from None


def _first_problem(errors: list[dict]) -> tuple[str | None, str]:
    """(parameter path, message) of the most specific error about the first field that has one.

    pydantic adds the name of each member of a union to the location (`content.str`, `content.list[TextPart]`);
    those are dropped, and of the alternatives the deepest is reported: for a content part of an unknown type, the
    part's `type`, not "should be a valid string"."""
    paths = [_param_path(e) for e in errors]
    head = paths[0][:1]
    index = max((i for i, path in enumerate(paths) if path[:1] == head), key=lambda i: len(paths[i]))
    where = ".".join(str(part) for part in paths[index]) or None
    return where, errors[index]["msg"].removeprefix("Value error, ")


def _param_path(error: dict) -> list[str | int]:
    """The error's location without union member names; an unknown field (where refused) keeps its own name."""
    last = len(error["loc"]) - 1 if error["type"] == "extra_forbidden" else -1
    return [part for i, part in enumerate(error["loc"]) if isinstance(part, int) or part in FIELD_NAMES or i == last]


def check_key(request: Request, key: str | None, admin: bool = False) -> None:
    if key is None:
        return
    given = request.headers.get("authorization", "")
    token = given[7:] if given.lower().startswith("bearer ") else ""
    if not hmac.compare_digest(token.encode(), key.encode()):
        what = "admin key" if admin else "API key"
        raise ApiError(401, f"missing or wrong {what}: send 'Authorization: Bearer <key>'", code="invalid_api_key")


class Api:
    """Request handling, separate from the route table so each piece stays small."""

    def __init__(self, engine: Engine, settings: ServeSettings):
        self.engine, self.settings = engine, settings

    def check_model(self, name: str) -> None:
        if name not in self.engine.names:
            served = ", ".join(self.engine.names)
            raise ApiError(404, f"the model {name!r} does not exist; served: {served}", param="model",
                           code="model_not_found")  # fmt: skip

    def tokenizer(self, name: str):
        """The model's tokenizer; 404 for an adapter unloaded since `check_model`."""
        tokenizer = self.engine.tokenizers.get(name)
        if tokenizer is None:
            self.check_model(name)
            raise ApiError(404, f"the model {name!r} was unloaded meanwhile", param="model", code="model_not_found")
        return tokenizer

    def default_system(self, name: str) -> str | None:
        """The system prompt a chat request for `name` gets when it has none: its run's shared training prompt."""
        return self.engine.system_prompts.get(name) if self.settings.default_system else None

    def sampling(self, body, limit: int | None) -> Sampling:
        max_tokens = limit or min(self.settings.default_max_tokens, self.settings.max_tokens)
        if max_tokens > self.settings.max_tokens:
            raise ApiError(400, f"max_tokens is {max_tokens}; this server allows at most {self.settings.max_tokens}",
                           param="max_tokens")  # fmt: skip
        if (body.n or 1) > self.settings.max_n:
            raise ApiError(400, f"n is {body.n}; this server allows at most {self.settings.max_n}", param="n")
        temperature = 1.0 if body.temperature is None else body.temperature
        top_p = 1.0 if body.top_p is None else body.top_p
        return Sampling(max_tokens, temperature, top_p, body.stop or [], body.seed)

    def check_prompt(self, ids: list[int], param: str) -> None:
        if len(ids) > self.settings.max_prompt_tokens:
            limit = self.settings.max_prompt_tokens
            message = f"the prompt has {len(ids)} tokens; this server allows at most {limit}"
            raise ApiError(400, message, param=param, code="context_length_exceeded")

    def chat_prompt(self, body: ChatCompletionRequest) -> list[int]:
        from tunelab.data.tokenize import _as_ids

        if len(body.messages) > self.settings.max_messages:
            raise ApiError(400, f"{len(body.messages)} messages; this server allows at most "
                           f"{self.settings.max_messages}", param="messages")  # fmt: skip
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in body.messages]
        system = self.default_system(body.model)
        if system and all(m["role"] != "system" for m in messages):
            messages.insert(0, {"role": "system", "content": system})
        tokenizer = self.tokenizer(body.model)
        try:
            ids = _as_ids(tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                        return_dict=False))  # fmt: skip
        except Exception as error:  # the template's own checks (e.g. roles must alternate)
            raise ApiError(400, f"the model's chat template rejected the messages: {error}", param="messages") from None
        self.check_prompt(ids, "messages")
        return ids

    def submit(self, body, prompts: list[list[int]], sampling: Sampling) -> Job:
        job = Job(body.model, prompts, sampling, body.n or 1, asyncio.get_running_loop(),
                  self.engine.settings.request_timeout_s)  # fmt: skip
        limit = self.engine.settings.max_queued_rows
        if job.rows > limit:  # a 429 would never clear: the queue cannot hold this request even when empty
            raise ApiError(400, f"the request asks for {job.rows} sequences (prompts × n); this server takes at most "
                           f"{limit} at once", param="n" if len(prompts) == 1 else "prompt")  # fmt: skip
        self.engine.submit(job)  # `Overloaded` when the queue is full: 429
        return job


async def _next_event(job: Job, request: Request) -> Event:
    """The job's next event; cancels the job when the client has gone away (checked at least twice a second, also
    while text keeps arriving, so an abandoned non-streamed request does not decode to the end)."""
    loop = asyncio.get_running_loop()
    while True:
        if loop.time() - job.checked_at > 0.5:
            job.checked_at = loop.time()
            if await request.is_disconnected():
                job.cancel()
                raise asyncio.CancelledError
        try:
            return await asyncio.wait_for(job.events.get(), timeout=0.5)
        except TimeoutError:
            continue


async def collect(job: Job, request: Request) -> tuple[list[str], list[str], int]:
    """(text per choice, finish reason per choice, completion tokens) once every choice is done."""
    texts, reasons, tokens = [""] * job.rows, [""] * job.rows, 0
    remaining = job.rows
    try:
        while remaining:
            event = await _next_event(job, request)
            if isinstance(event, TextEvent):
                texts[event.choice] += event.text
            elif isinstance(event, FinishEvent):
                reasons[event.choice], tokens, remaining = event.reason, tokens + event.tokens, remaining - 1
            else:
                raise event.error  # answered by its type: `STATUS`
    finally:
        job.cancel()  # a no-op when finished; stops the rows of a request that failed or was abandoned
    return texts, reasons, tokens


def _sse(payload: Any) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


async def stream(job: Job, request: Request, chunk, prompt_tokens: int, include_usage: bool) -> AsyncIterator[str]:
    """SSE chunks as text arrives; `chunk(choice, text, finish)` builds one choice's chunk object."""
    tokens, remaining = 0, job.rows
    try:
        for choice in range(job.rows):
            yield _sse(chunk(choice, None, None))
        while remaining:
            event = await _next_event(job, request)
            if isinstance(event, TextEvent):
                yield _sse(chunk(event.choice, event.text, None))
            elif isinstance(event, FinishEvent):
                tokens, remaining = tokens + event.tokens, remaining - 1
                yield _sse(chunk(event.choice, "", event.reason))
            else:
                yield _sse(api_error(event.error, 0).body)  # the status line went out with the first chunk
                break
        if include_usage:
            yield _sse(chunk(None, None, None) | {"choices": [], "usage": usage(prompt_tokens, tokens)})
        yield "data: [DONE]\n\n"
    finally:
        job.cancel()
