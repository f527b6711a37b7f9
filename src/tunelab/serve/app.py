"""The OpenAI-compatible HTTP API around an `Engine`: `create_app(engine, settings)`.

Every request is read, size-checked, parsed and validated before anything is queued or a byte is streamed; every
error has OpenAI's shape `{"error": {"message", "type", "param", "code"}}` and a 4xx status for bad input (the body is
read as JSON whatever its Content-Type says); 429 with `Retry-After` when the queue is full; an unexpected failure in
a route answers 500 `server_error` in the same shape, without a traceback. Inference routes need
`Authorization: Bearer <key>` when a key is set, admin routes their own key; keys are compared in constant time.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunelab.errors import TunelabError
from tunelab.serve.api import Api, ApiError, OpenAIJSONResponse, ServeSettings, api_error, error_response
from tunelab.serve.engine import Engine
from tunelab.serve.routes import add_routes
from tunelab.serve.schemas import AdapterLoad, ChatCompletionRequest, CompletionRequest


def create_app(engine: Engine, settings: ServeSettings | None = None) -> FastAPI:
    settings = settings or ServeSettings()
    app = FastAPI(title="tunelab", docs_url=None, redoc_url=None, default_response_class=OpenAIJSONResponse)
    api = Api(engine, settings)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, error: ApiError):
        return error_response(error)

    @app.exception_handler(TunelabError)
    async def _tunelab_error(request: Request, error: TunelabError):  # by its type: `api.STATUS`
        return error_response(api_error(error, settings.retry_after_s))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, error: StarletteHTTPException):
        kind = "not_found_error" if error.status_code == 404 else "invalid_request_error"
        return error_response(ApiError(error.status_code, str(error.detail), kind=kind))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, error: Exception):  # a bug; Starlette re-raises it for the server log
        message = f"the server failed on this request ({type(error).__name__}); its log has the details"
        return error_response(ApiError(500, message, kind="server_error"))

    add_routes(app, api, settings)
    app.state.engine, app.state.settings = engine, settings
    return app


__all__ = ["AdapterLoad", "ApiError", "ChatCompletionRequest", "CompletionRequest", "ServeSettings", "create_app"]
