"""Answer checks of the audit: an answer that echoes the prompt is a warning, one that extracts from it is not."""

from __future__ import annotations

import json

import pytest

from helpers import QUICKSTART, shared_data
from tunelab.data.audit import audit_sets
from tunelab.data.audit_report import render_markdown, summary_lines
from tunelab.data.quality import answer_flags, language
from tunelab.data.workbench import load_lenient

ECHO, EXTRACTED = "answer_repeats_prompt", "answer_extracted_from_prompt"


def record(prompt: str, answer: str, system: str | None = None) -> dict:
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    return {"id": "r", "messages": ([{"role": "system", "content": system}] if system else []) + messages}


@pytest.mark.parametrize(
    "prompt, answer",
    [
        ("What is the capital of France?", "What is the capital of France?"),
        ("What is the capital of France?", "what is the capital of france"),  # equal after light normalisation
        ("What is 2+2?", "What is 2+2? 4"),  # contains the whole prompt, which is most of the answer
        (
            "Summarize: The quick brown fox jumps over the lazy dog near the river bank today.",
            "The quick brown fox jumps over the lazy dog near the river bank today.",  # nearly the whole prompt
        ),
        ('{"name": "Lisa Chen", "city": "Boston"}', '{"name":"Lisa Chen","city":"Boston"}'),  # the same JSON
        ("她没有迟交作业。", "这句话的意思是，她没有迟交作业。"),
    ],
)
def test_echoes_are_warnings(prompt, answer):
    flags = answer_flags(record(prompt, answer))
    assert ECHO in flags and EXTRACTED not in flags


@pytest.mark.parametrize(
    "prompt, answer",
    [
        ("Name: Lisa Chen; City: Boston; Extract as JSON", '{"name": "Lisa Chen", "city": "Boston"}'),
        # without punctuation and spaces this answer is the prompt letter for letter: restructured, not echoed
        ("Name: Lisa Chen; City: Boston", '{"name": "Lisa Chen", "city": "Boston"}'),
        ("Name: Lisa Chen; City: Boston", "Lisa Chen"),  # a plain span
        ("Order: 2 red scarves for Jack Patel, to Toronto", '```json\n{"customer": "Jack Patel", "quantity": 2}\n```'),
        ("Input a URL and output the domain.\n\nhttps://docs.google.com/document", "google.com"),
        ("姓名：王小明；城市：北京。请提取为JSON", '{"姓名": "王小明", "城市": "北京"}'),
        ("王小明住在北京，他想买三件衬衫。", '{"name": "王小明", "city": "北京"}'),
        ("请从下面的句子中找出城市名：王小明住在北京。", "北京"),
    ],
)
def test_extraction_is_information_not_an_echo(prompt, answer):
    flags = answer_flags(record(prompt, answer))
    assert EXTRACTED in flags and ECHO not in flags


@pytest.mark.parametrize(
    "prompt, answer",
    [
        ("What is the capital of France?", "The capital of France is Paris."),
        ("Translate to French: good morning", "bonjour"),
        ("Write a poem about cats", "Cats are soft, cats are warm, cats will keep you safe from harm."),
        ("20和45的最大公因数是多少？", "20 和 45 的最大公因数是 5。"),  # "5" is in "45", but not taken from it
        ("Lisa Chen lives in Boston. Extract as JSON", '{"name": "Lisa Chen", "city": "Boston", "age": 41}'),
    ],
)
def test_normal_answers_are_neither(prompt, answer):
    flags = answer_flags(record(prompt, answer))
    assert ECHO not in flags and EXTRACTED not in flags


def test_short_answers_are_only_short():
    assert answer_flags(record("Is it blue?", "y")) == ["short_answer"]


@pytest.mark.parametrize(
    "text, expected",
    [("The sky is blue.", "en"), ("天空是蓝色的。", "zh"), ("Ünïcödé façade", "en"), ("1234 !!", "other"),
     ("订单 order 订单 order 订", "mixed"), ("", "other")],
)  # fmt: skip
def test_language(text, expected):
    assert language(text) == expected


def test_answer_language_mismatch_still_flagged():
    assert "answer_in_other_language" in answer_flags(record("天空是什么颜色的？", "The sky is blue."))
    assert "answer_in_other_language" not in answer_flags(record("天空是什么颜色的？", '{"color": "blue"}'))


def test_quickstart_orders_are_not_echoes():
    records = [r for split in ("train", "test") for r in load_lenient(QUICKSTART / f"{split}.jsonl")]
    flags = [answer_flags(r) for r in records]
    assert not any(ECHO in f for f in flags)
    extracted = sum(EXTRACTED in f for f in flags)
    assert 0 < extracted < len(records)  # English orders copy names and cities; Chinese ones are translated


def test_audit_reports_extraction_as_information():
    rows = [record(f"Name: Person {i}; City: Boston", json.dumps({"name": f"Person {i}", "city": "Boston"}))
            for i in range(5)]  # fmt: skip
    rows = [dict(r, id=f"r{i}") for i, r in enumerate(rows)] + [dict(record("Say hi", "Say hi"), id="echo")]
    report = audit_sets({"train": rows}, {"train": "train"}).report
    assert report["quality"]["info"][EXTRACTED]["count"] == 5
    assert report["quality"]["flags"][ECHO]["count"] == 1 and report["summary"][ECHO] == 1
    assert EXTRACTED not in report["summary"] and EXTRACTED not in report["quality"]["flags"]
    markdown = render_markdown(report, {})
    assert "answer extracted from prompt: 5 (expected for extraction tasks, not a problem" in markdown
    assert any("answers extracted from the prompt: 5" in line for line in summary_lines(report))


def test_llamafactory_demo_sets():
    folder = shared_data("llamafactory")
    counts = {}
    for name in ("alpaca_en_demo.json", "alpaca_zh_demo.json", "identity.json", "glaive_toolcall_en_demo.json"):
        flags = [answer_flags(r) for r in load_lenient(folder / name)]
        counts[name] = (sum(ECHO in f for f in flags), sum(EXTRACTED in f for f in flags))
    # alpaca_en: 5 text-editing answers used to count as echoes (proofread, reorder, ...); they edit, not echo.
    # alpaca_zh: one answer that prefixes the prompt with "这句话的意思是".
    assert counts == {
        "alpaca_en_demo.json": (0, 37),
        "alpaca_zh_demo.json": (1, 9),
        "identity.json": (0, 0),
        "glaive_toolcall_en_demo.json": (0, 0),
    }
