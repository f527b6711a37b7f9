"""`tunelab run` through the real CLI on the tiny model: training, outputs, merge check, resume, stop, bad input."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import cli, read_metrics, tiny_recipe, write_jsonl


def digest(folder: Path) -> str:
    return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(folder.glob("*.safetensors")))).hexdigest()


def test_lora_run_end_to_end(tmp_path, tiny_model_dir, capsys):
    before = digest(tiny_model_dir)
    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    result = cli(["run", recipe], capsys)
    assert result.exit_code == 0, result.err
    run = tmp_path / "runs" / "tiny"

    metrics = read_metrics(run)
    losses = [row["loss"] for row in metrics if "loss" in row]
    assert len(losses) == 8 and losses[-1] < losses[0]
    assert any("eval_loss" in row for row in metrics)
    assert all(row.get("tokens_per_second", 1) > 0 for row in metrics if "loss" in row)

    adapter = load_file(run / "adapter" / "adapter_model.safetensors")
    lora_b = [t for name, t in adapter.items() if "lora_B" in name]
    assert lora_b and all(t.abs().sum() > 0 for t in lora_b)  # lora_B starts at zero: non-zero means trained
    assert digest(tiny_model_dir) == before  # the base model on disk is untouched

    for part in [
        "recipe.yaml",
        "status.json",
        "plots/loss.png",
        "data/summary.json",
        "data/splits.json",
        "adapter/adapter_config.json",
        "merged/config.json",
        "merged/model.safetensors",
        "merged/tokenizer_config.json",
        "merged/generation_config.json",
        "eval/metrics.json",
        "eval/predictions_base.jsonl",
        "eval/predictions_tuned.jsonl",
    ]:
        assert (run / part).is_file(), part
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "completed" and status["step"] == 8
    check = json.loads((run / "merged" / "verification.json").read_text())
    assert check["identical_outputs"] and check["max_abs_logit_diff"] < 1e-3
    results = json.loads((run / "eval" / "metrics.json").read_text())
    assert set(results) == {"base", "zero_shot", "k_shot", "tuned"}
    assert set(results["tuned"]) >= {"json_validity", "field_accuracy", "exact_match"}
    assert "_versions" in (run / "recipe.yaml").read_text() and "seed: 42" in (run / "recipe.yaml").read_text()
    assert "base" in result.out and "tuned" in result.out and str(run) in result.out.replace("\n", "")


def test_speed_switches_are_recorded_and_can_be_turned_off(tmp_path, tiny_model_dir, capsys):
    """The fast path (packed attention, label-only loss) and TRL's stock path follow the same loss curve."""
    curves = {}
    for name, switches in {
        "fast": [],
        "stock": ["train.padding_free=false", "train.label_only_loss=false", "train.lean_activations=false"],
    }.items():
        recipe = tiny_recipe(tmp_path, tiny_model_dir, name=name)
        assert cli(["run", recipe, "train.max_steps=4", "eval.base=false", *switches], capsys).exit_code == 0
        run = tmp_path / "runs" / name
        curves[name] = [row["loss"] for row in read_metrics(run) if "loss" in row]
        curves[name + "_plan"] = json.loads((run / "training.json").read_text())
    assert curves["fast_plan"]["padding_free"] and curves["fast_plan"]["label_only_loss"]
    assert curves["fast_plan"]["attention"] == "tunelab_packed_sdpa"
    assert not curves["stock_plan"]["padding_free"] and not curves["stock_plan"]["label_only_loss"]
    assert curves["stock_plan"]["lean_activations"] is False
    assert curves["fast_plan"]["reasons"] and curves["fast_plan"]["torch_threads"] >= 1
    assert curves["fast_plan"]["allocator"] and curves["fast_plan"]["frozen_bf16"] is False  # fp32 training
    lean = curves["fast_plan"]["lean_activations"]
    assert lean["gated_mlps"] == 2 and lean["shared_casts"] >= 2 * 7 * 2  # 2 layers: 7 LoRA'd linears, each 2 + B
    assert curves["fast"] == pytest.approx(curves["stock"], rel=1e-3)


