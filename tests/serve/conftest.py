"""A real server on a loopback port (uvicorn in a thread) with the tiny model and two adapters trained here."""

from __future__ import annotations

from pathlib import Path

import pytest
from serving import running_server, train_adapter

from helpers import quickstart_records


@pytest.fixture(scope="session")
def adapters(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    """Two adapters that answer differently: one on the orders task, one on single-word answers."""
    orders = train_adapter(tmp_path_factory.mktemp("a1"), tiny_model_dir, "orders",
                           quickstart_records("train", 48), seed=1)  # fmt: skip
    words = [{"messages": [{"role": "user", "content": f"Say a word {i}"}, {"role": "assistant", "content": "fox"}]}
             for i in range(48)]  # fmt: skip
    short = train_adapter(tmp_path_factory.mktemp("a2"), tiny_model_dir, "short", words, seed=2)
    return {"orders": orders, "short": short}


@pytest.fixture(scope="session")
def engine(tiny_model_dir, adapters):
    from tunelab.serve.engine import Engine

    engine = Engine(str(tiny_model_dir), {name: str(path) for name, path in adapters.items()})
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def server(engine):
    """The main test server: an API key, an admin key, small limits so the limit checks are cheap to hit."""
    from tunelab.serve.app import ServeSettings, create_app

    settings = ServeSettings(api_key="test-key", admin_key="admin-key", max_body_bytes=20_000, max_messages=8,
                             max_prompt_tokens=300, max_tokens=64, max_n=4)  # fmt: skip
    with running_server(create_app(engine, settings)) as url:
        yield url
