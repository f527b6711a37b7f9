"""Every method in the table trains through the real CLI on the tiny model: it saves what it trained, the frozen
weights stay as they were and the trained ones move, its trainable-parameter count is PEFT's, and the saved result
loads back (and merges where the method allows it)."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, set_seed

from tests.helpers import cli, tiny_recipe
from tunelab.config.schema import method_sections
from tunelab.model.methods import METHODS, apply_method, method_spec
from tunelab.train import fit as fit_module

# one small section per method; every method of the table is here (a test checks it)
SECTIONS = {
    "lora": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
    "lora-pissa": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0, "init": "pissa"},
    "lora-olora-plus": {"type": "lora", "r": 4, "alpha": 8, "init": "olora", "loraplus_lr_ratio": 16},
    "qlora": {"type": "qlora", "r": 4, "alpha": 8, "dropout": 0.0},
    "qlora-8bit": {"type": "qlora", "r": 4, "alpha": 8, "bits": 8},
    "qlora-loftq": {"type": "qlora", "r": 4, "alpha": 8, "init": "loftq"},
    "lora-l2sp": {"type": "lora", "r": 4, "alpha": 8, "l2sp": 0.1},
    "full": {"type": "full"},
    "full-decay-l2sp": {"type": "full", "layer_lr_decay": 0.5, "l2sp": 0.01},
    "freeze": {"type": "freeze", "trainable_layers": 1},
    "freeze-progressive": {
        "type": "freeze",
        "trainable_layers": 1,
        "unfreeze_every": 2,
        "max_trainable_layers": 2,
        "layer_lr_decay": 0.8,
    },
    "vera": {"type": "vera", "r": 16},
    "loha": {"type": "loha", "r": 4, "alpha": 4},
    "lokr": {"type": "lokr", "r": 4, "alpha": 4},
    "ia3": {"type": "ia3"},
    "prefix": {"type": "prefix", "virtual_tokens": 4},
    "prompt": {"type": "prompt", "virtual_tokens": 4, "init": "text", "init_text": "Extract the order as JSON"},
    "ptuning": {"type": "ptuning", "virtual_tokens": 4, "encoder_hidden_size": 16},
    "llama_adapter": {"type": "llama_adapter", "adapter_len": 4, "adapter_layers": 2},
    "bottleneck": {"type": "bottleneck", "size": 8},
    "bottleneck-pfeiffer": {"type": "bottleneck", "size": 8, "placement": "pfeiffer", "activation": "gelu"},
}


class RunPaths:
    def __init__(self, path):
        self.adapter, self.merged = path / "adapter", path / "merged"


def test_every_method_of_the_table_is_tested_and_has_a_schema():
    assert {section["type"] for section in SECTIONS.values()} == set(METHODS) == set(method_sections())


def _initial_model(model_dir, section: dict, seed: int = 42):
    """The model as fit() prepares it before the first step: same seed, same method."""
    set_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    return apply_method(model, method_sections()[section["type"]].model_validate(section))


def _tensors(model) -> dict[str, torch.Tensor]:
    """Parameters and buffers by name; through state_dict(), which puts quantised weights in their saved layout
    (bitsandbytes repacks 4-bit weights in place for its CPU inference kernel)."""
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


@pytest.mark.parametrize("name", list(SECTIONS))
def test_method_trains_only_what_it_should_and_saves_a_loadable_result(tmp_path, tiny_model_dir, capsys,
                                                                      monkeypatch, name):  # fmt: skip
    recipe = tiny_recipe(tmp_path, tiny_model_dir, method=None, eval={"forgetting": {"enabled": False}})
    check_method(tmp_path, recipe, tiny_model_dir, SECTIONS[name], capsys, monkeypatch, ["train.max_steps=4",
                 "train.learning_rate=1e-2"])  # fmt: skip


# one section per method type, trained for a few steps on the built-in model
BUILTIN = {
    name: SECTIONS[name]
    for name in (
        "lora-pissa",
        "qlora-loftq",
        "freeze-progressive",
        "vera",
        "loha",
        "lokr",
        "ia3",
        "prefix",
        "prompt",
        "ptuning",
        "llama_adapter",
        "bottleneck",
    )
}
BUILTIN["full"] = {"type": "full", "layer_lr_decay": 0.9, "l2sp": 0.01}  # 0.5 over 30 layers: the bottom ones stay put


def test_the_builtin_model_test_covers_every_method_type():
    assert {section["type"] for section in BUILTIN.values()} == set(METHODS)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(BUILTIN))
def test_method_on_the_builtin_model(tmp_path, tiny_model_dir, capsys, monkeypatch, name):
    from tunelab.model.load import model_folder

    folder = model_folder("smollm2-135m-instruct")
    recipe = tiny_recipe(tmp_path, tiny_model_dir, method=None, model={"name": "smollm2-135m-instruct"},
                         eval={"forgetting": {"enabled": False}, "max_new_tokens": 8})  # fmt: skip
    check_method(tmp_path, recipe, folder, BUILTIN[name], capsys, monkeypatch, ["train.max_steps=3",
                 "train.learning_rate=2e-3", "data.max_length=128"], atol=1e-3)  # fmt: skip


def check_method(tmp_path, recipe, model_dir, section: dict, capsys, monkeypatch, overrides: list[str],
                 atol: float = 1e-4) -> None:  # fmt: skip
    """Train `section` through the CLI; the frozen weights did not move, the trained ones did, the trainable count is
    PEFT's, the saved result reloads to the trained model's outputs, and the merge happened where the method has one."""
    spec = method_spec(section["type"])
    captured = {}
    save_trained = fit_module.save_trained
    monkeypatch.setattr(fit_module, "save_trained",
                        lambda model, *a: (captured.setdefault("model", model), save_trained(model, *a)))  # fmt: skip
    result = cli(["run", recipe, f"method={json.dumps(section)}", f"export.merge={str(spec.can_merge).lower()}",
                  *overrides], capsys)  # fmt: skip
    assert result.exit_code == 0, result.err
    run = tmp_path / "runs" / "tiny"
    assert spec.saved_marker(RunPaths(run)).is_file()

    initial = _initial_model(model_dir, section)
    before, after = _tensors(initial), _tensors(captured["model"])
    trained_storage = {p.data_ptr() for p in initial.parameters() if p.requires_grad}  # tied weights too
    trainable = {n for n, t in initial.state_dict().items() if t.data_ptr() in trained_storage}
    assert set(before) == set(after) and trainable
    assert not [n for n in trainable if torch.equal(before[n], after[n])], "trained tensors that did not move"
    assert not [n for n in set(before) - trainable if not torch.equal(before[n], after[n])], "frozen ones moved"

    training = json.loads((run / "training.json").read_text())
    expected = initial.get_nb_trainable_parameters()[0] if hasattr(initial, "get_nb_trainable_parameters") else (
        sum(p.numel() for p in initial.parameters() if p.requires_grad))  # fmt: skip
    assert training["parameters"]["trainable"] == expected  # PEFT's print_trainable_parameters count
    if spec.saves == "adapter":  # the saved adapter (PiSSA/OLoRA converted) on the original model is the trained one
        fresh = AutoModelForCausalLM.from_pretrained(model_dir)
        reloaded = spec.load_saved(RunPaths(run), fresh, method_sections()[section["type"]].model_validate(section))
        ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
        with torch.no_grad():
            expected_logits = captured["model"].eval()(input_ids=ids).logits
            assert torch.allclose(reloaded.eval()(input_ids=ids).logits, expected_logits, atol=atol)
    if section["type"] == "lora" or section.get("l2sp"):
        assert training["distance_from_pretrained"] > 0
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    assert "tuned" in metrics
    assert (run / "merged" / "verification.json").is_file() == spec.can_merge


def test_a_qlora_run_exports_merged_into_the_full_precision_base(tmp_path, tiny_model_dir, capsys):
    recipe = tiny_recipe(tmp_path, tiny_model_dir, eval={"forgetting": {"enabled": False}}, export={"merge": False})
    section = {"type": "qlora", "r": 4, "alpha": 8, "dropout": 0.0}
    assert cli(["run", recipe, f"method={json.dumps(section)}", "train.max_steps=2"], capsys).exit_code == 0
    run = tmp_path / "runs" / "tiny"
    assert not (run / "merged").exists()
    result = cli(["export", run, "--merged"], capsys)
    assert result.exit_code == 0, result.err
    check = json.loads((run / "export" / "merged" / "verification.json").read_text())
    assert check["identical_outputs"]  # against the adapter on the same full-precision base
    prompt_run = cli(["run", recipe, 'method={"type": "prompt", "virtual_tokens": 4}', "train.max_steps=1",
                      "name=virtual"], capsys)  # fmt: skip
    assert prompt_run.exit_code == 0, prompt_run.err
    refused = cli(["export", tmp_path / "runs" / "virtual", "--merged"], capsys)
    assert refused.exit_code != 0 and "nothing to merge" in refused.err


def test_an_exported_bottleneck_adapter_loads_with_the_code_its_readme_gives(tmp_path, tiny_model_dir, capsys):
    """A person copies the exported README's loading code into a fresh Python: tunelab's own PEFT method must load
    (the README says how), and the README does not claim what holds for LoRA only (vLLM's LoRA serving)."""
    import re
    import subprocess
    import sys

    recipe = tiny_recipe(tmp_path, tiny_model_dir, eval={"forgetting": {"enabled": False}}, export={"merge": False})
    section = {"type": "bottleneck", "size": 8}
    assert cli(["run", recipe, f"method={json.dumps(section)}", "train.max_steps=2"], capsys).exit_code == 0
    run = tmp_path / "runs" / "tiny"
    assert cli(["export", run], capsys).exit_code == 0
    readme = (run / "export" / "adapter" / "README.md").read_text()
    assert "Bottleneck adapters" in readme and "vllm" not in readme.lower()
    code = re.search(r"```python\n(.*?)```", readme, re.S).group(1)
    code += "print(type(model.base_model).__name__, model.peft_config['default'].size)\n"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert loaded.stdout.split()[-2:] == ["BottleneckModel", "8"]
    refused = cli(["export", run, "--merged"], capsys)
    assert refused.exit_code != 0 and "nonlinearity" in refused.err
