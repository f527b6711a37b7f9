"""Regression tests for bad input that used to get a 5xx (or a 429 that could never clear), found by the reported bug
and by `test_fuzz_http.py`: each now gets a 4xx in OpenAI's error shape, over real HTTP."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest
from serving import KEY, assert_error, make_run, post, running_server

ADMIN = {"Authorization": "Bearer admin-key"}
MESSAGES = [{"role": "user", "content": "Please send two red shirts to Alice in Berlin."}]
CHAT = {"model": "orders", "messages": MESSAGES, "max_tokens": 4}


@pytest.fixture(scope="module")
def roomy_server(engine):
    """The test engine behind the default body limit (1 MB), so that 100,000 nested arrays reach the JSON parser."""
    from tunelab.serve.app import ServeSettings, create_app

    with running_server(create_app(engine, ServeSettings(api_key="test-key", admin_key="admin-key"))) as url:
        yield url


def raw(server, path: str, body: bytes, headers=None, content_type: str = "application/json"):
    headers = {**(KEY if headers is None else headers), "Content-Type": content_type}
    return httpx.post(f"{server}{path}", content=body, headers=headers, timeout=60)


@pytest.mark.parametrize(("path", "headers"), [("/v1/chat/completions", KEY), ("/v1/completions", KEY),
                                               ("/admin/adapters", ADMIN)])  # fmt: skip
@pytest.mark.parametrize("opening, closing", [("[", "]"), ('{"a":', "}")])
def test_100000_nested_arrays_or_objects_are_a_400(roomy_server, path, headers, opening, closing):
    body = (opening * 100_000 + ("1" if opening != "[" else "") + closing * 100_000).encode()
    error = assert_error(raw(roomy_server, path, body, headers), 400, code="invalid_json")
    assert "too deeply" in error["message"]


def test_nesting_that_parses_is_judged_by_its_field(server):
    deep = "[" * 400 + "]" * 400
    ignored = f'{{"model": "orders", "messages": {json.dumps(MESSAGES)}, "max_tokens": 2, "tool_choice": {deep}}}'
    assert raw(server, "/v1/chat/completions", ignored.encode()).status_code == 200
    assert_error(raw(server, "/v1/chat/completions", f'{{"model": "orders", "messages": {deep}}}'.encode()), 400,
                 param="messages.0")  # fmt: skip


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", CHAT | {"messages": [{"role": "user", "content": "hi \ud800"}]}, "messages.0.content"),
        (
            "/v1/chat/completions",
            CHAT | {"messages": [{"role": "user", "content": [{"type": "text", "text": "\udfff"}]}]},
            "messages.0.content.0.text",
        ),
        ("/v1/chat/completions", CHAT | {"stop": ["ok", "\ud83d"]}, "stop.1"),
        ("/v1/chat/completions", CHAT | {"model": "orders\ud800"}, "model"),
        ("/v1/completions", {"model": "orders", "prompt": "\ud800"}, "prompt"),
        ("/v1/completions", {"model": "orders", "prompt": ["fine", "x\udc00"]}, "prompt.1"),
        ("/admin/adapters", {"name": "x", "path": "/no/where\ud800"}, "path"),
    ],
)
def test_unpaired_surrogates_are_a_400_naming_the_field(server, path, body, param):
    """JSON's `\\ud800` escapes decode to text no tokenizer or UTF-8 encoder takes (completions answered 500)."""
    response = raw(server, path, json.dumps(body).encode(), ADMIN if path.startswith("/admin") else KEY)
    assert "surrogate" in assert_error(response, 400, param=param)["message"]


@pytest.mark.parametrize("stream", [False, True])
def test_a_temperature_too_small_to_divide_by_samples_greedily(server, stream):
    """logits / 5e-324 overflows to inf; sampling then failed with a 500 (or an error event inside a 200 stream)."""
    greedy = post(server, CHAT | {"temperature": 0, "max_tokens": 6}).json()["choices"][0]["message"]["content"]
    for temperature in (5e-324, 1e-45):
        response = post(server, CHAT | {"temperature": temperature, "max_tokens": 6, "stream": stream})
        assert response.status_code == 200, response.text
        if stream:
            events = [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]
            assert not any("error" in event for event in events)
            text = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
        else:
            text = response.json()["choices"][0]["message"]["content"]
        assert text == greedy


@pytest.mark.parametrize(
    ("field", "number", "status", "param", "code"),
    [
        ("max_tokens", "9" * 4000, 400, "max_tokens", None),
        ("max_tokens", "9" * 5000, 400, None, "invalid_json"),  # over Python's 4300-digit limit for int()
        ("seed", "9" * 4000, 200, None, None),
        ("temperature", "NaN", 400, "temperature", None),
        ("top_p", "Infinity", 400, "top_p", None),
        ("temperature", "1e400", 400, "temperature", None),
        ("n", "1e400", 400, "n", None),
    ],
)
def test_huge_numbers_nan_and_infinity(server, field, number, status, param, code):
    body = f'{{"model": "orders", "messages": {json.dumps(MESSAGES)}, "max_tokens": 2, "{field}": {number}}}'
    response = raw(server, "/v1/chat/completions", body.encode())
    if status == 200:
        assert response.status_code == 200, response.text
    else:
        assert_error(response, status, param=param, code=code)


