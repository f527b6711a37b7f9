"""Every `tunelab` verb with random flags and values: missing files, folders, garbage files, fake run directories,
negative and huge numbers, unicode, flags without values, unknown flags.

Property: the command exits with a usage error (argparse, 2), a TunelabError's code (1, 2, or 3 for `data audit
--strict`) with an `error:` line, or 0 — never a traceback (TUNELAB_DEBUG=1 turns an unexpected exception into a
test failure) — and an earlier run directory, offered to the read-only verbs, comes out unchanged.

Targets are never a loadable model, so no case trains, serves or chats for real.
"""

from __future__ import annotations

import argparse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import CASES, TEXT, fuzz_settings, no_traceback, tree_digest
from helpers import tiny_recipe
from tunelab.cli import build_parser, main

NUMBERS = st.sampled_from(["0", "-1", "1", "3", "1e309", "nan", "99999999999999999999", "0.5", "-0.0", "1,2"])


def verb_table() -> dict[str, argparse.ArgumentParser]:
    """'run', 'data audit', ... → their parsers, read from the real CLI so new verbs are fuzzed too."""
    table = {}

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    walk(sub, [*prefix, name])
        if prefix and not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
            table[" ".join(prefix)] = parser

    walk(build_parser(), [])
    return table


VERBS = verb_table()


@pytest.fixture(scope="module")
def places(tmp_path_factory, tiny_model_dir):
    """Paths a fuzzed command may be pointed at, and an earlier finished run."""
    folder = tmp_path_factory.mktemp("cli")
    recipe = tiny_recipe(folder, tiny_model_dir, train={"max_steps": 1}, eval={"forgetting": False, "base": False},
                         data={"test": None, "validation": None}, export={"merge": False})  # fmt: skip
    assert main(["run", str(recipe)]) == 0
    run = folder / "runs" / "tiny"
    fake_run = folder / "fake_run"
    fake_run.mkdir()
    (fake_run / "recipe.yaml").write_text("name: [unclosed\n")
    damaged = folder / "damaged_run"  # a run directory whose every file is broken
    for part, text in {"recipe.yaml": "name: d\nmodel: {name: nowhere}\ndata: {test: nowhere.jsonl}\n",
                       "status.json": "{", "metrics.jsonl": '{"step": 1, "loss"\n[1]\n', "training.json": "[]",
                       "adapter/adapter_config.json": "{}", "eval/metrics.json": '{"base": 1}',
                       "eval/forgetting.json": '{"task": 1}', "eval/predictions_tuned.jsonl": "x\n{}\n",
                       "data/summary.json": "null", "merged/config.json": "{}"}.items():  # fmt: skip
        (damaged / part).parent.mkdir(parents=True, exist_ok=True)
        (damaged / part).write_text(text)
    (folder / "garbage.jsonl").write_bytes(b"\x00\xff{not json\n")
    (folder / "empty.json").write_text("")
    (folder / "adapter_dir").mkdir()
    (folder / "adapter_dir" / "adapter_config.json").write_text("{broken")
    (folder / "bad.yaml").write_text("name: x\nmethod: {type: nope}\ndata: {}\n")
    (folder / "model.gguf").write_bytes(b"GGUF\x00junk")
    (folder / "notes.txt").write_text("hello")
    names = ("missing.jsonl", "garbage.jsonl", "empty.json", "adapter_dir", "bad.yaml", "model.gguf", "notes.txt",
             "fake_run", "damaged_run", "missing_dir")  # fmt: skip
    junk = [folder / name for name in names] + [folder]
    return {"folder": folder, "run": run, "digest": tree_digest(run), "junk": [str(p) for p in junk]}


READ_ONLY = {"status", "compare", "validate"}  # verbs that may be given the real earlier run


@st.composite
def command(draw, places):
    verb = draw(st.sampled_from(sorted(VERBS)))
    parser = VERBS[verb]
    paths = places["junk"] + ([str(places["run"])] if verb in READ_ONLY else [])
    value = st.sampled_from(paths) | TEXT | NUMBERS | st.sampled_from(["", "-", "--", "=", "a=b", "x=", "=1"])
    args = [draw(st.sampled_from(paths)) for _ in range(draw(st.integers(0, 2)))]
    flags = [o for a in parser._actions for o in a.option_strings if o not in ("-h", "--help")]
    for _ in range(draw(st.integers(0, 4))):
        flag = draw(st.sampled_from(flags + ["--no-such-flag", "-x"])) if flags else "--no-such-flag"
        args += [flag] + ([draw(value)] if draw(st.booleans()) else [])
    if verb == "serve" and "--model" not in args:
        args += ["--model", draw(st.sampled_from(places["junk"]))]  # never the default (a real model)
    return [*verb.split(), *args]


@pytest.fixture(scope="module")
def no_blocking_servers():
    """`tunelab ui` builds its whole app from the fuzzed arguments, but does not start listening (it would block)."""
    import gradio

    original = gradio.Blocks.launch
    gradio.Blocks.launch = lambda self, *args, **kwargs: None
    yield
    gradio.Blocks.launch = original


@given(data=st.data())
@fuzz_settings(examples=450)
def test_every_verb_fails_clearly_on_bad_arguments(places, capsys, no_blocking_servers, data):
    argv = data.draw(command(places))
    if argv[0] in ("chat", "serve", "bench", "eval", "judge") and any(p == str(places["run"]) for p in argv):
        return
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's usage errors (2) and --version (0)
        code = exit_.code
    captured = capsys.readouterr()
    CASES[f"cli {argv[0]}"] += 1
    no_traceback(captured.out, captured.err)
    assert code in (0, 1, 2, 3), (argv, code, captured.err)
    if code not in (0, 2):  # progress lines may come first; the error is said on a line of its own
        assert "\nerror: " in "\n" + captured.err, (argv, captured.err)
    assert tree_digest(places["run"]) == places["digest"], argv


def test_every_verb_is_fuzzed():
    expected = {"run", "validate", "status", "chat", "eval", "judge", "export", "serve", "report", "compare", "bench",
                "ui", "data audit", "data split", "data mix", "data convert", "data augment",
                "data preview"}  # fmt: skip
    assert expected <= set(VERBS)


def test_an_internal_error_is_summarised_without_a_traceback(monkeypatch, capsys):
    """A bug (not bad input) prints one line and where the traceback was saved, and exits 70."""
    import tunelab.cli as cli

    def broken(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.delenv("TUNELAB_DEBUG")
    monkeypatch.setattr(cli, "status_command", broken)
    assert cli.main(["status", "anything"]) == cli.INTERNAL_ERROR
    err = capsys.readouterr().err
    assert "internal error (ZeroDivisionError: a bug)" in err and "Traceback" not in err
    saved = err.split("traceback is in ")[1].split(" ")[0]
    assert "ZeroDivisionError" in open(saved, encoding="utf-8").read()
