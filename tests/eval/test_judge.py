"""Pairwise judging against a local OpenAI-compatible judge with a known position bias: judging both orders
cancels the bias; unparseable and failing judges are recorded or reported, never losing finished verdicts."""

from __future__ import annotations

import json

import pytest
from judge_server import JudgeServer

from helpers import cli, write_jsonl
from tunelab.errors import TunelabError
from tunelab.eval.judge import (
    EndpointJudge,
    combine,
    fill,
    judge_pairs,
    load_prompt,
    parse_verdict,
    summarize,
    win_rate_interval,
)


def pairs(good_a: int, good_b: int, total: int = 20) -> list[dict]:
    """A's answer is GOOD in the first `good_a` pairs, B's in the next `good_b`; the rest are alike."""
    rows = []
    for i in range(total):
        a = "GOOD answer" if i < good_a else "plain answer"
        b = "GOOD answer" if good_a <= i < good_a + good_b else "plain answer"
        rows.append({"id": f"p{i}", "question": f"question {i} {{json}}", "answer_a": a, "answer_b": b,
                     "reference": None})  # fmt: skip
    return rows


def run_judge(server, rows, tmp_path, name="verdicts.jsonl"):
    judge = EndpointJudge(server.url, "judge-model")
    return judge_pairs(rows, judge, load_prompt(None, reference=False), tmp_path / name)


def single_order_win_rate(rows, server) -> float:
    """What judging only in the A-first order would report."""
    from judge_server import verdict

    template = load_prompt(None, reference=False)
    picks = [parse_verdict(verdict(fill(template, r["question"], r["answer_a"], r["answer_b"]), server.mode))
             for r in rows]  # fmt: skip
    return sum(1.0 if p == "A" else 0.5 if p == "tie" else 0.0 for p in picks) / len(picks)


def test_both_orders_cancel_the_position_bias(tmp_path):
    with JudgeServer("judge") as server:
        forward = run_judge(server, pairs(good_a=10, good_b=0), tmp_path, "ab.jsonl")
        backward = run_judge(server, [dict(r, answer_a=r["answer_b"], answer_b=r["answer_a"])
                                      for r in pairs(good_a=10, good_b=0)], tmp_path, "ba.jsonl")  # fmt: skip
        biased_forward = single_order_win_rate(pairs(10, 0), server)
        assert len(server.requests) == 80  # 20 pairs × 2 orders × 2 runs
    a_vs_b = summarize(forward, "A", "B", "j", False)
    b_vs_a = summarize(backward, "B", "A", "j", False)
    # 10 real wins; the 10 alike pairs are position bias only, so the two orders disagree: ties
    assert (a_vs_b["win"], a_vs_b["tie"], a_vs_b["loss"]) == (10, 10, 0)
    assert a_vs_b["win_rate"] == pytest.approx(0.75) and b_vs_a["win_rate"] == pytest.approx(0.25)
    assert a_vs_b["win_rate"] + b_vs_a["win_rate"] == pytest.approx(1.0)  # symmetric: the bias is gone
    assert biased_forward == pytest.approx(1.0)  # one order alone credits A with every alike pair
    assert a_vs_b["first_position_both_orders"] == 10  # the bias is measured, not hidden
    assert all(row["a_first"]["raw"] and row["b_first"]["raw"] for row in forward)  # raw judge text kept


def test_a_judge_that_always_picks_the_first_answer_gives_only_ties(tmp_path):
    with JudgeServer("first") as server:
        rows = run_judge(server, pairs(10, 5), tmp_path)
    summary = summarize(rows, "A", "B", "j", False)
    assert summary["tie"] == 20 and summary["win_rate"] == pytest.approx(0.5)
    assert summary["first_position_both_orders"] == 20


def test_garbage_verdicts_are_recorded_as_unparseable(tmp_path):
    with JudgeServer("garbage") as server:
        rows = run_judge(server, pairs(3, 0, total=4), tmp_path)
    summary = summarize(rows, "A", "B", "j", False)
    assert summary["unparseable"] == 4 and summary["win_rate"] is None
    assert rows[0]["a_first"] == {"verdict": "unparseable", "raw": "Both answers have merits; I cannot decide."}
    with JudgeServer("empty") as server:
        rows = run_judge(server, pairs(1, 0, total=2), tmp_path, "empty.jsonl")
    assert {row["outcome"] for row in rows} == {"unparseable"}


def test_failing_endpoint_is_a_clear_error_and_keeps_earlier_verdicts(tmp_path):
    out = tmp_path / "verdicts.jsonl"
    with JudgeServer("judge") as server:
        run_judge(server, pairs(2, 0, total=8)[:4], tmp_path)
    assert len(out.read_text().splitlines()) == 4
    with JudgeServer("error") as server, pytest.raises(TunelabError, match="answered 500"):
        run_judge(server, pairs(2, 0, total=8), tmp_path)
    assert len(out.read_text().splitlines()) == 4  # the finished verdicts are still there
    with JudgeServer("judge") as server:
        rows = run_judge(server, pairs(2, 0, total=8), tmp_path)
        assert len(server.requests) == 8  # only the 4 missing pairs were judged again
    assert len(rows) == 8
    down = EndpointJudge("http://127.0.0.1:9/v1", "m")
    with pytest.raises(TunelabError, match="unreachable"):
        judge_pairs(pairs(1, 0, total=1), down, load_prompt(None, False), tmp_path / "down.jsonl")


