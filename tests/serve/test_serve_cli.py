"""`tunelab serve` refuses bad flags before it binds a port, with a message that says what to write instead."""

from __future__ import annotations

import pytest

from helpers import cli


@pytest.mark.parametrize(
    "args, message",
    [
        (["--adapter", "orders"], "write NAME=PATH"),
        (["--adapter", "=runs/x"], "write NAME=PATH"),
        (["--adapter", "a=x", "--adapter", "a=y"], "given twice"),
        (["--api-key-env", "TUNELAB_TEST_NO_SUCH_KEY"], "environment variable is empty"),
        (["--admin-key-env", "TUNELAB_TEST_NO_SUCH_KEY"], "environment variable is empty"),
    ],
)
def test_bad_serve_flags(capsys, args, message):
    result = cli(["serve", "--model", "unused", *args], capsys)
    assert result.exit_code != 0 and message in result.err


def test_an_adapter_that_does_not_load_is_named(tiny_model_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text("{not json")
    result = cli(["serve", "--model", str(tiny_model_dir), "--adapter", f"bad={broken}"], capsys)
    assert result.exit_code != 0 and str(broken) in result.err


def test_an_adapter_for_another_base_is_refused(tiny_model_dir, adapters, tmp_path, capsys):
    from tiny_model import build_tiny_model

    wider = build_tiny_model(tmp_path / "wider", hidden_size=96)
    result = cli(["serve", "--model", str(wider), "--adapter", f"orders={adapters['orders']}"], capsys)
    assert result.exit_code != 0 and "cannot load it as an adapter" in result.err
