"""Prompted baselines: the task's instructions, similarity-chosen shots from the training split, the report."""

from __future__ import annotations

import json

from helpers import cli, quickstart_records, tiny_recipe
from tunelab.eval.prompted import ShotIndex, baseline_records, prompted_record, task_instructions
from tunelab.runs import read_json


def _chat(record_id: str, question: str, answer: str, system: str | None = "Answer briefly.") -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    return {"id": record_id, "messages": [*messages, {"role": "user", "content": question},
                                          {"role": "assistant", "content": answer}]}  # fmt: skip


def test_instructions_are_the_common_system_prompt_plus_the_schema():
    records = [_chat("a", "q", "x"), _chat("b", "q", "x"), _chat("c", "q", "x", system="Other.")]
    assert task_instructions(records) == "Answer briefly."
    with_schema = task_instructions(records, {"type": "object", "required": ["city"]})
    assert with_schema.startswith("Answer briefly.\n\n") and '"required":["city"]' in with_schema
    assert task_instructions([_chat("a", "q", "x", system=None)]) is None


def test_shots_are_the_most_similar_training_records_and_the_test_answer_stays_last():
    train = [
        _chat("t1", "order three red umbrellas to Paris", "1"),
        _chat("t2", "what is the capital of Peru", "2"),
        _chat("t3", "订三把红色的伞，寄到上海", "3"),
        _chat("t4", "order two blue jackets to Rome", "4"),
    ]
    test = [_chat("q1", "order five red umbrellas to Berlin", "ref"), _chat("q2", "订两把红色的伞，寄到北京", "ref2")]
    shots = ShotIndex(train).nearest(test, 2)
    assert [s["id"] for s in shots[0]] == ["t4", "t1"]  # the most similar sits next to the question
    assert shots[1][-1]["id"] == "t3"
    asked = prompted_record(test[0], "Be exact.", shots[0])
    roles = [m["role"] for m in asked["messages"]]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    assert asked["messages"][0]["content"] == "Be exact." and asked["messages"][-1]["content"] == "ref"
    assert asked["id"] == "q1" and "Answer briefly." not in json.dumps(asked["messages"])


def test_k_shot_never_draws_from_the_test_records():
    train = quickstart_records("train", 40)
    test = quickstart_records("test", 5)
    asked = baseline_records("k_shot", test, train, 4, None)
    train_answers = {r["messages"][-1]["content"] for r in train}
    for record, original in zip(asked, test, strict=True):
        shot_answers = [m["content"] for m in record["messages"][1:-2] if m["role"] == "assistant"]
        assert len(shot_answers) == 4 and set(shot_answers) <= train_answers
        assert record["messages"][-1] == original["messages"][-1]


def test_a_run_scores_both_prompted_baselines_and_reports_them(tmp_path, tiny_model_dir, capsys):
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"type": "object", "required": ["customer"]}))
    recipe = tiny_recipe(tmp_path, tiny_model_dir, export={"merge": False},
                         eval={"k_shot": 2, "forgetting": {"enabled": False}, "json_schema": str(schema)})  # fmt: skip
    result = cli(["run", recipe], capsys)
    assert result.exit_code == 0, result.err
    eval_dir = tmp_path / "runs" / "tiny" / "eval"
    metrics = read_json(eval_dir / "metrics.json")
    assert set(metrics) == {"base", "zero_shot", "k_shot", "tuned"}
    k_shot = [json.loads(line) for line in (eval_dir / "predictions_k_shot.jsonl").read_text().splitlines()]
    base = [json.loads(line) for line in (eval_dir / "predictions_base.jsonl").read_text().splitlines()]
    assert len(k_shot) == len(base) == 6
    assert all(k["prompt_tokens"] > b["prompt_tokens"] for k, b in zip(k_shot, base, strict=True))
    zero_shot = [json.loads(line) for line in (eval_dir / "predictions_zero_shot.jsonl").read_text().splitlines()]
    assert all(z["prompt_tokens"] > b["prompt_tokens"] for z, b in zip(zero_shot, base, strict=True))  # the schema
    for label in ("zero_shot", "k_shot"):
        comparison = read_json(eval_dir / f"comparison_{label}.json")
        assert comparison["baseline"] == label and comparison["count"] == 6
        assert all(len(m["ci95"]) == 2 for m in comparison["metrics"].values())
    report = (eval_dir / "report.md").read_text()
    assert "## Fine-tuning vs prompting the base model" in report and "2-shot" in report
    assert "tokens / 1k requests" in report
    assert "tuned vs prompted base (k-shot)" in result.out


def test_baselines_can_be_limited_to_the_base_model(tmp_path, tiny_model_dir, capsys):
    recipe = tiny_recipe(tmp_path, tiny_model_dir, eval={"baselines": ["base"], "forgetting": {"enabled": False}},
                         train={"max_steps": 2}, export={"merge": False})  # fmt: skip
    assert cli(["run", recipe], capsys).exit_code == 0
    eval_dir = tmp_path / "runs" / "tiny" / "eval"
    assert set(read_json(eval_dir / "metrics.json")) == {"base", "tuned"}
    assert "Fine-tuning vs prompting" not in (eval_dir / "report.md").read_text()


def test_an_unknown_baseline_is_named_with_the_choices(tmp_path, tiny_model_dir, capsys):
    recipe = tiny_recipe(tmp_path, tiny_model_dir, eval={"baselines": ["base", "few_shot"]})
    result = cli(["validate", recipe], capsys)
    assert result.exit_code != 0
    assert "eval.baselines" in result.err and "k_shot" in result.err


def test_longer_prompts_are_evaluated_in_smaller_batches(tmp_path, tiny_model_dir):
    from tunelab.eval.prompted import same_memory_batches
    from tunelab.recipe import load_recipe

    recipe = load_recipe(tiny_recipe(tmp_path, tiny_model_dir, eval={"batch_size": 60}))
    test, train = quickstart_records("test", 10), quickstart_records("train", 40)
    k_shot = baseline_records("k_shot", test, train, 4, None)
    scaled = same_memory_batches(recipe, test, k_shot)
    assert 5 <= scaled.eval.batch_size <= 20 and recipe.eval.batch_size == 60  # the recipe itself is unchanged
    assert same_memory_batches(recipe, test, test) is recipe
