"""The real server driven by the official `openai` client and by raw HTTP: many adapters on one base, outputs equal
transformers + peft, streaming, stops, usage, n, batching across adapters, limits, auth, overload, administration."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import openai
import pytest
import torch
from serving import KEY, assert_error, post

MESSAGES = [{"role": "user", "content": "Please send two red shirts to Alice in Berlin."}]


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="test-key", max_retries=0)


def direct_greedy(tiny_model_dir, adapter_dir, messages, max_new_tokens: int) -> str:
    """The same model loaded directly with transformers (+ peft), greedy: what the server must reproduce."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(adapter_dir or tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    if adapter_dir:
        model = PeftModel.from_pretrained(model, adapter_dir)
    model.eval()
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=tokenizer.eos_token_id,
                             pad_token_id=tokenizer.pad_token_id)  # fmt: skip
    return tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)


def with_run_system(run, messages=MESSAGES) -> list[dict]:
    """What the server gives a run's adapter for messages without a system message: the run's shared training system
    prompt first (the orders run was trained on the quickstart data, which all share one)."""
    from tunelab.runs import RunDir

    system = RunDir(run).training_system_prompt()
    assert system
    return [{"role": "system", "content": system}, *messages]


def test_models_lists_the_base_and_each_adapter(client, tiny_model_dir):
    models = {m.id: m for m in client.models.list().data}
    assert set(models) == {str(tiny_model_dir), "orders", "short"}
    assert models["orders"].parent == str(tiny_model_dir) and models["short"].parent == str(tiny_model_dir)


def test_each_model_answers_like_transformers_and_peft(client, engine, tiny_model_dir, adapters):
    assert engine.decoder.path == "fused"  # a llama with plain LoRA adapters: model/fused_decoder.py
    answers = {}
    for name, folder, expected in [(str(tiny_model_dir), None, MESSAGES),
                                   ("orders", adapters["orders"] / "adapter", with_run_system(adapters["orders"])),
                                   ("short", adapters["short"] / "adapter", MESSAGES)]:  # fmt: skip
        reply = client.chat.completions.create(model=name, messages=MESSAGES, temperature=0, max_tokens=12)
        answers[name] = reply.choices[0].message.content
        assert answers[name] == direct_greedy(tiny_model_dir, folder, expected, 12), name
        assert reply.choices[0].finish_reason in ("stop", "length") and reply.model == name
    assert len(set(answers.values())) == 3  # the adapters really change the answers


def test_a_prompt_sharing_its_beginning_reuses_the_cached_prefix(client, engine, tiny_model_dir, adapters):
    """The orders adapter's requests all begin with its run's system prompt: the second one starts from the first
    one's cached keys and values, and answers as if prefilled whole."""
    other = [{"role": "user", "content": "Ship one blue hat to Bob in Paris."}]
    client.chat.completions.create(model="orders", messages=MESSAGES, temperature=0, max_tokens=4)
    before = engine.stats["reused_prompt_tokens"]
    reply = client.chat.completions.create(model="orders", messages=other, temperature=0, max_tokens=12)
    assert engine.stats["reused_prompt_tokens"] >= before + 16
    expected = direct_greedy(
        tiny_model_dir, adapters["orders"] / "adapter", with_run_system(adapters["orders"], other), 12
    )
    assert reply.choices[0].message.content == expected


def test_usage_and_finish_reasons(client, engine, adapters):
    reply = client.chat.completions.create(model="orders", messages=MESSAGES, temperature=0, max_tokens=3)
    prompt = engine.tokenizers["orders"].apply_chat_template(with_run_system(adapters["orders"]),
                                                             add_generation_prompt=True, return_dict=False)  # fmt: skip
    assert reply.usage.prompt_tokens == len(prompt) and reply.usage.completion_tokens == 3
    assert reply.usage.total_tokens == len(prompt) + 3 and reply.choices[0].finish_reason == "length"
    short = client.chat.completions.create(model="short", messages=MESSAGES, temperature=0, max_tokens=20)
    assert short.choices[0].finish_reason == "stop" and short.usage.completion_tokens < 20
    capped = client.chat.completions.create(model="short", messages=MESSAGES, temperature=0, max_completion_tokens=1)
    assert capped.usage.completion_tokens == 1


