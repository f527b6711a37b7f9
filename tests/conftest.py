from __future__ import annotations

import os
from pathlib import Path

# Before anything imports huggingface_hub (which reads these once): tests never touch the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# An unexpected exception in the CLI is raised with its traceback instead of being summarised for a user: a test that
# hits one fails loudly (tests of the summary itself unset this).
os.environ["TUNELAB_DEBUG"] = "1"

import pytest  # noqa: E402

from fuzzing import CASES  # noqa: E402
from tiny_model import build_tiny_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer llama with a ChatML tokenizer, built offline once per test session."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_model_no_template_dir(tmp_path_factory) -> Path:
    """The same model with no chat template, to exercise the fallback template."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny_nt") / "model", chat_template=False)


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Keep tunelab's cache and the HF hub offline and inside the test's temporary folder."""
    monkeypatch.setenv("TUNELAB_HOME", str(tmp_path / "tunelab_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    yield


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """How many generated cases each property-based test tried, per entry point (the fuzzing bar counts them)."""
    if CASES:
        lines = ", ".join(f"{name} {count}" for name, count in sorted(CASES.items()))
        terminalreporter.write_line(f"fuzz cases tried: {lines}; total {sum(CASES.values())}")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny matrices gain nothing from a second thread; on a busy 2-core machine spinning threads cost 10x."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
