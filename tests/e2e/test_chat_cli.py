"""`tunelab chat` answers from a run directory (base + adapter) and from a plain model folder."""

from __future__ import annotations

import subprocess
import sys

from helpers import cli, tiny_recipe


def test_chat_with_a_run_and_a_model_folder(tmp_path, tiny_model_dir, capsys):
    recipe = tiny_recipe(tmp_path, tiny_model_dir, eval={"base": False})
    assert cli(["run", recipe, "train.max_steps=2", "data.validation=null"], capsys).exit_code == 0
    run = tmp_path / "runs" / "tiny"
    from_run = cli(["chat", run, "--prompt", "Send 2 mugs to Anna in Oslo", "--max-new-tokens", "8"], capsys)
    assert from_run.exit_code == 0, from_run.err
    from_merged = cli(
        ["chat", run / "merged", "--prompt", "Send 2 mugs to Anna in Oslo", "--max-new-tokens", "8"], capsys
    )
    assert from_merged.exit_code == 0
    assert from_run.out == from_merged.out  # the merged model answers like base + adapter


def test_interactive_chat_reads_until_exit(tmp_path, tiny_model_dir):
    command = [sys.executable, "-m", "tunelab.cli", "chat", str(tiny_model_dir), "--max-new-tokens", "4"]
    done = subprocess.run(command, input="hello\n/reset\nagain\n/exit\n", capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("model>") == 2


def test_chat_with_a_missing_target(tmp_path, capsys):
    result = cli(["chat", tmp_path / "nothing-here", "--prompt", "hi"], capsys)
    assert result.exit_code == 1 and "nothing-here" in result.err


def test_chat_with_a_run_uses_the_training_system_prompt(tmp_path, tiny_model_dir, monkeypatch, capsys):
    recipe = tiny_recipe(tmp_path, tiny_model_dir, eval={"base": False}, export={"merge": False})
    assert cli(["run", recipe, "train.max_steps=1", "data.validation=null"], capsys).exit_code == 0
    import tunelab.chat as chat

    session = chat.load_chat_model(str(tmp_path / "runs" / "tiny"))
    assert session.messages[0]["role"] == "system" and "Extract the order as JSON" in session.messages[0]["content"]
    assert chat.load_chat_model(str(tmp_path / "runs" / "tiny"), system="").messages == []