def test_streaming_gives_the_same_text_and_usage(client):
    whole = client.chat.completions.create(model="orders", messages=MESSAGES, temperature=0, max_tokens=16)
    chunks = list(client.chat.completions.create(model="orders", messages=MESSAGES, temperature=0, max_tokens=16,
                                                 stream=True, stream_options={"include_usage": True}))  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_stop_sequences_cut_the_answer(client):
    full = client.chat.completions.create(model="orders", messages=MESSAGES, temperature=0, max_tokens=24)
    text = full.choices[0].message.content
    stop = text[5:8]
    assert stop and stop in text
    cut = client.chat.completions.create(model="orders", messages=MESSAGES, temperature=0, max_tokens=24, stop=[stop])
    assert cut.choices[0].message.content == text[: text.index(stop)] and cut.choices[0].finish_reason == "stop"
    streamed = client.chat.completions.create(model="orders", messages=MESSAGES, temperature=0, max_tokens=24,
                                              stop=stop, stream=True)  # fmt: skip
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == text[: text.index(stop)]


def test_n_choices_and_seeds(client):
    first = client.chat.completions.create(model="orders", messages=MESSAGES, n=3, temperature=1.0, seed=7,
                                           max_tokens=8)  # fmt: skip
    again = client.chat.completions.create(model="orders", messages=MESSAGES, n=3, temperature=1.0, seed=7,
                                           max_tokens=8)  # fmt: skip
    assert [c.index for c in first.choices] == [0, 1, 2]
    assert [c.message.content for c in first.choices] == [c.message.content for c in again.choices]
    assert len({c.message.content for c in first.choices}) > 1  # each choice samples on its own
    assert 3 <= first.usage.completion_tokens <= 24


def test_text_completions(client, tiny_model_dir):
    reply = client.completions.create(model=str(tiny_model_dir), prompt="The quick brown", max_tokens=5, temperature=0)
    assert reply.object == "text_completion" and reply.usage.completion_tokens == 5
    streamed = client.completions.create(model=str(tiny_model_dir), prompt="The quick brown", max_tokens=5,
                                         temperature=0, stream=True)  # fmt: skip
    assert "".join(c.choices[0].text for c in streamed if c.choices) == reply.choices[0].text


def test_requests_for_different_adapters_share_a_batch(server, engine, tiny_model_dir):
    """Concurrent requests for three models are generated in one batch, each as it would be alone."""
    models = [str(tiny_model_dir), "orders", "short", "orders"]

    async def ask(http, model):
        body = {"model": model, "messages": MESSAGES, "temperature": 0, "max_tokens": 10}
        response = await http.post(f"{server}/v1/chat/completions", json=body, headers=KEY, timeout=60)
        return response.json()["choices"][0]["message"]["content"]

    async def together():
        async with httpx.AsyncClient() as http:
            return await asyncio.gather(*(ask(http, m) for m in models))

    alone = [asyncio.run(_one(server, m)) for m in models]
    before = engine.stats["max_batch_rows"]
    engine.stats["max_batch_rows"] = 0
    batched = asyncio.run(together())
    assert engine.stats["max_batch_rows"] >= 3
    engine.stats["max_batch_rows"] = max(before, engine.stats["max_batch_rows"])
    assert batched == alone


def test_a_request_joins_a_running_batch_and_answers_as_alone(server, engine, monkeypatch):
    """Continuous batching: a request arriving mid-generation joins at a step boundary, with the same answer."""
    other = [{"role": "user", "content": "Ship one blue hat to Bob in Paris."}]
    alone = {name: _chat(server, name, messages, 24) for name, messages in (("orders", MESSAGES), ("short", other))}
    step = engine._step
    monkeypatch.setattr(engine, "_step", lambda row, logits: (time.sleep(0.02), step(row, logits))[1])
    joined = engine.stats["joined_rows"]
    results = {}
    first = threading.Thread(target=lambda: results.update(orders=_chat(server, "orders", MESSAGES, 24)))
    first.start()
    time.sleep(0.3)  # the first request is decoding by now
    results["short"] = _chat(server, "short", other, 24)
    first.join(timeout=60)
    assert engine.stats["joined_rows"] > joined
    assert results == alone


def _chat(server, model, messages, max_tokens):
    body = {"model": model, "messages": messages, "temperature": 0, "max_tokens": max_tokens, "stop": ["\u2603"]}
    response = httpx.post(f"{server}/v1/chat/completions", json=body, headers=KEY, timeout=60)
    return response.json()["choices"][0]["message"]["content"]