def test_bytes_that_are_not_utf8_and_other_content_types(server):
    broken = b'{"model": "orders", "messages": [{"role": "user", "content": "caf\xe9"}]}'
    assert_error(raw(server, "/v1/chat/completions", broken), 400, code="invalid_json")
    assert_error(raw(server, "/v1/chat/completions", b"model=orders&messages=hi", content_type="application/x-www-"
                     "form-urlencoded"), 400, code="invalid_json")  # fmt: skip
    plain = raw(server, "/v1/chat/completions", json.dumps(CHAT).encode(), content_type="text/plain")
    assert plain.status_code == 200  # the body is read as JSON whatever the Content-Type says, as curl -d sends it


def test_more_sequences_than_the_queue_holds_is_a_400_not_a_429(server, engine):
    """A 429 says "retry shortly", but this request could never fit, even in an empty queue."""
    prompts = ["hi"] * (engine.settings.max_queued_rows // 4 + 1)
    response = post(server, {"model": "orders", "prompt": prompts, "n": 4, "max_tokens": 1}, path="/v1/completions")
    assert "at most" in assert_error(response, 400, param="prompt")["message"]


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        (
            CHAT | {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages.0.content.0.type",
            "'text'",
        ),
        (CHAT | {"stop": 5}, "stop", "valid string"),
        (CHAT | {"messages": [{"role": "user", "content": 5}]}, "messages.0.content", "valid string"),
    ],
)
def test_errors_in_union_fields_name_the_field_not_the_union_member(server, body, param, message):
    assert message in assert_error(post(server, body), 400, param=param)["message"]


@pytest.fixture(scope="module")
def broken_adapters(tmp_path_factory, tiny_model_dir) -> dict:
    """Run directories and adapter folders with one broken file each, and one whose summary.json is not an object."""
    folder = tmp_path_factory.mktemp("broken")
    good = make_run(folder / "good", tiny_model_dir, "Answer in JSON.")
    paths = {}
    for name, file, text in [("bad_recipe", "recipe.yaml", "model: [unclosed"),
                             ("bad_tokenizer", "adapter/tokenizer_config.json", "{not json"),
                             ("odd_summary", "data/summary.json", "[1]")]:  # fmt: skip
        paths[name] = shutil.copytree(good, folder / name)
        (paths[name] / file).write_text(text)
    paths["bad_config"] = folder / "bad_config"
    paths["bad_config"].mkdir()
    (paths["bad_config"] / "adapter_config.json").write_text("[1]")
    paths["no_weights"] = folder / "no_weights"  # a prompt-tuning config without its trained tokens
    paths["no_weights"].mkdir()
    (paths["no_weights"] / "adapter_config.json").write_text('{"peft_type": "PROMPT_TUNING"}')
    paths["no_adapter"] = folder / "no_adapter"
    paths["no_adapter"].mkdir()
    (paths["no_adapter"] / "recipe.yaml").write_text(f"model: {{name: {tiny_model_dir}}}\n")
    return paths


@pytest.mark.parametrize("broken", ["bad_recipe", "bad_tokenizer", "bad_config", "no_adapter", "no_weights"])
def test_a_broken_adapter_is_refused_with_a_400_and_not_served(server, broken_adapters, broken):
    path = str(broken_adapters[broken])
    error = assert_error(post(server, {"name": "broken", "path": path}, headers=ADMIN, path="/admin/adapters"), 400,
                         param="path")  # fmt: skip
    assert path in error["message"]
    assert "broken" not in httpx.get(f"{server}/v1/models", headers=KEY).text
    assert_error(post(server, CHAT | {"model": "broken"}), 404, param="model")


def test_a_run_whose_summary_is_not_an_object_loads_without_a_system_prompt(server, broken_adapters):
    response = post(server, {"name": "odd", "path": str(broken_adapters["odd_summary"])}, headers=ADMIN,
                    path="/admin/adapters")  # fmt: skip
    assert response.status_code == 201, response.text
    assert response.json()["default_system_prompt"] is None
    assert post(server, CHAT | {"model": "odd"}).status_code == 200
    assert httpx.delete(f"{server}/admin/adapters/odd", headers=ADMIN).status_code == 200


def test_an_unexpected_failure_answers_500_in_openai_shape_without_a_traceback(engine, monkeypatch):
    from fastapi.testclient import TestClient

    from tunelab.serve.app import create_app

    def broken() -> bool:
        raise RuntimeError("a bug in the health check")

    monkeypatch.setattr(engine.worker, "is_alive", broken)
    with TestClient(create_app(engine), raise_server_exceptions=False) as client:
        response = client.get("/health")
    error = assert_error(response, 500)
    assert error["type"] == "server_error" and "RuntimeError" in error["message"]
    assert "Traceback" not in response.text and "a bug in the health check" not in response.text
