"""`tunelab export`: the adapter folder loads with peft, the merged folder with plain transformers, the merge is
verified and recorded, and bad requests fail clearly without touching what is already there."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import cli, tiny_recipe
from tunelab.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("export_run")
    recipe = tiny_recipe(folder, tiny_model_dir, name="exp")
    overrides = ["train.max_steps=6", "train.learning_rate=0.02", "eval.base=false", "eval.forgetting=false",
                 "export.merge=false", "data.validation=null"]  # fmt: skip
    assert main(["run", str(recipe), *overrides]) == 0
    return folder / "runs" / "exp"


def _prompt(tokenizer):
    messages = [{"role": "user", "content": "Please send two red shirts to Alice in Berlin."}]
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)


def _greedy(model, tokenizer, ids) -> list[int]:
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return out[0, ids["input_ids"].shape[1] :].tolist()


def test_adapter_export_loads_with_peft_and_matches_the_run(run_dir, capsys):
    from peft import AutoPeftModelForCausalLM, PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = cli(["export", str(run_dir)], capsys)
    folder = run_dir / "export" / "adapter"
    assert result.exit_code == 0 and str(folder) in result.out
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md", "tokenizer_config.json"} <= {
        p.name for p in folder.iterdir()
    }
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template
    exported = AutoPeftModelForCausalLM.from_pretrained(folder).eval()
    config = json.loads((folder / "adapter_config.json").read_text())
    original = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(config["base_model_name_or_path"]),
                                         run_dir / "adapter").eval()  # fmt: skip
    ids = _prompt(tokenizer)
    assert _greedy(exported, tokenizer, ids) == _greedy(original, tokenizer, ids)
    assert "--lora-modules" in (folder / "README.md").read_text()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_merged_export_loads_with_transformers_and_records_the_check(run_dir, tmp_path, capsys, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    out = tmp_path / f"merged-{dtype}"
    result = cli(["export", str(run_dir), "--merged", "--dtype", dtype, "--out", str(out)], capsys)
    assert result.exit_code == 0, result.err
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.dtype == getattr(torch, dtype)
    assert AutoTokenizer.from_pretrained(out).chat_template
    GenerationConfig.from_pretrained(out)  # generation_config.json is there and valid
    check = json.loads((out / "verification.json").read_text())
    assert check["dtype"] == dtype and check["adapter"] is True and check["prompts"] >= 1
    if dtype == "float32":  # in fp32 the merge must be exact; in bf16 the rounding is recorded, not hidden
        assert check["identical_outputs"] and check["max_abs_logit_diff"] < 1e-3
        assert "identical greedy outputs" in result.out
    assert "Merge check" in (out / "README.md").read_text()


def test_export_refuses_a_non_empty_folder_and_keeps_it(run_dir, tmp_path, capsys):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    result = cli(["export", str(run_dir), "--out", str(out)], capsys)
    assert result.exit_code != 0 and "--overwrite" in result.err and str(out) in result.err
    assert [p.name for p in out.iterdir()] == ["mine.txt"] and (out / "mine.txt").read_text() == "keep me"
    assert cli(["export", str(run_dir), "--out", str(out), "--overwrite"], capsys).exit_code == 0
    assert (out / "adapter_config.json").is_file() and not (out / "mine.txt").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--dtype", "float16"], "--dtype applies to --merged"),
        (["--merged", "--out", ""], "--out"),
    ],
)
def test_bad_export_flags_are_explained(run_dir, capsys, args, message):
    result = cli(["export", str(run_dir), *args], capsys)
    assert result.exit_code != 0 and message in result.err


def test_unknown_dtype_is_refused_by_the_parser(run_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(run_dir), "--merged", "--dtype", "int3"])
    assert exit_info.value.code == 2 and "invalid choice: 'int3'" in capsys.readouterr().err


def test_export_of_something_that_is_not_a_run(tmp_path, capsys):
    result = cli(["export", str(tmp_path / "nowhere")], capsys)
    assert result.exit_code != 0 and "nowhere" in result.err
