"""Held-out preference pairs: does a model prefer the chosen answer? Per pair, the two sides' scores, whether the
chosen one won, and whether the "longer answer wins" rule would have been right — the baseline a length-fooled
scorer already reaches, so that a report can show a preference model beats it (with intervals, like every metric).

Scorers: a causal LM's log-likelihood of each answer given the prompt (summed over the answer's tokens: the
starting model's own preference), a reward model's scalar score, and DPO's implicit reward (the policy's log-likelihood
minus the reference's; for a LoRA policy the reference is the same model with the adapter disabled).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from tunelab.data.kinds import answer_text  # lengths measured as the audit measures them
from tunelab.errors import TunelabError
from tunelab.eval.metrics import PAIR_METRICS, aggregate_by_category
from tunelab.jsonl import write_jsonl

Scorer = Callable[[list[dict], list[dict]], float]  # (prompt messages, answer messages) → score


def _ids(tokenizer, prompt: list[dict], answer: list[dict]) -> tuple[list[int], int]:
    """Token ids of prompt + answer as the chat template renders them, and where the answer starts."""
    prompt_ids = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=False)
    full_ids = tokenizer.apply_chat_template(prompt + answer, tokenize=True, return_dict=False)
    start = len(prompt_ids) if full_ids[: len(prompt_ids)] == list(prompt_ids) else _common_prefix(prompt_ids, full_ids)
    return list(full_ids), start


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count


@torch.inference_mode()
def answer_log_likelihood(model, tokenizer, prompt: list[dict], answer: list[dict]) -> float:
    """Σ log p(answer token | everything before it) under a causal LM."""
    ids, start = _ids(tokenizer, prompt, answer)
    inputs = torch.tensor([ids], device=model.device)
    logits = model(input_ids=inputs).logits[0, :-1].float()
    targets = inputs[0, 1:]
    log_probs = torch.log_softmax(logits, dim=-1).gather(1, targets[:, None])[:, 0]
    return float(log_probs[max(start - 1, 0) :].sum())


def log_likelihood_scorer(model, tokenizer) -> Scorer:
    return lambda prompt, answer: answer_log_likelihood(model, tokenizer, prompt, answer)


def implicit_reward_scorer(model, tokenizer) -> Scorer:
    """log π(answer) − log π_ref(answer), π_ref being the model with its adapter disabled (a PEFT model only)."""

    def score(prompt: list[dict], answer: list[dict]) -> float:
        policy = answer_log_likelihood(model, tokenizer, prompt, answer)
        with model.disable_adapter():
            reference = answer_log_likelihood(model, tokenizer, prompt, answer)
        return policy - reference

    return score


def reward_model_scorer(model, tokenizer) -> Scorer:
    """A sequence-classification model's scalar score of the whole conversation."""

    @torch.inference_mode()
    def score(prompt: list[dict], answer: list[dict]) -> float:
        ids = tokenizer.apply_chat_template(prompt + answer, tokenize=True, return_dict=False)
        return float(model(input_ids=torch.tensor([ids], device=model.device)).logits[0, 0])

    return score


def score_pairs(records: Sequence[dict], scorer: Scorer) -> list[dict[str, Any]]:
    """One row per pair: both scores, the margin, and per-pair 0/1 scores for the chosen winning and the length rule."""
    if not records:
        raise TunelabError("no held-out preference pairs to evaluate; set data.test to a file of pairs")
    rows = []
    for position, record in enumerate(records):
        chosen, rejected = scorer(record["prompt"], record["chosen"]), scorer(record["prompt"], record["rejected"])
        longer_chosen = len(answer_text(record["chosen"])) > len(answer_text(record["rejected"]))
        rows.append({
            "id": str(record.get("id", position)), "category": record.get("category"),
            "chosen_score": chosen, "rejected_score": rejected, "margin": chosen - rejected,
            "scores": {"pair_accuracy": float(chosen > rejected), "length_rule": float(longer_chosen)},
        })  # fmt: skip
    return rows


def pair_report(rows: list[dict[str, Any]], label: str, scorer_name: str) -> dict[str, Any]:
    count = len(rows)
    names = [name for name in sorted(PAIR_METRICS) if all(name in row["scores"] for row in rows)]
    metrics = {name: sum(row["scores"][name] for row in rows) / count for name in names}
    scores = [row["scores"] for row in rows]
    margin = sum(row["margin"] for row in rows) / count  # in the scorer's units: not a share, so not with the metrics
    return {"label": label, "scorer": scorer_name, "count": count, "metrics": metrics, "mean_margin": margin,
            "by_category": aggregate_by_category(scores, [row.get("category") for row in rows])}  # fmt: skip


def evaluate_pairs(records: Sequence[dict], scorer: Scorer, scorer_name: str, out_path: Path, label: str) -> dict:
    """Score every pair, write the rows (predictions file) and return the report."""
    rows = score_pairs(records, scorer)
    write_jsonl(out_path, rows)
    return pair_report(rows, label, scorer_name)


def score_file(target: str, data: str, out: Path) -> dict[str, Any]:
    """`tunelab score`: a reward model's scores for a file of pairs (with pair accuracy and the length rule beside it)
    or of conversations (the last assistant answer scored given what comes before); rows written to `out`."""
    from tunelab.data.kinds import record_kind
    from tunelab.data.load import load_source
    from tunelab.model.reward import load_reward_model

    records = load_source(data)
    if not records:
        raise TunelabError(f"{data}: no records to score")
    model, tokenizer = load_reward_model(target)
    scorer = reward_model_scorer(model, tokenizer)
    if record_kind(records[0]) == "preference":
        report = evaluate_pairs(records, scorer, "reward model score", out, "scored")
        return {"kind": "pairs", "count": report["count"], "metrics": report["metrics"],
                "mean_margin": report["mean_margin"], "out": str(out)}  # fmt: skip
    rows = [{"id": r.get("id", i), "score": scorer(_prompt_part(r), _answer_part(r))} for i, r in enumerate(records)]
    write_jsonl(out, rows)
    scores = [row["score"] for row in rows]
    return {"kind": "conversations", "count": len(rows), "mean_score": sum(scores) / len(scores), "out": str(out)}


def _prompt_part(record: dict) -> list[dict]:
    return record["prompt"] if "prompt" in record else record["messages"][:-1]


def _answer_part(record: dict) -> list[dict]:
    return record["completion"] if "completion" in record else record["messages"][-1:]
