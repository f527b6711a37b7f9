"""Pairwise A/B judging: which of two models answers the test prompts better, according to a judge model.

Judges prefer the answer in one position (Zheng et al., "Judging LLM-as-a-Judge", 2023), so every pair is judged
twice, once in each order; a verdict counts only when both orders agree, and a disagreement is a tie. Every verdict
is stored with the judge's raw text; text without a verdict is recorded as "unparseable" and left out of the win
rate. Verdicts are appended as they arrive, so an interrupted run keeps them and a rerun continues.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from tunelab.errors import TunelabError
from tunelab.jsonl import read_jsonl, skip, write_jsonl

PROMPTS = {
    False: Path(__file__).with_name("judge_prompt.txt"),
    True: Path(__file__).with_name("judge_prompt_reference.txt"),
}
_VERDICT = re.compile(r"\[\[\s*(A|B|C|TIE)\s*\]\]", re.IGNORECASE)
OUTCOMES = ("win", "tie", "loss", "unparseable")


def load_prompt(path: str | Path | None, reference: bool) -> str:
    """The judge prompt template; a user's file must have the placeholders the mode needs."""
    path = Path(path) if path else PROMPTS[reference]
    try:
        template = path.read_text(encoding="utf-8")
    except OSError as error:
        raise TunelabError(f"{path}: cannot read the judge prompt ({error.strerror or error})") from None
    needed = ["{question}", "{answer_a}", "{answer_b}"] + (["{reference}"] if reference else [])
    missing = [name for name in needed if name not in template]
    if missing:
        raise TunelabError(f"{path}: the judge prompt lacks {', '.join(missing)}; write them where the texts go")
    return template


def fill(template: str, question: str, first: str, second: str, reference: str = "") -> str:
    # str.replace, not str.format: answers and user templates contain braces (JSON) that format would choke on
    values = {"{question}": question, "{answer_a}": first, "{answer_b}": second, "{reference}": reference}
    pattern = re.compile("|".join(re.escape(k) for k in values))
    return pattern.sub(lambda match: values[match.group(0)], template)


def parse_verdict(text: str) -> str | None:
    """ "A", "B" or "tie" from the last [[A]] / [[B]] / [[C]] (or [[tie]]) in the text; None when there is none."""
    found = _VERDICT.findall(text or "")
    if not found:
        return None
    last = found[-1].upper()
    return "tie" if last in ("C", "TIE") else last


def combine(a_first: str | None, b_first: str | None) -> str:
    """The outcome for A from the two orders. `b_first` is the verdict with B shown first, in its own letters."""
    if a_first is None or b_first is None:
        return "unparseable"
    swapped = {"A": "B", "B": "A", "tie": "tie"}[b_first]
    if a_first != swapped:
        return "tie"
    return {"A": "win", "B": "loss", "tie": "tie"}[a_first]


class EndpointJudge:
    """Any OpenAI-compatible chat endpoint, a few requests at a time, greedy."""

    def __init__(self, base_url: str, model: str, api_key_env: str | None = None, max_tokens: int = 512,
                 concurrency: int = 4, timeout: float = 120.0):  # fmt: skip
        from openai import OpenAI

        key = os.environ.get(api_key_env, "") if api_key_env else os.environ.get("OPENAI_API_KEY", "")
        if api_key_env and not key:
            raise TunelabError(f"--judge-api-key-env {api_key_env}: that environment variable is empty")
        self.client = OpenAI(base_url=base_url, api_key=key or "none", timeout=timeout, max_retries=2)
        self.base_url, self.model, self.max_tokens, self.concurrency = base_url, model, max_tokens, concurrency
        self.name = f"{model} at {base_url}"

    def _one(self, prompt: str) -> str:
        import openai

        try:
            response = self.client.chat.completions.create(
                model=self.model,
                messages=[{"role": "user", "content": prompt}],
                temperature=0,
                max_tokens=self.max_tokens,
            )
        except openai.APIConnectionError as error:
            message = f"judge endpoint {self.base_url} is unreachable ({error}); is the server running?"
            raise TunelabError(message) from None
        except openai.APIStatusError as error:
            message = f"judge endpoint {self.base_url} answered {error.status_code}: {error.message}"
            raise TunelabError(message) from None
        choices = getattr(response, "choices", None) or []
        content = choices[0].message.content if choices and choices[0].message else None
        return content if isinstance(content, str) else ""

    def complete(self, prompts: Sequence[str]) -> list[str]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(self._one, prompts))


class LocalJudge:
    """A model loaded in this process (alias, folder, .gguf or run), batched greedy generation."""

    def __init__(self, target: str, max_new_tokens: int = 256):
        from tunelab.model.decode import hold_packed_weights
        from tunelab.model.targets import load_target

        self.model, self.tokenizer, resolved = load_target(target)
        hold_packed_weights(self.model)  # once, not at every batch of judgements
        self.max_new_tokens, self.name = max_new_tokens, resolved.name

    def complete(self, prompts: Sequence[str]) -> list[str]:
        from tunelab.data.tokenize import prompt_ids_for_generation
        from tunelab.model.generate import generate_batch

        ids = [prompt_ids_for_generation(self.tokenizer, [{"role": "user", "content": p}]) for p in prompts]
        return [r["text"] for r in generate_batch(self.model, self.tokenizer, ids, self.max_new_tokens)]


