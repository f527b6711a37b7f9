"""Property-based fuzzing of the HTTP API: whatever arrives, on every route, with or without the right keys, the answer
is never a 5xx, every error has exactly OpenAI's shape, no response shows a traceback, and a 2xx stream holds no error.

The app runs in-process (Starlette's TestClient) on a real `Engine` with the tiny model and one adapter served from a
run directory; generation is capped at a few tokens, so a valid request costs milliseconds. The runs are deterministic
(derandomized, no example database); `pytest -s` prints how many requests each route got.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from serving import make_run

from fuzzing import CASES

KEY, ADMIN = "fuzz-key", "fuzz-admin"
CHAT, TEXT, ADAPTERS, DELETE = "/v1/chat/completions", "/v1/completions", "/admin/adapters", "/admin/adapters/{name}"
METHODS = {"/health": "GET", "/v1/models": "GET", CHAT: "POST", TEXT: "POST", ADAPTERS: "POST", DELETE: "DELETE"}
SENT: Counter = Counter()  # requests sent, per route
STATUSES: Counter = Counter()  # (route, status)
HI = '{"role": "user", "content": "hi"}'
FUZZ = {"derandomize": True, "database": None, "deadline": None,
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}  # fmt: skip

# --- what goes into requests ------------------------------------------------------------------------------------------

SURROGATES = st.text(st.characters(categories=["Cs"]), min_size=1, max_size=2)  # from `\ud800` escapes in JSON
TEXTS = st.sampled_from([True] * 4 + [False]).flatmap(
    lambda clean: st.text(max_size=16) if clean else st.tuples(st.text(max_size=4), SURROGATES).map("".join)
)
NUMBERS = st.one_of(
    st.integers(300, 6000).map(lambda digits: "9" * digits),  # more than 4300 digits: Python refuses to parse them
    st.sampled_from(["1e400", "-1e400", "1e-400", "5e-324", "-0.0", "NaN", "Infinity", "-Infinity", "1.8e308",
                     "1.7976931348623157e308", str(2**63), str(-(2**63) - 1), str(2**64), "0", "-1", "0.5"]),
)  # fmt: skip
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | TEXTS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXTS, inner, max_size=4),
    max_leaves=12,
)
AUTH = st.sampled_from(["right", "right", "right", "none", "api", "admin", "wrong", "lower", "basic", "latin"])
MOSTLY_RIGHT = st.sampled_from([True] * 3 + [False]).flatmap(lambda right: st.just("right") if right else AUTH)
CONTENT_TYPES = st.sampled_from([b"application/json", b"application/json", None, b"text/plain", b"application/json; "
                                 b"charset=utf-16", b"application/x-www-form-urlencoded",
                                 b"multipart/form-data; boundary=x", b"\xff/\xfe"])  # fmt: skip


def maybe(right):
    """Five times in six a value of the right kind, else any JSON value at all. (`one_of` would not do: it merges
    repeated branches, so `one_of(right, right, JSON)` draws JSON half the time.)"""
    return st.sampled_from([True] * 5 + [False]).flatmap(lambda ok: right if ok else JSON)


def messages():
    roles = st.sampled_from(["user", "user", "system", "developer", "assistant", "tool", "wizard", ""])
    part = st.fixed_dictionaries({"type": maybe(st.sampled_from(["text", "image_url"])), "text": maybe(TEXTS)})
    content = st.one_of(TEXTS, st.lists(maybe(part), max_size=3), st.none())
    message = st.fixed_dictionaries({"role": maybe(roles), "content": maybe(content)},
                                    optional={"name": maybe(TEXTS), "tool_calls": JSON})  # fmt: skip
    return maybe(st.lists(maybe(message), min_size=1, max_size=4))


def sampling_fields() -> dict:
    stops = st.one_of(TEXTS, st.lists(TEXTS, max_size=6))
    return {
        "temperature": maybe(st.floats(0, 2)), "top_p": maybe(st.floats(0, 1)), "n": maybe(st.integers(0, 4)),
        "stop": maybe(stops), "max_tokens": maybe(st.integers(0, 5)), "stream": maybe(st.booleans()),
        "stream_options": maybe(st.fixed_dictionaries({}, optional={"include_usage": maybe(st.booleans())})),
        "seed": maybe(st.integers()), "frequency_penalty": maybe(st.sampled_from([0, 0.0, 0.5])),
        "logprobs": maybe(st.sampled_from([False, 0, True])),
        "presence_penalty": maybe(st.just(0)), "user": maybe(TEXTS),
    }  # fmt: skip


def chat_requests(models):
    optional = sampling_fields() | {
        "max_completion_tokens": maybe(st.integers(0, 5)), "tools": st.one_of(st.just([]), st.lists(JSON, max_size=2)),
        "tool_choice": JSON, "response_format": maybe(st.fixed_dictionaries({"type": maybe(st.sampled_from(
            ["text", "json_object"]))})), "unknown": JSON,
    }  # fmt: skip
    return st.fixed_dictionaries({"model": maybe(models), "messages": messages()}, optional=optional)


def completion_requests(models):
    prompts = st.one_of(TEXTS, st.lists(TEXTS, max_size=6))
    optional = sampling_fields() | {"echo": maybe(st.booleans()), "suffix": maybe(TEXTS), "unknown": JSON}
    return st.fixed_dictionaries({"model": maybe(models), "prompt": maybe(prompts)}, optional=optional)


def valid_requests(models):
    """(route, request) pairs the server must answer 200: chats and text completions with tiny max_tokens (some
    stream, some sample, some stop)."""
    text = st.text(st.characters(codec="utf-8"), min_size=1, max_size=16)
    parts = st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": text}), min_size=1, max_size=2)
    message = st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "developer", "assistant"]),
                                     "content": st.one_of(text, parts)})  # fmt: skip
    fields = {"temperature": st.floats(0, 2), "top_p": st.floats(0, 1, exclude_min=True), "n": st.integers(1, 2),
              "stop": st.lists(text, max_size=4), "stream": st.booleans(), "seed": st.integers(-(2**70), 2**70),
              "stream_options": st.fixed_dictionaries({"include_usage": st.booleans()})}  # fmt: skip
    chat = {"model": models, "messages": st.lists(message, min_size=1, max_size=3), "max_tokens": st.integers(1, 3)}
    completion = {"model": models, "prompt": st.one_of(text, st.lists(text, min_size=1, max_size=3)),
                  "max_tokens": st.integers(1, 3)}  # fmt: skip
    return st.one_of(st.tuples(st.just(CHAT), st.fixed_dictionaries(chat, optional=fields)),
                     st.tuples(st.just(TEXT), st.fixed_dictionaries(completion, optional=fields)))  # fmt: skip


def nested(depth: int, kind: str) -> bytes:
    """`depth` nested arrays or objects: alone, as a field of a chat request, or as its messages."""
    opening, closing = ("[" * depth, "]" * depth) if kind != "object" else ('{"a":' * depth, "}" * depth)
    value = opening + ("" if kind != "object" else "1") + closing
    if kind == "field":
        value = f'{{"model": "fz", "messages": [{HI}], "max_tokens": 1, "tool_choice": {value}}}'
    elif kind == "messages":
        value = f'{{"model": "fz", "messages": {value}}}'
    return value.encode()


def invalid_utf8(prefix: str, bad: bytes) -> bytes:
    """A chat request whose message holds bytes that are not UTF-8."""
    content = b'{"role": "user", "content": "' + prefix.encode() + bad + b'"}'
    return b'{"model": "fz", "messages": [' + content + b'], "max_tokens": 1}'


# --- the server and the property -------------------------------------------------------------------------------------


@dataclass
class Http:
    client: object
    base: str
    paths: list[str]


@pytest.fixture(scope="module")
def http(tiny_model_dir, tmp_path_factory):
    from fastapi.testclient import TestClient

    from tunelab.serve.app import ServeSettings, create_app
    from tunelab.serve.engine import Engine, EngineSettings

    folder = tmp_path_factory.mktemp("fuzz")
    run = make_run(folder / "run", tiny_model_dir, "Answer with the order as JSON.")
    engine = Engine(str(tiny_model_dir), {"fz": str(run)}, EngineSettings(max_batch_rows=8, max_queued_rows=12))
    settings = ServeSettings(api_key=KEY, admin_key=ADMIN, max_body_bytes=300_000, max_messages=6,
                             max_prompt_tokens=400, max_tokens=4, max_n=3)  # fmt: skip
    try:
        with TestClient(create_app(engine, settings), raise_server_exceptions=False) as client:
            yield Http(client, str(tiny_model_dir), [str(run), str(run / "adapter"), *_broken_paths(folder, run)])
    finally:
        engine.close()
        print(f"\nfuzzed HTTP requests per route: {dict(SENT)}; total {sum(SENT.values())}")
        print("statuses:", {route: {code: n for (r, code), n in sorted(STATUSES.items()) if r == route}
                            for route in SENT})  # fmt: skip


def _broken_paths(folder: Path, run: Path) -> list[str]:
    """Paths an admin might send: missing, a file, a bad adapter config, a bad recipe, a run without an adapter, a
    run whose summary.json is not an object (its adapter still loads)."""
    (folder / "file.txt").write_text("not an adapter")
    for name, files in {"bad_config": {"adapter_config.json": "[1]"}, "bad_recipe": {"recipe.yaml": "model: [unclosed"},
                        "no_adapter": {"recipe.yaml": "model: {name: x}\n"}}.items():  # fmt: skip
        (folder / name).mkdir()
        for file, text in files.items():
            (folder / name / file).write_text(text)
    odd = folder / "odd_summary"
    shutil.copytree(run, odd)
    (odd / "data" / "summary.json").write_text("[1]")
    return [str(folder / p) for p in ("nowhere", "file.txt", "bad_config", "bad_recipe", "no_adapter", "odd_summary")]


def _headers(route: str, auth: str, content_type: bytes | None) -> dict[str, bytes]:
    right = ADMIN if route in (ADAPTERS, DELETE) else KEY
    tokens = {"right": f"Bearer {right}", "api": f"Bearer {KEY}", "admin": f"Bearer {ADMIN}", "wrong": "Bearer nope",
              "lower": f"bearer {right}", "basic": "Basic Zm9vOmJhcg=="}  # fmt: skip
    headers = {} if content_type is None else {"content-type": content_type}
    if auth == "latin":
        headers["authorization"] = b"Bearer \xff\xfe" + right.encode()
    elif auth in tokens:
        headers["authorization"] = tokens[auth].encode()
    return headers


def send(http: Http, route: str, body, auth: str = "right", content_type=b"application/json", method: str | None = None,
         name: str = "fz"):  # fmt: skip
    """One request (a body of bytes as is, any other value as JSON); checks the property and counts it."""
    if body is not None and not isinstance(body, bytes):
        body = json.dumps(body).encode()  # NaN and Infinity as JavaScript writes them; surrogates as \\ud800 escapes
    url = DELETE.replace("{name}", quote(name.encode("utf-8", "surrogatepass"), safe="")) if route == DELETE else route
    response = http.client.request(method or METHODS[route], url, content=body,
                                   headers=_headers(route, auth, content_type))  # fmt: skip
    SENT[route] += 1
    CASES[f"http {METHODS[route]} {route}"] += 1
    STATUSES[route, response.status_code] += 1
    check(response)
    return response


def check(response) -> None:
    text = response.text
    assert response.status_code < 500, text
    assert response.status_code != 429, text  # requests here come one at a time: a 429 could never clear
    assert "Traceback" not in text
    if response.status_code >= 400:
        body = response.json()
        assert isinstance(body, dict) and set(body) == {"error"}, text
        error = body["error"]
        assert isinstance(error, dict) and set(error) == {"message", "type", "param", "code"}, text
        assert isinstance(error["message"], str) and error["message"] and isinstance(error["type"], str), text
        assert all(error[key] is None or isinstance(error[key], str) for key in ("param", "code")), text
    elif response.headers.get("content-type", "").startswith("text/event-stream"):
        events = [event for event in text.split("\n\n") if event]
        assert events[-1] == "data: [DONE]" and all(event.startswith("data: ") for event in events), text
        assert all("error" not in json.loads(event[6:]) for event in events[:-1]), text
    else:
        assert isinstance(response.json(), dict), text


def routes():
    return st.sampled_from(list(METHODS))


def methods(route: str):
    return st.sampled_from([METHODS[route]] * 3 + ["GET", "POST", "PUT", "PATCH", "DELETE"])


# --- the fuzz tests ---------------------------------------------------------------------------------------------------


def test_arbitrary_bytes_and_json_values_on_every_route(http):
    before = sum(SENT.values())
    not_utf8 = st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xe2\x82"])
    bodies = st.one_of(st.binary(max_size=300), JSON.map(lambda v: json.dumps(v).encode()), st.none(),
                       st.builds(invalid_utf8, st.text(max_size=8), not_utf8))  # fmt: skip

    @settings(max_examples=300, **FUZZ)
    @given(route=routes(), data=st.data(), body=bodies, auth=AUTH, content_type=CONTENT_TYPES)
    def fuzz(route, data, body, auth, content_type):
        method = data.draw(methods(route))
        name = data.draw(st.one_of(st.sampled_from(["fz", "other", "nope"]), TEXTS)) if route == DELETE else "fz"
        send(http, route, body, auth, content_type, method=method, name=name)

    fuzz()
    assert sum(SENT.values()) - before >= 300


def test_deep_nesting_and_huge_numbers(http):
    before = sum(SENT.values())
    posts = st.sampled_from([CHAT, TEXT, ADAPTERS])
    fields = st.sampled_from(["temperature", "top_p", "n", "max_tokens", "max_completion_tokens", "seed",
                              "frequency_penalty", "presence_penalty", "logprobs", "stop", "model"])  # fmt: skip

    @settings(max_examples=90, **FUZZ)
    @given(route=posts, depth=st.integers(1, 100_000), kind=st.sampled_from(["array", "object", "field", "messages"]))
    @example(route=CHAT, depth=100_000, kind="array")
    @example(route=TEXT, depth=100_000, kind="object")
    @example(route=ADAPTERS, depth=100_000, kind="array")
    @example(route=CHAT, depth=900, kind="field")  # parses: judged by the field it is in
    @example(route=CHAT, depth=900, kind="messages")
    @example(route=TEXT, depth=900, kind="array")
    def fuzz_nesting(route, depth, kind):
        send(http, route, nested(depth, kind))

    @settings(max_examples=110, **FUZZ)
    @given(route=posts, field=fields, number=NUMBERS, stream=st.booleans())
    def fuzz_numbers(route, field, number, stream):
        body = (f'{{"model": "fz", "messages": [{HI}], "prompt": "hi", "max_tokens": 2, "stream": {json.dumps(stream)},'
                f' "{field}": {number}}}')  # fmt: skip
        send(http, route, body.encode())

    fuzz_nesting()
    fuzz_numbers()
    assert sum(SENT.values()) - before >= 206


def test_structured_requests_with_wrong_fields(http):
    before = sum(SENT.values())
    models = st.sampled_from(["fz", http.base, "nope", ""])

    @settings(max_examples=300, **FUZZ)
    @given(body=chat_requests(models), auth=MOSTLY_RIGHT)
    def fuzz_chat(body, auth):
        send(http, CHAT, body, auth)

    @settings(max_examples=150, **FUZZ)
    @given(body=completion_requests(models), auth=MOSTLY_RIGHT)
    def fuzz_completions(body, auth):
        send(http, TEXT, body, auth)

    fuzz_chat()
    fuzz_completions()
    assert sum(SENT.values()) - before >= 450


def test_adapter_administration(http):
    """Loads and unloads with names and paths drawn mostly from those that reach the loader; each path an admin might
    send (a run, a bare adapter, missing, broken files) is also tried explicitly, loaded and unloaded again."""
    before = sum(SENT.values())
    valid_names = st.sampled_from(["fz", "other", "a.b:c-1"])
    names = maybe(st.one_of(valid_names, st.sampled_from(["-bad", "x" * 65, ""]), TEXTS))
    paths = maybe(st.one_of(st.sampled_from(http.paths), st.sampled_from(["", "\x00", "."]), TEXTS))
    loads = maybe(st.fixed_dictionaries({"name": names, "path": paths}, optional={"x": JSON}))

    @settings(max_examples=110, **FUZZ)
    @given(body=loads, auth=MOSTLY_RIGHT, delete=st.booleans(), name=names)
    def fuzz(body, auth, delete, name):
        send(http, ADAPTERS, body, auth)
        if delete:
            send(http, DELETE, None, auth, name=name if isinstance(name, str) else json.dumps(name))
        send(http, "/v1/models", None, "right")

    for path in http.paths:
        fuzz = example(body={"name": "other", "path": path}, auth="right", delete=True, name="other")(fuzz)
    fuzz()
    assert sum(SENT.values()) - before >= 2 * (110 + len(http.paths))


def test_valid_requests_are_answered(http):
    before = sum(SENT.values())

    @settings(max_examples=200, **FUZZ)
    @given(request=valid_requests(st.sampled_from(["fz", http.base])))
    def fuzz(request):
        route, body = request
        served = http.client.get("/v1/models", headers={"authorization": f"Bearer {KEY}"}).json()["data"]
        if "fz" not in {model["id"] for model in served}:
            send(http, ADAPTERS, {"name": "fz", "path": http.paths[0]})  # the admin fuzz may have unloaded it
        response = send(http, route, body)
        assert response.status_code == 200, response.text
        if not body.get("stream"):
            prompts = len(body["prompt"]) if isinstance(body.get("prompt"), list) else 1
            assert len(response.json()["choices"]) == body.get("n", 1) * prompts

    fuzz()
    assert sum(SENT.values()) - before >= 200