def test_bf16_lora_run_holds_frozen_weights_in_bf16_and_merges_the_fp32_originals(tmp_path, tiny_model_dir, capsys):
    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    assert cli(["run", recipe, "train.max_steps=2", "train.bf16=true", "eval.base=false"], capsys).exit_code == 0
    run = tmp_path / "runs" / "tiny"
    assert json.loads((run / "training.json").read_text())["frozen_bf16"] is True
    assert not list(run.rglob("frozen-fp32.safetensors"))  # the parked originals are gone
    check = json.loads((run / "merged" / "verification.json").read_text())
    assert check["identical_outputs"] and check["max_abs_logit_diff"] < 1e-3
    base, merged = load_file(tiny_model_dir / "model.safetensors"), load_file(run / "merged" / "model.safetensors")
    adapter = load_file(run / "adapter" / "adapter_model.safetensors")
    config = json.loads((run / "adapter" / "adapter_config.json").read_text())
    prefix = "base_model.model.model.layers.0.self_attn.q_proj"
    delta = adapter[f"{prefix}.lora_B.weight"] @ adapter[f"{prefix}.lora_A.weight"] * config["lora_alpha"] / config["r"]
    name = "model.layers.0.self_attn.q_proj.weight"
    # a base rounded to bf16 would be off by ~|w|·2⁻⁹ (1e-4 here); the merge starts from the exact fp32 weight
    assert torch.allclose(merged[name], base[name] + delta, rtol=0, atol=1e-6)
    assert delta.abs().max() > 0


