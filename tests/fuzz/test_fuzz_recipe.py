"""Recipes mutated at random — wrong types, unknown keys, missing sections, unicode, huge numbers, broken YAML and
bytes, wild overrides — through `tunelab validate` and `tunelab run`.

Property: the exit code is 0 (still a valid recipe) or a TunelabError's (2 for a recipe problem, 1 for the rest)
with a message that names the recipe file; never a traceback (tests run with TUNELAB_DEBUG=1, so an unexpected
exception fails the test with its own traceback); and the run directory of an earlier run is never touched, even
by `tunelab run --overwrite` with a bad recipe.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from fuzzing import CASES, JUNK, TEXT, fuzz_settings, no_traceback, tree_digest
from helpers import QUICKSTART, tiny_recipe
from tunelab.cli import main

SECTIONS = ("name", "output_dir", "seed", "model", "data", "method", "train", "eval", "export")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_model_dir):
    """Two base recipes (the shipped quickstart, a tiny one) and an earlier finished run that fuzzing must not touch."""
    folder = tmp_path_factory.mktemp("recipes")
    for name in ("train.jsonl", "test.jsonl", "schema.json"):
        shutil.copy(QUICKSTART / name, folder / name)
    quickstart = yaml.safe_load((QUICKSTART / "recipe.yaml").read_text(encoding="utf-8"))
    tiny_path = tiny_recipe(folder, tiny_model_dir, train={"max_steps": 1}, eval={"forgetting": False, "base": False},
                            data={"test": None, "validation": None}, export={"merge": False})  # fmt: skip
    tiny = yaml.safe_load(tiny_path.read_text(encoding="utf-8"))
    assert main(["run", str(tiny_path)]) == 0
    run = Path(tiny["output_dir"]) / tiny["name"]
    quickstart |= {"output_dir": tiny["output_dir"], "name": tiny["name"]}  # a valid run would hit the same folder
    return {"folder": folder, "bases": [quickstart, tiny], "run": run, "digest": tree_digest(run)}


def paths(node, prefix=()):
    """Every (container, key) in a parsed recipe, depth first."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        yield prefix + (key,), node, key
        yield from paths(value, prefix + (key,))


@st.composite
def mutated_recipe(draw, bases):
    document = copy.deepcopy(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(1, 3))):
        places = list(paths(document))
        _, container, key = draw(st.sampled_from(places)) if places else ((), document, "name")
        action = draw(st.sampled_from(["replace", "delete", "add", "section", "typo"]))
        if action == "replace":
            container[key] = draw(JUNK)
        elif action == "delete" and isinstance(container, dict):
            container.pop(key, None)
        elif action == "add" and isinstance(container, dict):
            container[draw(TEXT)] = draw(JUNK)
        elif action == "section":
            document[draw(st.sampled_from(SECTIONS))] = draw(JUNK)
        elif action == "typo" and isinstance(container, dict) and isinstance(key, str) and key:
            container[key[:-1] + draw(st.sampled_from("_sx"))] = container.pop(key)
    return document


@st.composite
def recipe_text(draw, bases):
    """A mutated recipe as YAML; sometimes with its text or bytes damaged too."""
    text = yaml.safe_dump(draw(mutated_recipe(bases)), allow_unicode=True, sort_keys=False).encode("utf-8")
    damage = draw(st.sampled_from(["none", "none", "truncate", "insert", "bytes", "encoding", "empty"]))
    if damage == "truncate":
        text = text[: draw(st.integers(0, len(text)))]
    elif damage == "insert":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.sampled_from([b"\t", b": :", b"[", b"{", b"&a *a", b"!!python/object x", b"- \n"]))
        text += text[at:]
    elif damage == "bytes":
        text = draw(st.binary(max_size=64))
    elif damage == "encoding":
        text = text.decode("utf-8").encode("utf-16")
    elif damage == "empty":
        text = b""
    return text


def check_result(code: int, err: str, recipe: Path) -> None:
    assert code in (0, 1, 2), (code, err)
    no_traceback(err)
    if code:
        assert err.startswith("error: ") and recipe.name in err, err


@given(data=st.data())
@fuzz_settings(examples=400)
def test_mutated_recipes_validate_or_fail_clearly(workspace, capsys, data):
    recipe = workspace["folder"] / "fuzzed.yaml"
    recipe.write_bytes(data.draw(recipe_text(workspace["bases"])))
    code = main(["validate", str(recipe)])
    captured = capsys.readouterr()
    CASES["recipe (validate)"] += 1
    check_result(code, captured.err, recipe)
    if code:  # the same recipe through `run --overwrite`: refused before the earlier run is touched
        assert main(["run", str(recipe), "--overwrite"]) == code
        CASES["recipe (run --overwrite)"] += 1
        assert tree_digest(workspace["run"]) == workspace["digest"]


OVERRIDE_KEYS = st.sampled_from([
    "train.max_steps", "train.learning_rate", "train.learning_rat", "method.r", "method.type", "data.validation",
    "data.sources", "data.sources.0.path", "data.sources.9.path", "eval.metrics", "eval.forgetting", "export.merge",
    "model.name", "name", "seed", "train", "method", "data.max_length", "eval.max_new_tokens", "a.b.c", "",
])  # fmt: skip


@given(keys=st.lists(OVERRIDE_KEYS | TEXT, min_size=1, max_size=3), values=st.lists(JUNK, min_size=3, max_size=3),
       separators=st.lists(st.sampled_from(["=", "=", ":", ""]), min_size=3, max_size=3))  # fmt: skip
@fuzz_settings(examples=200)
def test_wild_overrides_fail_clearly(workspace, capsys, keys, values, separators):
    recipe = workspace["folder"] / "tiny-base.yaml"
    recipe.write_text(yaml.safe_dump(workspace["bases"][1], allow_unicode=True), encoding="utf-8")
    overrides = [
        f"{k}{sep}{json.dumps(v, ensure_ascii=False)}" for k, v, sep in zip(keys, values, separators, strict=False)
    ]
    try:
        code = main(["validate", str(recipe), *overrides])
    except SystemExit as exit_:  # argparse: an override that looks like a flag; usage error, exit 2
        code = exit_.code
    captured = capsys.readouterr()
    CASES["recipe overrides"] += 1
    assert code in (0, 1, 2), (code, captured.err)
    no_traceback(captured.err)
    if code:
        assert captured.err.strip(), "a failure must say why"
