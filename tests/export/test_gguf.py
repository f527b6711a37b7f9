"""`tunelab export <run> --gguf`: the file reads back with transformers as the merged model (same tokenizer ids,
logits within the quantisation's rounding), the verification and Modelfile sit beside it, and every wrong request
(not a run, an unfinished run, a method a GGUF cannot hold, a reward model, an architecture it cannot write, files
already there, a failure half-way) is refused clearly and writes nothing."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from helpers import cli, tiny_recipe
from tunelab.cli import main
from tunelab.errors import RunError


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_dir):
    folder = tmp_path_factory.mktemp("gguf_run")
    recipe = tiny_recipe(folder, tiny_model_dir, name="g")
    overrides = ["train.max_steps=4", "train.learning_rate=0.02", "eval.base=false", "eval.forgetting=false",
                 "data.validation=null"]  # fmt: skip
    assert main(["run", str(recipe), *overrides]) == 0
    return folder / "runs" / "g"


def test_rotary_reordering_pairs_each_heads_halves():
    from tunelab.export.gguf_writer import rotary_rows_for_llama_cpp

    # 2 heads of 4 dimensions: rows [a0 a1 | b0 b1] per head → [a0 b0 a1 b1]
    weight = np.arange(8)[:, None] * np.ones((1, 3))
    reordered = rotary_rows_for_llama_cpp(weight, heads=2)
    assert reordered[:, 0].tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


@pytest.mark.parametrize("qtype, logit_bound", [("f16", 0.05), ("q8_0", 0.5)])
def test_gguf_reads_back_as_the_merged_model(run_dir, tmp_path, capsys, qtype, logit_bound):
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / f"model-{qtype}.gguf"
    result = cli(["export", str(run_dir), "--gguf", qtype, "--out", str(out)], capsys)
    assert result.exit_code == 0, result.err
    assert "read back with transformers" in result.out and "identical greedy answers" in result.out
    check = json.loads((tmp_path / f"model-{qtype}.verification.json").read_text())
    assert check["tokenizer"]["identical_ids"] and check["logits"]["max_abs_diff"] < logit_bound
    assert check["held_out"]["records"] == 6 and set(check["held_out"]["metrics"]) == {"merged", "gguf"}
    assert "field_accuracy" in check["held_out"]["change"] and check["bytes"] == out.stat().st_size
    fields = GGUFReader(out).fields
    assert fields["general.architecture"].contents() == "llama"
    assert "<|im_start|>" in fields["tokenizer.chat_template"].contents()
    model = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file=out.name)
    merged = AutoModelForCausalLM.from_pretrained(run_dir / "merged")
    ids = AutoTokenizer.from_pretrained(tmp_path, gguf_file=out.name)("two red shirts", return_tensors="pt")
    with torch.no_grad():
        assert (model(**ids).logits - merged(**ids).logits).abs().max() < logit_bound
    modelfile = (tmp_path / f"model-{qtype}.Modelfile").read_text()
    assert f"FROM ./{out.name}" in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile and "TEMPLATE" in modelfile


def test_default_location_and_existing_files_are_kept(run_dir, capsys):
    first = cli(["export", str(run_dir), "--gguf", "q4_0"], capsys)
    target = run_dir / "export" / "g-q4_0.gguf"
    assert first.exit_code == 0 and target.is_file()
    before = target.stat().st_mtime_ns
    again = cli(["export", str(run_dir), "--gguf", "q4_0"], capsys)
    assert again.exit_code != 0 and "--overwrite" in again.err and str(target) in again.err
    assert target.stat().st_mtime_ns == before
    assert cli(["export", str(run_dir), "--gguf", "q4_0", "--overwrite"], capsys).exit_code == 0


def test_a_failed_check_writes_nothing(run_dir, tmp_path, capsys, monkeypatch):
    import tunelab.export.gguf as gguf_export

    def broken(*args, **kwargs):
        raise RunError("the written GGUF file cannot be read back")

    monkeypatch.setattr(gguf_export, "verify_gguf", broken)
    exports = tmp_path / "exports"
    exports.mkdir()
    result = cli(["export", str(run_dir), "--gguf", "f16", "--out", str(exports / "new" / "x.gguf")], capsys)
    assert result.exit_code != 0 and "cannot be read back" in result.err
    assert list(exports.iterdir()) == []


def test_unsupported_architecture_is_refused_with_what_it_can_write(tiny_model_dir, tmp_path):
    from tunelab.export.gguf_writer import check_writable

    folder = tmp_path / "gpt2ish"
    shutil.copytree(tiny_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(config | {"architectures": ["GPT2LMHeadModel"]}))
    with pytest.raises(RunError, match="writes LlamaForCausalLM models; this one is GPT2LMHeadModel"):
        check_writable(folder)


def _edited_copy(run_dir, folder, file: str, edit):
    """A copy of the finished run (without its exports) whose `file` is rewritten by `edit(text)`."""
    shutil.copytree(run_dir, folder, ignore=shutil.ignore_patterns("export"))
    (folder / file).write_text(edit((folder / file).read_text()))
    return folder


def test_an_unfinished_run_is_refused(run_dir, tmp_path, capsys):
    interrupted = lambda text: json.dumps(json.loads(text) | {"state": "interrupted"})  # noqa: E731
    copy = _edited_copy(run_dir, tmp_path / "unfinished", "status.json", interrupted)
    result = cli(["export", str(copy), "--gguf", "q8_0"], capsys)
    assert result.exit_code != 0 and "not completed" in result.err and not (copy / "export").exists()


def test_a_virtual_token_run_is_refused_with_the_reason(run_dir, tmp_path, capsys):
    copy = _edited_copy(
        run_dir, tmp_path / "prompt-run", "recipe.yaml", lambda t: t.replace("type: lora", "type: prompt")
    )
    result = cli(["export", str(copy), "--gguf", "q8_0"], capsys)
    assert result.exit_code != 0 and "cannot be exported as GGUF" in result.err and "export the adapter" in result.err


@pytest.mark.parametrize(
    "args, message",
    [
        (["--gguf", "q8_0", "--merged"], "leave out --merged"),
        (["--gguf", "q8_0", "--quantize", "int8"], "one export format at a time"),
        (["--gguf", "q8_0", "--dtype", "float16"], "leave out --merged and --dtype"),
    ],
)
def test_conflicting_flags_are_explained(run_dir, capsys, args, message):
    result = cli(["export", str(run_dir), *args], capsys)
    assert result.exit_code != 0 and message in result.err


def test_unknown_gguf_type_and_not_a_run(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(tmp_path), "--gguf", "q3_k"])
    assert exit_info.value.code == 2 and "invalid choice: 'q3_k'" in capsys.readouterr().err
    result = cli(["export", str(tmp_path / "nowhere"), "--gguf", "q8_0"], capsys)
    assert result.exit_code != 0 and "nowhere" in result.err


def test_a_reward_model_is_refused(run_dir, tmp_path, capsys):
    copy = _edited_copy(run_dir, tmp_path / "rm-run", "recipe.yaml", lambda t: t.replace("stage: sft", "stage: rm"))
    result = cli(["export", str(copy), "--gguf", "q8_0"], capsys)
    assert result.exit_code != 0 and "reward model" in result.err and not (copy / "export").exists()
