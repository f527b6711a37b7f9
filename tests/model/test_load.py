"""Model names: built-in alias, folder, GGUF file, hub id; GGUF conversion is cached."""

from __future__ import annotations

import time

import pytest

from tunelab.errors import ModelError
from tunelab.model.load import load_model, resolve_model, tunelab_home


def test_kinds_of_names(tiny_model_dir, tmp_path):
    assert resolve_model(str(tiny_model_dir)).kind == "folder"
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct").kind == "hub"
    with pytest.raises(ModelError, match="config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(ModelError, match="GGUF file not found"):
        resolve_model(str(tmp_path / "missing.gguf"))
    with pytest.raises(ModelError, match="built-in alias"):
        resolve_model("not-a-model")


def test_tunelab_home_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELAB_HOME", str(tmp_path / "elsewhere"))
    assert tunelab_home() == tmp_path / "elsewhere"


def test_hub_id_offline_is_a_clear_error():
    with pytest.raises(ModelError, match="without network|Without network"):
        load_model("someorg/definitely-not-cached-model")


def test_broken_gguf_is_a_clear_error(tmp_path):
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"not a gguf file")
    with pytest.raises(ModelError, match="cannot convert"):
        load_model(str(bad))


@pytest.mark.slow
def test_builtin_model_is_converted_once_then_cached():
    started = time.monotonic()
    model, tokenizer, folder = load_model("smollm2-135m-instruct")
    first = time.monotonic() - started
    assert str(folder).startswith(str(tunelab_home()))
    assert model.config.model_type == "llama" and tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    started = time.monotonic()
    load_model("smollm2-135m-instruct")
    assert time.monotonic() - started < first  # the second load reads the cached safetensors