async def _one(server, model):
    async with httpx.AsyncClient() as http:
        body = {"model": model, "messages": MESSAGES, "temperature": 0, "max_tokens": 10}
        response = await http.post(f"{server}/v1/chat/completions", json=body, headers=KEY, timeout=60)
        return response.json()["choices"][0]["message"]["content"]


def test_authentication(server):
    assert httpx.get(f"{server}/health").json()["status"] == "ok"  # health needs no key
    assert_error(httpx.get(f"{server}/v1/models"), 401, code="invalid_api_key")
    assert_error(httpx.get(f"{server}/v1/models", headers={"Authorization": "Bearer wrong"}), 401)
    assert_error(post(server, {"model": "orders", "messages": MESSAGES}, headers={}), 401)
    assert httpx.get(f"{server}/v1/models", headers=KEY).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"model": "nope", "messages": MESSAGES}, 404, "model"),
        ({"model": "orders"}, 400, "messages"),
        ({"model": "orders", "messages": []}, 400, "messages"),
        ({"model": "orders", "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages.0.role"),
        ({"model": "orders", "messages": MESSAGES, "max_tokens": 65}, 400, "max_tokens"),
        ({"model": "orders", "messages": MESSAGES, "max_tokens": 0}, 400, "max_tokens"),
        ({"model": "orders", "messages": MESSAGES, "n": 5}, 400, "n"),
        ({"model": "orders", "messages": MESSAGES, "temperature": 3}, 400, "temperature"),
        ({"model": "orders", "messages": MESSAGES, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
        ({"model": "orders", "messages": MESSAGES * 9}, 400, "messages"),
        ({"model": "orders", "messages": [{"role": "user", "content": "word " * 400}]}, 400, "messages"),
        ({"model": "orders", "messages": MESSAGES, "logprobs": True}, 400, None),
        ({"model": "orders", "messages": MESSAGES, "tools": [{"type": "function"}]}, 400, None),
        ([1, 2], 400, None),
    ],
)
def test_bad_requests_get_openai_errors(server, body, status, param):
    assert_error(post(server, body), status, param=param)
    stream = dict(body, stream=True) if isinstance(body, dict) else body
    response = post(server, stream)  # validated before any streamed byte: a plain JSON error, not a stream
    assert response.headers["content-type"].startswith("application/json")
    assert_error(response, status, param=param)


def test_malformed_json_oversize_and_unknown_routes(server):
    assert_error(post(server, None, content=b'{"model": "orders", "messages": ['), 400, code="invalid_json")
    assert_error(post(server, None, content=b"x" * 30_000), 413, code="request_too_large")
    huge = {"model": "orders", "messages": [{"role": "user", "content": "x" * 25_000}]}
    assert_error(post(server, huge), 413)
    assert_error(httpx.get(f"{server}/v1/nothing", headers=KEY), 404)
    assert_error(post(server, {"model": "orders", "prompt": ""}, path="/v1/completions"), 400, param="prompt")
    assert_error(post(server, {"model": "orders", "prompt": "hi", "echo": True}, path="/v1/completions"), 400)


def test_a_disconnected_stream_stops_generating(server, engine, monkeypatch):
    # the tiny model writes 64 tokens faster than a client can hang up: slow each decoding step down, as a big model is
    step = engine._step
    monkeypatch.setattr(engine, "_step", lambda row, logits: (time.sleep(0.1), step(row, logits))[1])
    cancelled, generated = engine.stats["cancelled_rows"], engine.stats["generated_tokens"]
    body = {"model": "orders", "messages": MESSAGES, "max_tokens": 64, "temperature": 0, "stream": True,
            "stop": ["\u2603never"]}  # fmt: skip
    with httpx.stream("POST", f"{server}/v1/chat/completions", json=body, headers=KEY, timeout=60) as response:
        next(response.iter_lines())
    deadline = time.monotonic() + 20
    while engine.stats["cancelled_rows"] == cancelled and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.stats["cancelled_rows"] > cancelled
    assert engine.stats["generated_tokens"] - generated < 64  # it stopped early, whether before or during decoding
    assert httpx.get(f"{server}/health").json()["status"] == "ok"


def test_an_abandoned_request_stops_generating(server, engine, monkeypatch):
    """A client that gives up on a non-streamed request (here: its timeout) stops the decoding too."""
    step = engine._step
    monkeypatch.setattr(engine, "_step", lambda row, logits: (time.sleep(0.1), step(row, logits))[1])
    cancelled = engine.stats["cancelled_rows"]
    body = {"model": "orders", "messages": MESSAGES, "max_tokens": 64, "temperature": 0, "stop": ["\u2603never"]}
    with pytest.raises(httpx.TimeoutException):
        httpx.post(f"{server}/v1/chat/completions", json=body, headers=KEY, timeout=1.5)
    deadline = time.monotonic() + 20
    while engine.stats["cancelled_rows"] == cancelled and time.monotonic() < deadline:
        time.sleep(0.05)
    assert engine.stats["cancelled_rows"] > cancelled


def test_adapters_are_loaded_and_unloaded_at_run_time(server, adapters):
    admin = {"Authorization": "Bearer admin-key"}
    load = {"name": "again", "path": str(adapters["short"])}
    assert_error(post(server, load, path="/admin/adapters"), 401)  # the inference key is not the admin key
    response = post(server, load, headers=admin, path="/admin/adapters")
    assert response.status_code == 201, response.text
    assert "again" in {m["id"] for m in httpx.get(f"{server}/v1/models", headers=KEY).json()["data"]}
    reply = post(server, {"model": "again", "messages": MESSAGES, "temperature": 0, "max_tokens": 6}).json()
    same = post(server, {"model": "short", "messages": MESSAGES, "temperature": 0, "max_tokens": 6}).json()
    assert reply["choices"][0]["message"]["content"] == same["choices"][0]["message"]["content"]
    assert_error(post(server, load, headers=admin, path="/admin/adapters"), 409, param="name")
    assert_error(post(server, {"name": "bad", "path": "/nowhere"}, headers=admin, path="/admin/adapters"), 400)
    assert httpx.delete(f"{server}/admin/adapters/again", headers=admin).json()["deleted"] is True
    assert_error(httpx.delete(f"{server}/admin/adapters/again", headers=admin), 404)
    assert_error(post(server, {"model": "again", "messages": MESSAGES}), 404, param="model")


def test_overload_answers_429_with_retry_after(tiny_model_dir):
    from serving import running_server

    from tunelab.serve.app import ServeSettings, create_app
    from tunelab.serve.engine import Engine, EngineSettings

    engine = Engine(str(tiny_model_dir), settings=EngineSettings(max_batch_rows=1, max_queued_rows=1))
    try:
        with running_server(create_app(engine, ServeSettings())) as url:
            body = {"model": str(tiny_model_dir), "messages": MESSAGES, "max_tokens": 200, "temperature": 0}
            results: list[httpx.Response] = []

            def send():
                results.append(httpx.post(f"{url}/v1/chat/completions", json=body, timeout=120))

            threads = [threading.Thread(target=send) for _ in range(6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            statuses = sorted(r.status_code for r in results)
            assert 200 in statuses and 429 in statuses and set(statuses) <= {200, 429}
            busy = next(r for r in results if r.status_code == 429)
            assert busy.headers["Retry-After"] == "1" and busy.json()["error"]["type"] == "rate_limit_error"
    finally:
        engine.close()


def test_a_request_past_the_deadline_gets_504(tiny_model_dir):
    from serving import running_server

    from tunelab.serve.app import ServeSettings, create_app
    from tunelab.serve.engine import Engine, EngineSettings

    engine = Engine(str(tiny_model_dir), settings=EngineSettings(request_timeout_s=0.0))
    try:
        with running_server(create_app(engine, ServeSettings(admin_key=None))) as url:
            body = {"model": str(tiny_model_dir), "messages": MESSAGES, "max_tokens": 50}
            assert_error(httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60), 504)
            assert_error(httpx.post(f"{url}/admin/adapters", json={"name": "x", "path": "y"}, timeout=60), 403)
            chunks = [line for line in httpx.post(f"{url}/v1/chat/completions", json=body | {"stream": True},
                                                  timeout=60).text.splitlines() if line]  # fmt: skip
            assert any("error" in json.loads(c[6:]) for c in chunks if c != "data: [DONE]")
            assert chunks[-1] == "data: [DONE]"
    finally:
        engine.close()