class RewardModelJudge:
    """A reward model (a `stage: rm` run, or a folder with a scalar head) scores each answer on its own and the higher
    score wins. It never sees both answers at once, so it has no position bias: both orders agree by construction."""

    def __init__(self, target: str):
        from tunelab.eval.preference import reward_model_scorer
        from tunelab.model.reward import load_reward_model

        model, tokenizer = load_reward_model(target)
        self.score, self.name = reward_model_scorer(model, tokenizer), f"reward model {target}"

    def verdict_texts(self, batch: Sequence[dict[str, Any]]) -> list[str]:
        """Two texts per pair (A shown first, then B first), each with both scores and the verdict in [[ ]]."""
        texts = []
        for pair in batch:
            prompt = pair.get("prompt_messages") or [{"role": "user", "content": pair["question"]}]
            a, b = (
                self.score(prompt, [{"role": "assistant", "content": pair[key]}]) for key in ("answer_a", "answer_b")
            )
            texts += [_score_verdict(a, b), _score_verdict(b, a)]
        return texts


def _score_verdict(first: float, second: float) -> str:
    letter = "A" if first > second else "B" if second > first else "C"
    return f"reward of the first answer {first:.4f}, of the second {second:.4f} [[{letter}]]"


def judge_pairs(pairs: list[dict[str, Any]], judge, template: str, out_path: Path, chunk: int = 8,
                on_progress: Callable[[int], None] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Judge each pair in both orders; verdicts already in `out_path` (same id and texts) are kept, not redone."""
    done = {row["id"]: row for row in _read_verdicts(out_path) if _same_pair(row, pairs)}
    rows = [done[p["id"]] for p in pairs if p["id"] in done]
    write_jsonl(out_path, rows)
    pending = [p for p in pairs if p["id"] not in done]
    with out_path.open("a", encoding="utf-8") as handle:
        for start in range(0, len(pending), chunk):
            batch = pending[start : start + chunk]
            texts = judge.verdict_texts(batch) if hasattr(judge, "verdict_texts") else judge.complete(
                _both_orders(template, batch))  # fmt: skip
            for index, pair in enumerate(batch):
                row = _verdict_row(pair, texts[2 * index], texts[2 * index + 1])
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
                rows.append(row)
            handle.flush()
            if on_progress:
                on_progress(len(batch))
    order = {p["id"]: i for i, p in enumerate(pairs)}
    return sorted(rows, key=lambda row: order[row["id"]])


def _both_orders(template: str, batch: Sequence[dict[str, Any]]) -> list[str]:
    prompts = []
    for pair in batch:
        ref = pair.get("reference") or ""
        prompts.append(fill(template, pair["question"], pair["answer_a"], pair["answer_b"], ref))
        prompts.append(fill(template, pair["question"], pair["answer_b"], pair["answer_a"], ref))
    return prompts


def _verdict_row(pair: dict[str, Any], a_first_text: str, b_first_text: str) -> dict[str, Any]:
    a_first, b_first = parse_verdict(a_first_text), parse_verdict(b_first_text)
    return {
        **pair,
        "a_first": {"verdict": a_first or "unparseable", "raw": a_first_text},
        "b_first": {"verdict": b_first or "unparseable", "raw": b_first_text},
        "outcome": combine(a_first, b_first),
    }


def _read_verdicts(path: Path) -> list[dict[str, Any]]:
    rows = read_jsonl(path, skip, missing_ok=True)  # a line cut off by an interruption is skipped
    return [row for row in rows if isinstance(row, dict) and "outcome" in row]


def _same_pair(row: dict[str, Any], pairs: list[dict[str, Any]]) -> bool:
    keys = ("question", "answer_a", "answer_b", "reference")
    return any(p["id"] == row.get("id") and all(p.get(k) == row.get(k) for k in keys) for p in pairs)


def win_rate_interval(outcomes: list[str], samples: int = 2000, seed: int = 0) -> tuple[float, float, float] | None:
    """(win rate of A with ties as half, 2.5th and 97.5th bootstrap percentiles); None with nothing judged."""
    points = np.array([{"win": 1.0, "tie": 0.5, "loss": 0.0}[o] for o in outcomes if o != "unparseable"])
    if points.size == 0:
        return None
    rng = np.random.default_rng(seed)
    resampled = points[rng.integers(0, points.size, size=(samples, points.size))].mean(axis=1)
    low, high = np.percentile(resampled, [2.5, 97.5])
    return float(points.mean()), float(low), float(high)


def summarize(rows: list[dict[str, Any]], a: str, b: str, judge_name: str, reference: bool) -> dict[str, Any]:
    counts = {outcome: sum(1 for row in rows if row["outcome"] == outcome) for outcome in OUTCOMES}
    interval = win_rate_interval([row["outcome"] for row in rows])
    position = sum(1 for row in rows if row["a_first"]["verdict"] == "A" and row["b_first"]["verdict"] == "A")
    return {
        "a": a,
        "b": b,
        "judge": judge_name,
        "reference_guided": reference,
        "pairs": len(rows),
        **counts,
        "win_rate": interval[0] if interval else None,
        "ci95": list(interval[1:]) if interval else None,
        # how often the judge picked whatever came first in both orders: its position bias on this data
        "first_position_both_orders": position,
    }


def describe(summary: dict[str, Any]) -> str:
    head = f"{summary['a']} vs {summary['b']} ({summary['pairs']} prompts, judge {summary['judge']}): "
    head += f"{summary['win']} wins, {summary['tie']} ties, {summary['loss']} losses"
    if summary["unparseable"]:
        head += f", {summary['unparseable']} unparseable"
    if summary["win_rate"] is None:
        return head + "; no verdict could be read"
    low, high = summary["ci95"]
    return head + f"; win rate {summary['win_rate']:.1%} (95% CI {low:.1%}–{high:.1%})"