def test_verdict_parsing_and_combining():
    assert parse_verdict("so... [[B]]") == "B" and parse_verdict("[[a]] no wait [[C]]") == "tie"
    assert parse_verdict("[[tie]]") == "tie" and parse_verdict("A is better") is None
    assert combine("A", "B") == "win" and combine("B", "A") == "loss" and combine("A", "A") == "tie"
    assert combine("tie", "tie") == "tie" and combine("A", "tie") == "tie" and combine(None, "A") == "unparseable"
    assert fill("{question}|{answer_a}|{answer_b}", '{"a": 1}', "x{y}", "z") == '{"a": 1}|x{y}|z'
    assert win_rate_interval(["win"] * 8 + ["loss"] * 2)[0] == pytest.approx(0.8)
    low, high = win_rate_interval(["win"] * 8 + ["loss"] * 2)[1:]
    assert low < 0.8 < high


def test_user_prompt_file_needs_the_placeholders(tmp_path):
    bad = tmp_path / "prompt.txt"
    bad.write_text("Compare {answer_a} and {answer_b}.")
    with pytest.raises(TunelabError, match=r"lacks \{question\}"):
        load_prompt(bad, reference=False)
    bad.write_text("{question} {answer_a} {answer_b}")
    assert load_prompt(bad, reference=False)
    with pytest.raises(TunelabError, match=r"lacks \{reference\}"):
        load_prompt(bad, reference=True)
    with pytest.raises(TunelabError, match="cannot read"):
        load_prompt(tmp_path / "missing.txt", reference=False)


def test_judge_cli_with_models_and_a_local_endpoint(tmp_path, tiny_model_dir, capsys):
    data = write_jsonl(tmp_path / "test.jsonl", [
        {"id": f"t{i}", "messages": [{"role": "user", "content": f"Say {i}"}, {"role": "assistant", "content": str(i)}]}
        for i in range(3)
    ])  # fmt: skip
    out = tmp_path / "ab"
    with JudgeServer("first") as server:
        args = ["judge", "--a", tiny_model_dir, "--b", tiny_model_dir, "--judge", server.url, "--data", data,
                "--out", out, "--max-new-tokens", "4", "--reference"]  # fmt: skip
        result = cli(args, capsys)
    assert result.exit_code == 0, result.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["pairs"] == 3 and summary["tie"] == 3 and summary["reference_guided"]
    verdicts = [json.loads(line) for line in (out / "verdicts.jsonl").read_text().splitlines()]
    assert [v["reference"] for v in verdicts] == ["0", "1", "2"]
    assert "[Reference answer]" in server.requests[0]["messages"][0]["content"]
    assert (out / "answers_a.jsonl").is_file() and (out / "answers_b.jsonl").is_file()


def test_judge_cli_bad_input(tmp_path, tiny_model_dir, capsys):
    data = write_jsonl(
        tmp_path / "test.jsonl",
        [{"id": "t", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ho"}]}],
    )
    bad_prompt = tmp_path / "prompt.txt"
    bad_prompt.write_text("no placeholders")
    result = cli(["judge", "--a", tiny_model_dir, "--b", tiny_model_dir, "--judge", "http://127.0.0.1:9/v1",
                  "--data", data, "--prompt-file", bad_prompt, "--out", tmp_path / "o"], capsys)  # fmt: skip
    assert result.exit_code == 1 and "lacks {question}" in result.err
    result = cli(["judge", "--a", tiny_model_dir, "--b", tiny_model_dir, "--judge", "http://127.0.0.1:9/v1",
                  "--data", data, "--out", tmp_path / "o", "--max-new-tokens", "2"], capsys)  # fmt: skip
    assert result.exit_code == 1 and "unreachable" in result.err
    assert (tmp_path / "o" / "answers_a.jsonl").is_file()  # the answers generated before the failure are kept


def test_a_local_model_judges_too(tmp_path, tiny_model_dir):
    """The tiny model writes no verdicts: every pair is recorded as unparseable with its raw text, nothing crashes."""
    from tunelab.eval.judge import LocalJudge

    judge = LocalJudge(str(tiny_model_dir), max_new_tokens=6)
    rows = judge_pairs(pairs(1, 0, total=3), judge, load_prompt(None, False), tmp_path / "v.jsonl")
    assert [row["outcome"] for row in rows] == ["unparseable"] * 3
    assert all(isinstance(row["a_first"]["raw"], str) for row in rows)
    assert summarize(rows, "A", "B", judge.name, False)["unparseable"] == 3
