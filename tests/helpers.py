"""Shared helpers for end-to-end tests: tiny recipes, small data files, running the real CLI in-process."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tunelab.cli import main

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared_data(*parts: str) -> Path:
    """Path inside ../shared/data; skips the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path}")
    return path


@dataclass
class CliResult:
    exit_code: int
    out: str
    err: str


def cli(args: list[str], capsys) -> CliResult:
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def quickstart_records(split: str, count: int) -> list[dict[str, Any]]:
    lines = (QUICKSTART / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines[:count]]


def tiny_recipe(tmp_path: Path, model_dir: Path, **sections: Any) -> Path:
    """A recipe for the tiny model on a slice of the quickstart data; keyword sections override the defaults."""
    train = write_jsonl(tmp_path / "train.jsonl", quickstart_records("train", 48))
    test = write_jsonl(tmp_path / "test.jsonl", quickstart_records("test", 6))
    recipe: dict[str, Any] = {
        "name": "tiny",
        "output_dir": str(tmp_path / "runs"),
        "model": {"name": str(model_dir)},
        "data": {"sources": [{"path": str(train)}], "validation": 0.125, "test": str(test), "max_length": 256},
        "method": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
        "train": {
            "max_steps": 8,
            "learning_rate": 5e-3,
            "logging_steps": 1,
            "eval_steps": 4,
            "save_steps": 4,
            "per_device_train_batch_size": 4,
            "warmup_steps": 0,
            "lr_scheduler_type": "constant",
            "bf16": False,
        },
        "eval": {
            "metrics": ["json_validity", "field_accuracy", "exact_match"],
            "max_new_tokens": 16,
            "forgetting": {"limit": 4, "shots": 1},  # a few probe items per subject keep the tests quick
        },
        "export": {"merge": True, "verify_prompts": 2},
    }
    for key, value in sections.items():
        recipe[key] = value if not isinstance(value, dict) else {**recipe.get(key, {}), **value}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return path


def two_lora_adapters(model_dir: Path, folder: Path, second_targets=("q_proj", "v_proj")):
    """The tiny model in eval mode with two LoRA adapters of different ranks and random non-zero weights: "a"
    (r=8, every linear layer) and "b" (r=4, `second_targets`), each saved by PEFT and loaded back."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    folders = {}
    for name, rank, targets in (("a", 8, "all-linear"), ("b", 4, list(second_targets))):
        torch.manual_seed(len(folders))
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                               LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=targets))  # fmt: skip
        for parameter_name, parameter in model.named_parameters():
            if "lora_B" in parameter_name:
                torch.nn.init.normal_(parameter, std=0.05)
        model.save_pretrained(folder / name)
        folders[name] = folder / name
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(model_dir), folders["a"],
                                      adapter_name="a")  # fmt: skip
    model.load_adapter(folders["b"], adapter_name="b")
    return model.eval()


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
