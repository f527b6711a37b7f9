"""Benchmark contamination: planted benchmark questions are all found, clean records are never flagged."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

from helpers import shared_data
from tunelab.data.benchmarks import BenchmarkItem, read_benchmark
from tunelab.data.contamination import (
    benchmark_ngrams,
    find_contamination,
    item_texts,
    join_tokens,
    normalized_tokens,
)


def record(record_id: str, user: str, assistant: str = "OK.") -> dict:
    messages = [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return {"id": record_id, "messages": messages, "source": "synthetic"}


def item(question: str, choices: list[str], item_id: str = "q1") -> BenchmarkItem:
    return BenchmarkItem(item_id, "demo", question, choices, list("ABCD"[: len(choices)]), "A", "demo")


@pytest.fixture(scope="module")
def mmlu_test() -> list[BenchmarkItem]:
    return read_benchmark(shared_data("mmlu", "data", "test"))


@pytest.fixture(scope="module")
def mmlu_index(mmlu_test):
    return benchmark_ngrams(mmlu_test)


def clean_records(items: list[BenchmarkItem], count: int, separator: str, seed: int) -> list[dict]:
    """Random text in the benchmark's own vocabulary; every fifth record also holds a 12-token run of a real question,
    one token short of an n-gram, so the test proves the n-gram length is what decides."""
    rng = random.Random(seed)
    vocabulary = sorted({token for it in items[:3000] for token in normalized_tokens(it.question)})
    long_questions = [it.question for it in items if len(normalized_tokens(it.question)) >= 14]
    records = []
    for i in range(count):
        words = [rng.choice(vocabulary) for _ in range(rng.randint(20, 120))]
        if i % 5 == 0:
            words[10:10] = normalized_tokens(rng.choice(long_questions))[:12]
        records.append(record(f"clean-{i}", separator.join(words[: len(words) // 2]), separator.join(words[-20:])))
    return records


def planted_record(i: int, planted: BenchmarkItem) -> dict:
    """Four ways a benchmark question ends up in training data: verbatim, as a formatted quiz, re-cased, split."""
    labelled = "\n".join(f"{label}. {choice}" for label, choice in zip(planted.labels, planted.choices, strict=True))
    if i % 4 == 0:
        return record(f"planted-{i}", f"My teacher asked: {planted.question} Can you help?", "Sure.")
    if i % 4 == 1:
        return record(f"planted-{i}", f"{planted.question}\n{labelled}", f"The answer is {planted.answer}.")
    if i % 4 == 2:
        return record(f"planted-{i}", f"QUESTION >>> {planted.question.upper()} <<< please!!", "Done")
    return record(f"planted-{i}", f"Background first. {planted.question}", f"Options were:\n{labelled}")


def test_twenty_planted_mmlu_questions_are_found_among_500_clean_records(mmlu_test, mmlu_index):
    rng = random.Random(13)
    candidates = [it for it in mmlu_test if len(normalized_tokens(it.question)) >= 13]
    planted = rng.sample(candidates, 20)
    records = clean_records(mmlu_test, 500, " ", seed=1) + [planted_record(i, it) for i, it in enumerate(planted)]
    random.Random(2).shuffle(records)

    findings = find_contamination(records, mmlu_index)

    assert sorted(f["record_id"] for f in findings) == sorted(f"planted-{i}" for i in range(20))
    by_id = {item.id: item for item in mmlu_test}
    for finding in findings:
        source = planted[int(finding["record_id"].split("-")[1])]
        assert by_id[finding["benchmark_item"]].question == source.question  # the item itself (or its twin)
        assert finding["subject"] == source.subject and finding["benchmark"] == "mmlu"
        assert finding["overlap_ngrams"] >= 1 and finding["source"] == "synthetic"
        assert len(normalized_tokens(finding["example_ngram"])) == 13


def test_verbatim_question_counts_every_shared_ngram(mmlu_test, mmlu_index):
    long_item = max(mmlu_test[:500], key=lambda it: len(normalized_tokens(it.question)))
    tokens = len(normalized_tokens(long_item.question))
    [finding] = find_contamination([record("r", long_item.question)], mmlu_index)
    assert finding["overlap_ngrams"] == tokens - 13 + 1
    assert finding["example_ngram"] == " ".join(normalized_tokens(long_item.question)[:13])


def test_cmmlu_questions_are_found_by_character_ngrams():
    items = read_benchmark(shared_data("cmmlu", "data", "test"))
    index = benchmark_ngrams(items)
    rng = random.Random(5)
    planted = rng.sample([it for it in items if len(normalized_tokens(it.question)) >= 16], 10)
    records = clean_records(items, 300, "", seed=3)  # Chinese is written without spaces
    records += [planted_record(i, it) for i, it in enumerate(planted)]
    records.append(record("zh-in-sentence", f"老师在课堂上问：“{planted[0].question}”大家讨论了很久。"))

    findings = find_contamination(records, index)

    found = {f["record_id"]: f for f in findings}
    assert set(found) == {f"planted-{i}" for i in range(10)} | {"zh-in-sentence"}
    assert found["zh-in-sentence"]["subject"] == planted[0].subject
    assert found["zh-in-sentence"]["benchmark"] == "cmmlu"
    example = found["zh-in-sentence"]["example_ngram"]
    assert " " not in example and len(example) == 13  # 13 characters, shown without spaces
    assert example in planted[0].question.replace("，", "").replace("。", "")


def test_cjk_characters_are_single_tokens_and_width_and_case_are_normalised():
    assert normalized_tokens("ＤＮＡ的复制，Is FAST!") == ["dna", "的", "复", "制", "is", "fast"]
    assert normalized_tokens("Don't stop_now—ok?") == ["don", "t", "stop", "now", "ok"]
    assert join_tokens(["dna", "的", "复", "制", "is"]) == "dna 的复制 is"


def test_mixed_script_record_quoting_an_english_question_is_found():
    question = "Which of the following best describes the function of the mitochondria in eukaryotic cells?"
    index = benchmark_ngrams([item(question, ["Energy", "Storage", "Transport", "Defence"])])
    findings = find_contamination([record("zh", f"请翻译这道题：{question} 谢谢")], index)
    assert [f["record_id"] for f in findings] == ["zh"]


def test_short_item_is_compared_whole():
    # "capital of france paris lyon nice lille" is 7 tokens, shorter than n = 13: only the whole sequence counts.
    short = item("Capital of France?", ["Paris", "Lyon", "Nice", "Lille"])
    index = benchmark_ngrams([short])
    records = [
        record("whole", "Quiz time. CAPITAL OF FRANCE: Paris / Lyon / Nice / Lille. Think!"),
        record("labelled", "Capital of France? A) Paris B) Lyon C) Nice D) Lille"),
        record("part", "The capital of France is Paris, not Lyon."),
        record("reordered", "Capital of France? Lyon, Paris, Nice, Lille"),
    ]
    findings = find_contamination(records, index)
    assert sorted(f["record_id"] for f in findings) == ["labelled", "whole"]
    assert all(f["overlap_ngrams"] == 1 for f in findings)
    whole = next(f for f in findings if f["record_id"] == "whole")
    assert whole["example_ngram"] == "capital of france paris lyon nice lille"


def test_tiny_items_are_not_evidence_and_are_not_indexed():
    index = benchmark_ngrams([item("2+2", ["4"])])  # "2 2 4": three tokens
    assert len(index) == 0
    assert find_contamination([record("r", "2 + 2 = 4")], index) == []


def test_record_split_over_turns_and_trl_fields_is_checked():
    question = "Describe in one paragraph the process by which plants convert light energy into chemical energy"
    index = benchmark_ngrams([item(question, ["a", "b"])])
    half = len(question) // 2
    turns = {"id": "t", "messages": [{"role": "user", "content": question[:half]},
                                     {"role": "assistant", "content": question[half:]}]}  # fmt: skip
    preference = {"id": "p", "prompt": "Hi", "chosen": question, "rejected": "No."}
    assert {f["record_id"] for f in find_contamination([turns, preference], index)} == {"t", "p"}


def test_records_without_ids_are_named_by_position_and_chunks_do_not_lose_hits():
    question = "Which of the following statements about the structure of the atomic nucleus is correct"
    index = benchmark_ngrams([item(question, ["a", "b"])])
    records = [{"messages": [{"role": "user", "content": "filler text " * 5}]} for _ in range(25)]
    records[7]["messages"][0]["content"] += question
    records[23]["messages"][0]["content"] = question
    findings = find_contamination(iter(records), index, chunk_records=10)
    assert [f["record_id"] for f in findings] == ["7", "23"]


def test_template_ngrams_shared_by_many_items_can_be_ignored():
    preamble = "For which of these two scenarios does the main character do something clearly morally wrong"
    items = [item(f"{preamble}? Scenario {i}", ["Wrong", "Not wrong"], f"m{i}") for i in range(5)]
    records = [record("r", preamble)]
    assert len(find_contamination(records, benchmark_ngrams(items))) == 1
    assert find_contamination(records, benchmark_ngrams(items, max_items=3)) == []


def test_item_text_is_question_and_choices_plain_and_labelled_or_question_and_answer():
    assert item_texts(item("Q?", ["x", "y"])) == ["Q?\nx\ny", "Q?\nA x B y"]
    gsm = BenchmarkItem("g1", "gsm8k", "How many?", [], [], "18", "gsm8k")
    assert item_texts(gsm) == ["How many?\n18"]


def test_index_is_the_same_in_every_process():
    # Python's own hash() of a string changes with PYTHONHASHSEED; the index must not.
    script = (
        "from tunelab.data.contamination import benchmark_ngrams\n"
        "from tunelab.data.benchmarks import BenchmarkItem\n"
        "q = 'What is the embryological origin of the hyoid bone in the human body today'\n"
        "index = benchmark_ngrams([BenchmarkItem('a', 's', q, ['x', 'y'], ['A', 'B'], 'A', 'mmlu')])\n"
        "print(sorted(int(h) for h in index.hashes[13]))\n"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script], env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True, text=True
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1 and outputs.pop().startswith("[")


def test_n_must_match_the_index():
    index = benchmark_ngrams([item("Q?", ["x", "y"])], n=8)
    with pytest.raises(ValueError, match="n=8"):
        find_contamination([], index, n=13)
