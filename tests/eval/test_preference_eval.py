"""Held-out preference pairs: scoring, the length rule, and the log-probability trend the report flags."""

from __future__ import annotations

from tunelab.eval.preference import pair_report, score_pairs
from tunelab.eval.report_rows import log_prob_line
from tunelab.eval.run_report import log_prob_trend


def pair(index: int, chosen: str, rejected: str) -> dict:
    prompt = [{"role": "user", "content": f"q{index}"}]
    return {"id": f"p{index}", "prompt": prompt, "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}]}  # fmt: skip


def test_pairs_are_scored_with_the_length_rule_beside():
    pairs = [pair(0, "long right answer", "short"), pair(1, "ok", "a much longer wrong answer"), pair(2, "ab", "cd")]
    scores = {
        "long right answer": 1.0,
        "short": 0.0,
        "ok": 0.5,
        "a much longer wrong answer": 0.9,
        "ab": 0.2,
        "cd": 0.1,
    }
    rows = score_pairs(pairs, lambda prompt, answer: scores[answer[0]["content"]])
    assert [row["scores"]["pair_accuracy"] for row in rows] == [1.0, 0.0, 1.0]
    assert [row["scores"]["length_rule"] for row in rows] == [1.0, 0.0, 0.0]  # a tie is not a win for the rule
    report = pair_report(rows, "tuned", "test")
    assert report["metrics"]["pair_accuracy"] == 2 / 3 and report["metrics"]["length_rule"] == 1 / 3


def test_both_log_probabilities_falling_is_flagged():
    rows = [{"step": 1, "logps/chosen": -20.0, "logps/rejected": -25.0},
            {"step": 2, "logps/chosen": -30.0, "logps/rejected": -60.0}]  # fmt: skip
    trend = log_prob_trend(rows)
    assert trend["both_fell"] and "WARNING: both fell" in log_prob_line(trend)
    rows[1]["logps/chosen"] = -15.0
    assert not log_prob_trend(rows)["both_fell"] and "WARNING" not in log_prob_line(log_prob_trend(rows))
    assert log_prob_trend([{"step": 1, "loss": 1.0}]) is None