def test_merged_folder_loads_with_plain_transformers(tmp_path, tiny_model_dir, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    assert cli(["run", recipe, "train.max_steps=2", "data.validation=null"], capsys).exit_code == 0
    merged = tmp_path / "runs" / "tiny" / "merged"
    model = AutoModelForCausalLM.from_pretrained(merged)
    tokenizer = AutoTokenizer.from_pretrained(merged)
    assert tokenizer.chat_template and model.config.vocab_size == len(tokenizer)


def test_a_run_without_a_test_set_resumes_from_its_saved_recipe(tmp_path, tiny_model_dir, capsys):
    recipe = tiny_recipe(tmp_path, tiny_model_dir, data={"test": None}, train={"max_steps": 2},
                         eval={"forgetting": {"enabled": False}}, export={"merge": False})  # fmt: skip
    assert cli(["run", recipe], capsys).exit_code == 0
    saved = tmp_path / "runs" / "tiny" / "recipe.yaml"
    assert cli(["validate", saved], capsys).exit_code == 0  # was: "eval.base: base evaluation needs a test set"
    assert cli(["run", saved, "--resume"], capsys).exit_code == 0


def test_resume_continues_at_the_saved_step(tmp_path, tiny_model_dir, capsys):
    recipe = tiny_recipe(tmp_path, tiny_model_dir, eval={"base": False}, export={"merge": False})
    assert cli(["run", recipe, "train.max_steps=4", "train.save_steps=4"], capsys).exit_code == 0
    run = tmp_path / "runs" / "tiny"
    assert (run / "checkpoints" / "checkpoint-4").is_dir()
    refused = cli(["run", recipe], capsys)
    assert refused.exit_code != 0 and "--resume" in refused.err  # an existing run is never silently replaced

    assert cli(["run", recipe, "--resume", "train.max_steps=8", "train.save_steps=4"], capsys).exit_code == 0
    steps = [row["step"] for row in read_metrics(run) if "loss" in row]
    assert steps == list(range(1, 9))  # continued at step 5, no step repeated
    state = json.loads((run / "checkpoints" / "checkpoint-8" / "trainer_state.json").read_text())
    assert state["global_step"] == 8


def test_stop_file_leaves_a_resumable_checkpoint(tmp_path, tiny_model_dir, capsys):
    recipe = tiny_recipe(tmp_path, tiny_model_dir, eval={"base": False})
    run = tmp_path / "runs" / "tiny"
    from transformers import TrainerCallback

    import tunelab.train.callbacks as callbacks

    class StopAtThree(TrainerCallback):  # plays the person who touches runs/<name>/STOP
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 3:
                (run / "STOP").touch()

    original = callbacks.standard_callbacks
    callbacks_list = lambda run_dir, train, **options: [StopAtThree(), *original(run_dir, train, **options)]  # noqa: E731
    import tunelab.train.fit as fit

    fit.standard_callbacks, saved = callbacks_list, fit.standard_callbacks
    try:
        result = cli(["run", recipe, "train.max_steps=50"], capsys)
    finally:
        fit.standard_callbacks = saved
    assert result.exit_code == 130
    assert json.loads((run / "status.json").read_text())["state"] == "interrupted"
    assert (run / "checkpoints" / "checkpoint-4").is_dir()
    assert cli(["run", recipe, "--resume", "train.max_steps=6"], capsys).exit_code == 0
    assert json.loads((run / "status.json").read_text())["state"] == "completed"


def test_ctrl_c_leaves_a_resumable_checkpoint(tmp_path, tiny_model_dir):
    recipe = tiny_recipe(tmp_path, tiny_model_dir, eval={"base": False}, export={"merge": False})
    run = tmp_path / "runs" / "tiny"
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    command = [
        sys.executable,
        "-m",
        "tunelab.cli",
        "run",
        str(recipe),
        "train.max_steps=100000",
        "train.save_steps=100000",
    ]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (run / "metrics.jsonl").is_file():
        time.sleep(0.2)
    assert (run / "metrics.jsonl").is_file(), "training did not start"
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 130, output
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "interrupted"
    checkpoints = list((run / "checkpoints").glob("checkpoint-*"))
    assert len(checkpoints) == 1 and (checkpoints[0] / "trainer_state.json").is_file()
    assert "--resume" in output


def test_early_stopping_restores_the_best_checkpoint(tmp_path, tiny_model_dir, capsys):
    # Training teaches "yes"; validation expects "no": eval loss rises after the first evaluation, so the best
    # checkpoint is the first one and early stopping ends training long before max_steps.
    question = {"role": "user", "content": "Is the sky green?"}
    train = [{"id": f"t{i}", "messages": [question, {"role": "assistant", "content": "yes yes"}]} for i in range(32)]
    valid = [{"id": f"v{i}", "messages": [question, {"role": "assistant", "content": "no no"}]} for i in range(4)]
    data = {
        "sources": [{"path": str(write_jsonl(tmp_path / "yes.jsonl", train))}],
        "validation": str(write_jsonl(tmp_path / "no.jsonl", valid)),
        "test": None,
    }
    recipe = tiny_recipe(
        tmp_path,
        tiny_model_dir,
        data=data,
        eval={"base": False},
        export={"merge": False},
        train={"max_steps": 40, "eval_steps": 2, "save_steps": 2, "early_stopping_patience": 2},
    )
    assert cli(["run", recipe], capsys).exit_code == 0
    run = tmp_path / "runs" / "tiny"
    evals = [row for row in read_metrics(run) if "eval_loss" in row]
    assert evals[0]["eval_loss"] < min(row["eval_loss"] for row in evals[1:])
    assert evals[-1]["step"] < 40
    best = load_file(run / "checkpoints" / "checkpoint-2" / "adapter_model.safetensors")
    final = load_file(run / "adapter" / "adapter_model.safetensors")
    assert all(torch.equal(best[name], final[name]) for name in best)


@pytest.mark.parametrize("method", [{"type": "full"}, {"type": "freeze", "trainable_layers": 1}])
def test_full_and_freeze_methods(tmp_path, tiny_model_dir, capsys, method):
    recipe = tiny_recipe(tmp_path, tiny_model_dir, method=None, eval={"base": False}, export={"merge": False})
    result = cli(
        ["run", recipe, f"method={json.dumps(method)}", "train.max_steps=3", "train.learning_rate=1e-3"], capsys
    )
    assert result.exit_code == 0, result.err
    merged = tmp_path / "runs" / "tiny" / "merged"
    trained = load_file(merged / "model.safetensors")
    base = load_file(tiny_model_dir / "model.safetensors")
    changed = {name for name in base if not torch.equal(base[name], trained[name])}
    if method["type"] == "full":
        assert len(changed) > len(base) // 2
    else:
        assert changed and all(name.startswith("model.layers.1.") for name in changed)


def test_model_without_chat_template_uses_the_fallback(tmp_path, tiny_model_no_template_dir, capsys):
    recipe = tiny_recipe(tmp_path, tiny_model_no_template_dir, eval={"base": False})
    result = cli(["run", recipe, "train.max_steps=2", "data.validation=null"], capsys)
    assert result.exit_code == 0, result.err
    assert "ChatML fallback" in result.out
    run = tmp_path / "runs" / "tiny"
    for folder in ("adapter", "merged"):  # the template used in training travels with the model
        config = json.loads((run / folder / "tokenizer_config.json").read_text())
        template = config.get("chat_template") or (run / folder / "chat_template.jinja").read_text()
        assert "<|im_start|>" in template
