"""Answers cut off at eval.max_new_tokens: counts per category, reference lengths, the suggested limit, the warning."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from tunelab.eval import heldout
from tunelab.eval.heldout import evaluate_model
from tunelab.eval.lengths import (
    counts_from_report,
    reference_length_warning,
    reference_token_lengths,
    suggest_max_new_tokens,
    truncation_counts,
    truncation_rows,
    truncation_section,
    truncation_sentences,
)

ANSWERS = ['{"a": 1}', '{"customer": "Alice", "product": "shirt", "quantity": 2, "size": "M", "city": "Berlin"}']


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def record(n: int, answer: str, category: str | None = None) -> dict:
    messages = [{"role": "user", "content": f"question {n}"}, {"role": "assistant", "content": answer}]
    return {"id": f"r{n}", "category": category, "messages": messages}


def test_suggested_limit_fits_the_longest_reference_its_stop_token_and_headroom():
    assert suggest_max_new_tokens(97) == 112  # 97 · 1.1 → 107, + 1 stop token → 108, rounded up to 16
    assert suggest_max_new_tokens(14) == 32  # 16 would leave 1 token of headroom for a 14-token answer
    assert suggest_max_new_tokens(0) == 16
    for longest in range(1, 500):
        assert suggest_max_new_tokens(longest) >= longest * 1.1 + 1 and suggest_max_new_tokens(longest) % 16 == 0


def test_reference_length_warning_counts_references_that_do_not_fit_with_their_stop_token(tokenizer):
    short, long = reference_token_lengths(ANSWERS, tokenizer)
    assert 0 < short < long
    records = [record(n, ANSWERS[n % 2]) for n in range(6)] + [{"messages": [{"role": "user", "content": "q"}]}]
    warning = reference_length_warning(records, tokenizer, max_new_tokens=long)  # room for the text, not the stop
    assert warning == (
        f"3 of 6 test references are longer than eval.max_new_tokens={long} tokens allow (longest {long} tokens, "
        f"plus the end-of-turn token); answers cut at the limit count as failures; "
        f"set eval.max_new_tokens: {suggest_max_new_tokens(long)}"
    )
    assert reference_length_warning(records, tokenizer, max_new_tokens=long + 1) is None
    assert reference_length_warning([], tokenizer, 4) is None


def test_truncation_counts_per_category():
    rows = [{"category": c, "finish_reason": f} for c, f in [("en", "length"), ("en", "stop"), ("zh", "stop"),
                                                             (None, "length")]]  # fmt: skip
    counts = truncation_counts(rows)
    assert counts["count"] == 4 and counts["truncated"] == 2
    assert counts["by_category"] == {"(none)": {"count": 1, "truncated": 1}, "en": {"count": 2, "truncated": 1},
                                     "zh": {"count": 1, "truncated": 0}}  # fmt: skip
    assert truncation_counts([{"finish_reason": "length"}])["by_category"] == {}


def test_the_section_appears_only_when_an_answer_was_cut():
    none_cut = {"base": {"count": 3, "truncated": 0, "by_category": {}}}
    assert truncation_section(none_cut, {}, 64) is None


def _section(over: int, longest: int | None):
    counts = {
        "base": {"count": 152, "truncated": 2, "by_category": {"a": {"count": 100, "truncated": 2}}},
        "tuned": {"count": 152, "truncated": 25, "by_category": {"a": {"count": 100, "truncated": 25}}},
    }
    report = {"max_new_tokens": 400, "references_over_limit": over, "suggested_max_new_tokens": 688}
    if longest is not None:
        report["reference_tokens"] = {"max": longest, "p95": 480, "mean": 300.0}
    return truncation_section(counts, {"tuned": report}, max_new_tokens=None)


def test_sentences_say_the_cut_answers_count_as_failures_and_which_limit_to_set():
    first, second = truncation_sentences(_section(over=30, longest=612))
    assert first == (
        "2 of 152 base answers and 25 of 152 tuned answers stopped at the token limit "
        "(eval.max_new_tokens=400); they are scored as they stand, so they count as failures."
    )
    assert "30 references are too long" in second and "longest 612 tokens, 95th percentile 480" in second
    assert second.endswith("set eval.max_new_tokens: 688.")
    _, fits = truncation_sentences(_section(over=0, longest=300))
    assert "Every reference fits" in fits and "a higher limit alone would not make them right" in fits
    _, unknown = truncation_sentences(_section(over=0, longest=None))
    assert "were not recorded" in unknown
    head, rows = truncation_rows(_section(over=30, longest=612))
    assert head == ("category", "base cut off", "tuned cut off")
    assert rows == [("all", "2 of 152 (1%)", "25 of 152 (16%)"), ("a", "2 of 100 (2%)", "25 of 100 (25%)")]


def test_evaluate_model_records_cut_answers_and_reference_lengths(tokenizer, tmp_path, monkeypatch):
    records = [record(n, ANSWERS[1], category="long" if n < 3 else "short") for n in range(5)]
    limit = reference_token_lengths(ANSWERS[1:], tokenizer)[0] // 2

    def fake_generate(model, tokenizer, prompts, max_new_tokens, batch_size=16, on_batch=None):
        results = [{"text": ANSWERS[1][:20], "finish_reason": "length" if i < 3 else "stop",
                    "completion_tokens": max_new_tokens} for i in range(len(prompts))]  # fmt: skip
        on_batch(list(range(len(prompts))), results)
        return results

    monkeypatch.setattr(heldout, "generate_batch", fake_generate)
    report = evaluate_model(None, tokenizer, records, tmp_path / "p.jsonl", ["json_validity"], max_new_tokens=limit)
    assert report["truncated"] == 3 and report["truncated_by_category"] == {"long": 3, "short": 0}
    longest = reference_token_lengths(ANSWERS[1:], tokenizer)[0]
    assert report["reference_tokens"] == {"max": longest, "p95": longest, "mean": float(longest)}
    assert report["references_over_limit"] == 5 and report["max_new_tokens"] == limit
    assert report["suggested_max_new_tokens"] == suggest_max_new_tokens(longest)
    assert counts_from_report(report)["by_category"]["long"] == {"count": 3, "truncated": 3}
    assert report["metrics"]["json_validity"] == 0.0  # cut answers count as failures
