"""`tunelab run` across the options users combine, through the real CLI on the tiny model.

Round 1's end-to-end tests all had a test set; the first recipe tried without one crashed after training. Every
method × {test set or not} × {validation fraction, file, none} × {merge on, off} × {registry, plain files} ×
{forgetting check on, off} would be 144 runs (merge on for full/freeze: the default left unset, since they save a
full model and an explicit `merge: true` is refused); the 9 rows below cover every *pair* of option values (checked
by `test_the_matrix_covers_every_pair`), which is where interaction bugs like that one live.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import yaml

from helpers import cli, quickstart_records, read_metrics, shared_data, tiny_recipe, write_jsonl

FACTORS = {
    "method": ["lora", "full", "freeze"],
    "validation": ["fraction", "file", "none"],
    "test": [True, False],
    "merge": [True, False],
    "source": ["registry", "plain"],
    "forgetting": [True, False],
}
# method, validation, test set, merge, source, forgetting check
MATRIX = [
    ("lora", "fraction", False, True, "registry", True),
    ("lora", "file", True, False, "plain", False),
    ("lora", "none", True, True, "registry", True),
    ("full", "fraction", True, False, "plain", True),
    ("full", "file", False, True, "plain", True),
    ("full", "none", True, True, "registry", False),
    ("freeze", "fraction", True, False, "registry", False),
    ("freeze", "file", False, True, "registry", False),
    ("freeze", "none", False, False, "plain", True),
]
STEPS = 4
TRAIN_RECORDS = 40


def test_the_matrix_covers_every_pair():
    rows = [dict(zip(FACTORS, row, strict=True)) for row in MATRIX]
    for first, second in itertools.combinations(FACTORS, 2):
        for a, b in itertools.product(FACTORS[first], FACTORS[second]):
            assert any(r[first] == a and r[second] == b for r in rows), f"{first}={a} with {second}={b}"


def write_registry(folder: Path, records: list[dict]) -> Path:
    """A LLaMA-Factory registry with one alpaca and one sharegpt dataset (its own column and tag names)."""
    half = len(records) // 2
    pairs = [(r["messages"][-2]["content"], r["messages"][-1]["content"]) for r in records]
    alpaca = [{"instruction": prompt, "input": "", "output": answer} for prompt, answer in pairs[:half]]
    sharegpt = [
        {"dialog": [{"speaker": "user", "text": prompt}, {"speaker": "bot", "text": answer}]}
        for prompt, answer in pairs[half:]
    ]
    (folder / "orders_alpaca.json").write_text(json.dumps(alpaca, ensure_ascii=False), encoding="utf-8")
    (folder / "orders_chat.json").write_text(json.dumps(sharegpt, ensure_ascii=False), encoding="utf-8")
    registry = {
        "orders_alpaca": {"file_name": "orders_alpaca.json"},
        "orders_chat": {
            "file_name": "orders_chat.json",
            "formatting": "sharegpt",
            "columns": {"messages": "dialog"},
            "tags": {"role_tag": "speaker", "content_tag": "text", "user_tag": "user", "assistant_tag": "bot"},
        },
    }
    path = folder / "dataset_info.json"
    path.write_text(json.dumps(registry), encoding="utf-8")
    return path


def matrix_recipe(tmp_path: Path, model_dir: Path, method, validation, test, merge, source, forgetting) -> Path:
    records = quickstart_records("train", TRAIN_RECORDS)
    held_out = quickstart_records("test", 10)
    data: dict = {"test": str(write_jsonl(tmp_path / "held_out.jsonl", held_out[:4])) if test else None}
    if source == "registry":
        data |= {"sources": [], "registry": str(write_registry(tmp_path, records)),
                 "datasets": ["orders_alpaca", "orders_chat"]}  # fmt: skip
    else:
        data["sources"] = [{"path": str(write_jsonl(tmp_path / "orders.jsonl", records))}]
    data["validation"] = {"fraction": 0.1, "none": None,
                          "file": str(write_jsonl(tmp_path / "valid.jsonl", held_out[6:9]))}[validation]  # fmt: skip
    method_section = {"type": method} | ({"r": 4, "alpha": 8} if method == "lora" else {})
    method_section |= {"trainable_layers": 1} if method == "freeze" else {}
    path = tiny_recipe(
        tmp_path,
        model_dir,
        data=data,
        train={"max_steps": STEPS, "eval_steps": 2, "save_steps": 2, "learning_rate": 1e-3},
        eval={"forgetting": {"enabled": forgetting, "limit": 2, "shots": 0}},
        export={"merge": merge, "verify_prompts": 2},
    )
    recipe = yaml.safe_load(path.read_text(encoding="utf-8")) | {"method": method_section}
    if method != "lora" and merge:  # full and freeze save a full model: merge is left at its default, not set
        del recipe["export"]["merge"]
    path.write_text(yaml.safe_dump(recipe, allow_unicode=True), encoding="utf-8")
    return path


@pytest.mark.parametrize("row", MATRIX, ids=["-".join(map(str, row)) for row in MATRIX])
def test_run_completes_with_the_expected_files(tmp_path, tiny_model_dir, capsys, row):
    method, validation, test, merge, source, forgetting = row
    recipe = matrix_recipe(tmp_path, tiny_model_dir, *row)
    result = cli(["run", recipe], capsys)
    assert result.exit_code == 0, result.err
    run = tmp_path / "runs" / "tiny"
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "completed" and status["step"] == STEPS

    expected = {"recipe.yaml", "metrics.jsonl", "training.json", "plots/loss.png", "data/summary.json",
                "data/splits.json", "data/audit/report.md", "eval/report.html", "eval/report.md"}  # fmt: skip
    expected |= {"adapter/adapter_config.json"} if method == "lora" else {"merged/model.safetensors"}
    expected |= {"merged/model.safetensors", "merged/verification.json"} if method == "lora" and merge else set()
    expected |= {"eval/predictions_base.jsonl", "eval/predictions_tuned.jsonl", "eval/metrics.json"} if test else set()
    expected |= {"eval/forgetting.json"} if forgetting else set()
    missing = sorted(part for part in expected if not (run / part).is_file())
    assert not missing, missing
    absent = ({"adapter"} if method != "lora" else set()) | ({"merged"} if method == "lora" and not merge else set())
    absent |= {"eval/predictions_tuned.jsonl"} if not test else set()
    absent |= {"eval/forgetting.json"} if not forgetting else set()
    assert not [part for part in absent if (run / part).exists()]
    assert not list(run.glob(".*partial*")), "a scratch folder was left behind"

    metrics = read_metrics(run)
    assert [r["step"] for r in metrics if "loss" in r] == list(range(1, STEPS + 1))
    assert any("eval_loss" in r for r in metrics) == (validation != "none")
    splits = json.loads((run / "data" / "splits.json").read_text())
    assert 0 < len(splits["train"]) + (len(splits["validation"]) if validation == "fraction" else 0) <= TRAIN_RECORDS
    assert len(splits["test"]) == (4 if test else 0)
    if test:
        tuned = (run / "eval" / "predictions_tuned.jsonl").read_text().splitlines()
        assert len(tuned) == 4
    if method == "lora" and merge:
        assert json.loads((run / "merged" / "verification.json").read_text())["identical_outputs"]
    assert "Run report: tiny" in (run / "eval" / "report.html").read_text()

    assert "completed" in cli(["status", run], capsys).out
    answer = cli(["chat", run, "--prompt", "Send 2 mugs to Anna in Oslo", "--max-new-tokens", "4"], capsys)
    assert answer.exit_code == 0, answer.err


def test_the_llamafactory_registry_recipe_without_a_test_set(tmp_path, tiny_model_dir, capsys):
    """The recipe from the report: LoRA on three LLaMA-Factory demo sets, validation 5%, no test set, merge on."""
    registry = shared_data("llamafactory", "dataset_info.json")
    recipe = tiny_recipe(
        tmp_path,
        tiny_model_dir,
        data={
            "sources": [],
            "registry": str(registry),
            "test": None,
            "validation": 0.05,
            "datasets": ["alpaca_zh_demo", "glaive_toolcall_en_demo", "identity"],
        },  # fmt: skip
        train={"max_steps": 6, "eval_steps": 6, "save_steps": 6},
        eval={"forgetting": False},
        export={"merge": True},
    )
    result = cli(["run", recipe], capsys)
    assert result.exit_code == 0, result.err
    run = tmp_path / "runs" / "tiny"
    assert json.loads((run / "status.json").read_text())["state"] == "completed"
    check = json.loads((run / "merged" / "verification.json").read_text())
    assert check["identical_outputs"] and check["prompts"] == 2  # prompts from the validation records
    assert "Traceback" not in result.err


@pytest.mark.parametrize("method", [{"type": "bottleneck", "size": 8}, {"type": "prompt", "virtual_tokens": 4},
                                    {"type": "qlora", "r": 4, "alpha": 8}])  # fmt: skip
def test_other_methods_on_llamafactory_demo_sets_without_a_test_set(tmp_path, tiny_model_dir, capsys, method):
    """Methods other than LoRA on outside data (LLaMA-Factory's demo sets: Chinese instructions, tool calls, identity),
    no test set: each trains, saves its adapter, chats from the command line and exports."""
    registry = shared_data("llamafactory", "dataset_info.json")
    data = {"sources": [], "registry": str(registry), "test": None, "validation": 0.05,
            "datasets": ["alpaca_zh_demo", "glaive_toolcall_en_demo", "identity"]}  # fmt: skip
    recipe = tiny_recipe(tmp_path, tiny_model_dir, data=data, method=None, train={"max_steps": 4},
                         eval={"forgetting": False}, export={"merge": False})  # fmt: skip
    result = cli(["run", recipe, f"method={json.dumps(method)}"], capsys)
    assert result.exit_code == 0, result.err
    run = tmp_path / "runs" / "tiny"
    assert json.loads((run / "status.json").read_text())["state"] == "completed"
    assert (run / "adapter" / "adapter_config.json").is_file() and not (run / "eval" / "metrics.json").exists()
    answer = cli(["chat", run, "--prompt", "你好，请介绍一下你自己", "--max-new-tokens", "4"], capsys)
    assert answer.exit_code == 0, answer.err
    assert cli(["export", run], capsys).exit_code == 0 and (run / "export" / "adapter" / "README.md").is_file()
