"""A served run answers under the system prompt its training data shared, as `tunelab chat` does, when a chat request
brings no system (or developer) message; a request's own is left alone, text completions get none, a bare adapter
folder has none, `--no-default-system` turns it off, and `/v1/models` shows each model's."""

from __future__ import annotations

import httpx
import openai
import pytest
import uvicorn
from serving import make_run, running_server

from helpers import cli

SYSTEM = "Reply with the order as JSON."
USER = [{"role": "user", "content": "Please send two red shirts to Alice in Berlin."}]
ADMIN = {"Authorization": "Bearer admin-key"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_dir):
    return make_run(tmp_path_factory.mktemp("sysrun") / "run", tiny_model_dir, SYSTEM, seed=3)


@pytest.fixture(scope="module")
def loaded(server, run_dir):
    """The run loaded while serving: as `sysrun` from its run directory, as `plain` from its bare adapter folder."""
    answers = {}
    for name, path in (("sysrun", run_dir), ("plain", run_dir / "adapter")):
        response = httpx.post(f"{server}/admin/adapters", json={"name": name, "path": str(path)}, headers=ADMIN,
                              timeout=60)  # fmt: skip
        assert response.status_code == 201, response.text
        answers[name] = response.json()
    yield answers
    for name in answers:
        assert httpx.delete(f"{server}/admin/adapters/{name}", headers=ADMIN, timeout=60).status_code == 200


@pytest.fixture(scope="module")
def client(server, loaded):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="test-key", max_retries=0)


def prompt_tokens(engine, model: str, messages: list[dict]) -> int:
    ids = engine.tokenizers[model].apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    return len(ids)


def ask(client, model: str, messages: list[dict], **kwargs):
    return client.chat.completions.create(model=model, messages=messages, temperature=0, max_tokens=8, **kwargs)


def test_models_show_each_models_default_system_prompt(client, loaded, tiny_model_dir, adapters):
    from tunelab.runs import RunDir

    shown = {m.id: m.default_system_prompt for m in client.models.list().data}
    assert shown["sysrun"] == SYSTEM and shown["plain"] is None
    assert shown["orders"] == RunDir(adapters["orders"]).training_system_prompt()  # the quickstart's shared prompt
    assert shown["short"] is None and shown[str(tiny_model_dir)] is None  # no shared prompt; the base model
    assert loaded["sysrun"]["default_system_prompt"] == SYSTEM and loaded["plain"]["default_system_prompt"] is None


def test_a_chat_without_a_system_message_gets_the_runs_prompt(client, engine):
    bare = ask(client, "sysrun", USER)
    explicit = ask(client, "sysrun", [{"role": "system", "content": SYSTEM}, *USER])
    expected = prompt_tokens(engine, "sysrun", [{"role": "system", "content": SYSTEM}, *USER])
    assert bare.usage.prompt_tokens == explicit.usage.prompt_tokens == expected
    assert bare.choices[0].message.content == explicit.choices[0].message.content
    chunks = list(ask(client, "sysrun", USER, stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].usage.prompt_tokens == expected
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == bare.choices[0].message.content
    plain = ask(client, "plain", USER)  # the same weights from a bare adapter folder: no prompt is added
    assert plain.usage.prompt_tokens == prompt_tokens(engine, "plain", USER) < expected


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "system", "content": "Be brief."}, *USER],
        [*USER, {"role": "assistant", "content": "Which size?"}, {"role": "system", "content": "Ask nothing."}],
    ],
)
def test_a_requests_own_system_message_is_left_alone(client, engine, messages):
    reply = ask(client, "sysrun", messages)
    assert reply.usage.prompt_tokens == prompt_tokens(engine, "sysrun", messages)


def test_a_developer_message_counts_as_the_system_message(client, engine):
    as_system = ask(client, "sysrun", [{"role": "system", "content": "Be brief."}, *USER])
    as_developer = ask(client, "sysrun", [{"role": "developer", "content": "Be brief."}, *USER])
    assert as_developer.usage.prompt_tokens == as_system.usage.prompt_tokens
    assert as_developer.choices[0].message.content == as_system.choices[0].message.content


def test_text_completions_get_no_system_prompt(client, engine):
    reply = client.completions.create(model="sysrun", prompt="The quick brown", max_tokens=2, temperature=0)
    assert reply.usage.prompt_tokens == len(engine.tokenizers["sysrun"]("The quick brown")["input_ids"])


@pytest.mark.parametrize(("flags", "expected"), [([], SYSTEM), (["--no-default-system"], None)])
def test_no_default_system_turns_it_off(tiny_model_dir, run_dir, monkeypatch, capsys, flags, expected):
    """The real `tunelab serve` command line; its uvicorn.run serves on a test port while the openai client asks."""
    seen = {}

    def serve(app, host, port, log_level):
        with running_server(app) as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0)
            seen["models"] = {m.id: m.default_system_prompt for m in client.models.list().data}
            seen["tokens"] = ask(client, "sysrun", USER).usage.prompt_tokens
            system = [{"role": "system", "content": SYSTEM}] if expected else []
            seen["expected"] = prompt_tokens(app.state.engine, "sysrun", [*system, *USER])

    monkeypatch.setattr(uvicorn, "run", serve)
    monkeypatch.setenv("TUNELAB_TEST_SERVE_KEY", "k")
    result = cli(["serve", "--model", tiny_model_dir, "--adapter", f"sysrun={run_dir}", "--api-key-env",
                  "TUNELAB_TEST_SERVE_KEY", *flags], capsys)  # fmt: skip
    assert result.exit_code == 0, result.err
    assert seen["models"]["sysrun"] == expected and seen["models"][str(tiny_model_dir)] is None
    assert seen["tokens"] == seen["expected"]
