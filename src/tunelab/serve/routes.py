"""The route table: health, models, chat and text completions, adapter administration."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from tunelab.serve.api import Api, ApiError, ServeSettings, check_key, collect, parse, read_json, stream
from tunelab.serve.schemas import AdapterLoad, ChatCompletionRequest, CompletionRequest, new_id, now, usage

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def add_routes(app: FastAPI, api: Api, settings: ServeSettings) -> None:
    engine = api.engine

    @app.get("/health")
    async def health() -> dict[str, Any]:
        alive = engine.worker.is_alive()
        return {"status": "ok" if alive else "down", "models": engine.names, "queued": engine.queued_rows,
                "decoder": engine.decoder.path, "stats": engine.stats}  # fmt: skip

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        check_key(request, settings.api_key)
        created = now()
        data = [{"id": name, "object": "model", "created": created, "owned_by": "tunelab",
                 "parent": None if name == engine.base_name else engine.base_name, "root": engine.base_name,
                 "default_system_prompt": api.default_system(name)} for name in engine.names]  # fmt: skip
        return {"object": "list", "data": data}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body, sampling = await _request(api, request, ChatCompletionRequest)
        prompt = api.chat_prompt(body)
        job = api.submit(body, [prompt], sampling)
        ident, created = new_id("chatcmpl"), now()
        if body.stream:

            def chunk(choice, text, finish):
                return _chat_chunk(ident, created, body.model, choice, text, finish)

            return _streaming(job, request, chunk, len(prompt), body)
        texts, reasons, tokens = await collect(job, request)
        choices = [
            {"index": i, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": why}
            for i, (text, why) in enumerate(zip(texts, reasons, strict=True))
        ]
        return {"id": ident, "object": "chat.completion", "created": created, "model": body.model,
                "choices": choices, "usage": usage(len(prompt), tokens)}  # fmt: skip

    _add_text_completions(app, api)
    _add_admin_routes(app, api, settings)


def _add_text_completions(app: FastAPI, api: Api) -> None:
    @app.post("/v1/completions")
    async def completions(request: Request):
        body, sampling = await _request(api, request, CompletionRequest)
        tokenizer = api.tokenizer(body.model)
        prompts = [tokenizer(text)["input_ids"] for text in body.prompts()]
        for ids in prompts:
            api.check_prompt(ids, "prompt")
        if any(not ids for ids in prompts):
            raise ApiError(400, "the prompt is empty", param="prompt")
        job = api.submit(body, prompts, sampling)
        ident, created, prompt_tokens = new_id("cmpl"), now(), sum(len(p) for p in prompts)
        if body.stream:

            def chunk(choice, text, finish):
                return {"id": ident, "object": "text_completion", "created": created, "model": body.model,
                        "choices": [] if choice is None else
                        [{"index": choice, "text": text or "", "logprobs": None, "finish_reason": finish}]}  # fmt: skip

            return _streaming(job, request, chunk, prompt_tokens, body)
        texts, reasons, tokens = await collect(job, request)
        choices = [{"index": i, "text": text, "logprobs": None, "finish_reason": reason}
                   for i, (text, reason) in enumerate(zip(texts, reasons, strict=True))]  # fmt: skip
        return {"id": ident, "object": "text_completion", "created": created, "model": body.model,
                "choices": choices, "usage": usage(prompt_tokens, tokens)}  # fmt: skip


def _add_admin_routes(app: FastAPI, api: Api, settings: ServeSettings) -> None:
    engine = api.engine

    @app.post("/admin/adapters", status_code=201)
    async def load_adapter(request: Request):
        _admin(request, settings)
        body = parse(AdapterLoad, await read_json(request, settings.max_body_bytes))
        await asyncio.to_thread(engine.load_adapter, body.name, body.path)  # 409 or 400 by the error's type
        return {"id": body.name, "object": "model", "parent": engine.base_name, "path": engine.adapter_paths[body.name],
                "default_system_prompt": api.default_system(body.name)}  # fmt: skip

    @app.delete("/admin/adapters/{name}")
    async def unload_adapter(name: str, request: Request):
        _admin(request, settings)
        await asyncio.to_thread(engine.unload_adapter, name)  # `AdapterNotLoaded`: 404
        return JSONResponse({"id": name, "object": "model", "deleted": True})


async def _request(api: Api, request: Request, model_class):
    """(validated body, sampling settings) of an inference request: key, size, JSON, fields, model, limits."""
    check_key(request, api.settings.api_key)
    body = parse(model_class, await read_json(request, api.settings.max_body_bytes))
    api.check_model(body.model)
    return body, api.sampling(body, body.token_limit())


def _streaming(job, request: Request, chunk, prompt_tokens: int, body) -> StreamingResponse:
    include = bool(body.stream_options and body.stream_options.include_usage)
    events = stream(job, request, chunk, prompt_tokens, include)
    return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS)


def _chat_chunk(ident: str, created: int, model: str, choice: int | None, text: str | None, finish: str | None):
    """A chat.completion.chunk: the opening one (role), a piece of text, or a choice's last one (finish_reason)."""
    head = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": model}
    if choice is None:
        return head | {"choices": []}
    if text is None and finish is None:
        delta = {"role": "assistant", "content": ""}
    else:
        delta = {"content": text} if text else {}
    return head | {"choices": [{"index": choice, "delta": delta, "logprobs": None, "finish_reason": finish}]}


def _admin(request: Request, settings: ServeSettings) -> None:
    if settings.admin_key is None:
        raise ApiError(403, "adapter administration is off: start the server with --admin-key-env VAR",
                       kind="permission_error")  # fmt: skip
    check_key(request, settings.admin_key, admin=True)
