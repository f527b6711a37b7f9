"""`tunelab export <run> --quantize int8|int4`: a torchao / bitsandbytes folder that plain `from_pretrained` loads,
checked against the merged model on the held-out set, smaller on disk; wrong requests are refused and write nothing."""

from __future__ import annotations

import json
import shutil

import pytest

from helpers import cli, tiny_recipe
from tunelab.cli import main
from tunelab.errors import RunError


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("quantized_run")
    recipe = tiny_recipe(folder, tiny_model_dir, name="q")
    overrides = ["train.max_steps=4", "train.learning_rate=0.02", "eval.base=false", "eval.forgetting=false",
                 "data.validation=null", "export.merge=false"]  # fmt: skip
    assert main(["run", str(recipe), *overrides]) == 0
    return folder / "runs" / "q"


@pytest.mark.parametrize(
    "kind, library, weight", [("int8", "torchao", "Int8Tensor"), ("int4", "bitsandbytes", "Params4bit")]
)
def test_quantized_folder_loads_with_transformers_and_is_checked(run_dir, tmp_path, capsys, kind, library, weight):
    from transformers import AutoModelForCausalLM

    out = tmp_path / kind
    result = cli(["export", str(run_dir), "--quantize", kind, "--out", str(out)], capsys)
    assert result.exit_code == 0, result.err
    model = AutoModelForCausalLM.from_pretrained(out)
    assert type(model.model.layers[0].mlp.up_proj.weight).__name__ == weight
    assert json.loads((out / "config.json").read_text())["quantization_config"]["quant_method"] == library
    check = json.loads((out / "verification.json").read_text())
    assert check["quantization"] == kind and check["tokenizer"]["identical_ids"]
    assert check["held_out"]["records"] == 6 and "field_accuracy" in check["held_out"]["change"]
    assert (out / "verification" / f"{kind}.jsonl").is_file() and f"--quantization {library}" in (
        out / "README.md"
    ).read_text()
    assert "identical greedy answers" in result.out


def test_a_non_empty_folder_is_kept(run_dir, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    result = cli(["export", str(run_dir), "--quantize", "int8", "--out", str(out)], capsys)
    assert result.exit_code != 0 and "--overwrite" in result.err
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_a_failed_check_writes_nothing(run_dir, tmp_path, capsys, monkeypatch):
    import tunelab.export.quantized as quantized

    def broken(*args, **kwargs):
        raise RunError("the quantised folder does not load")

    monkeypatch.setattr(quantized, "verify_quantized", broken)
    exports = tmp_path / "exports"
    exports.mkdir()
    result = cli(["export", str(run_dir), "--quantize", "int4", "--out", str(exports / "int4")], capsys)
    assert result.exit_code != 0 and "does not load" in result.err and list(exports.iterdir()) == []


def test_an_unmergeable_method_is_refused(run_dir, tmp_path, capsys):
    copy = tmp_path / "prefix-run"
    shutil.copytree(run_dir, copy)
    (copy / "recipe.yaml").write_text((copy / "recipe.yaml").read_text().replace("type: lora", "type: prefix"))
    result = cli(["export", str(copy), "--quantize", "int8"], capsys)
    assert result.exit_code != 0 and "cannot be exported as int8" in result.err and not (copy / "export").exists()


def test_unknown_kind_is_refused_by_the_parser(run_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(run_dir), "--quantize", "int3"])
    assert exit_info.value.code == 2 and "invalid choice: 'int3'" in capsys.readouterr().err
