"""`tunelab advise`: figures measured on the data, and a different choice for an extraction task and a fact lookup."""

from __future__ import annotations

import json
import subprocess
import sys

from helpers import QUICKSTART, cli, write_jsonl
from tunelab.advise import answer_in_question, retrieval_hits, split_for_advice

FACTS = QUICKSTART.parent / "advise" / "facts.jsonl"


def _chat(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def test_answer_words_in_the_question():
    assert answer_in_question(_chat("Ship 3 red caps to Lyon", '{"city": "Lyon", "n": 3, "to": "Rome"}')) == 2 / 3
    assert answer_in_question(_chat("订三顶帽子", "三顶")) == 1.0
    assert answer_in_question(_chat("Price of NW-1?", "€12.00")) == 0.0


def test_retrieval_finds_answers_that_other_records_hold():
    pool = [_chat("What does NW-1 cost?", "€5"), _chat("Where is NW-2 stocked?", "Lyon")]
    held = [_chat("Price of NW-1, please.", "€5"), _chat("Which warehouse ships NW-3?", "Turin")]
    assert retrieval_hits(held, pool, 1) == [True, False]


def test_the_fact_data_file_is_what_its_generator_writes(tmp_path):
    out = tmp_path / "facts.jsonl"
    subprocess.run([sys.executable, str(FACTS.parent / "make_facts.py"), "--out", str(out)], check=True)
    assert out.read_bytes() == FACTS.read_bytes()


def test_advice_differs_for_extraction_and_fact_lookup(tmp_path, tiny_model_dir, capsys):
    choices = {}
    for name, path in (("orders", QUICKSTART / "train.jsonl"), ("facts", FACTS)):
        out = tmp_path / f"{name}.json"
        result = cli(["advise", path, "--model", tiny_model_dir, "--sample", "12", "--json", out], capsys)
        assert result.exit_code == 0, result.err
        figures = json.loads(out.read_text())
        choices[name] = figures["advice"]["choice"]
        assert figures["prompting"]["scores"]["k_shot"]
        assert "Why:" in result.out and "Measured:" in result.out and "95% CI" in result.out
    assert choices == {"orders": "fine-tuning (LoRA)", "facts": "retrieval (RAG)"}


def test_too_little_or_bad_data_is_named(tmp_path, tiny_model_dir, capsys):
    few = write_jsonl(tmp_path / "few.jsonl", [_chat(f"q{i}", "a") for i in range(5)])
    result = cli(["advise", few, "--model", tiny_model_dir], capsys)
    assert result.exit_code != 0 and "at least 20" in result.err
    result = cli(["advise", tmp_path / "missing.jsonl", "--model", tiny_model_dir], capsys)
    assert result.exit_code != 0 and "missing.jsonl" in result.err and "Traceback" not in result.err


def test_the_held_out_questions_are_a_quarter_at_most():
    held, pool = split_for_advice([_chat(f"q{i}", "a") for i in range(40)], sample=40, seed=1)
    assert len(held) == 10 and len(pool) == 30
