"""`tunelab advise <data>`: prompting, retrieval or fine-tuning — recommended from measurements on the user's data.

What is measured (every claim of the advice cites one of these):
- the data: records, exact and near duplicates, languages, answer lengths, whether answers are JSON;
- where answers come from: the share of each answer's words (CJK characters) that occur in its own question — an
  extraction task copies from the question, a fact lookup cannot;
- retrieval: for held-out questions, whether the training records most like them (the k-shot index) contain the
  answer — when they do, the facts live in the data and retrieval can serve them;
- the prompted baselines: the base model zero-shot (the data's system prompt) and k-shot (similar records in the
  prompt) on the held-out questions, scored with the metrics the answers call for, with 95% intervals;
- the cost of fine-tuning it with LoRA (train/costs.py: FLOPs and memory on a GPU of the table).
"""

from __future__ import annotations

import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from tunelab.errors import DataError

WORD = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]|[^\W_]+", re.UNICODE)
MIN_RECORDS = 20
TARGET = 0.9  # the score a prompt must reach on the key metric for prompting to be enough


def _words(text: str) -> list[str]:
    return [w.casefold() for w in WORD.findall(text)]


def answer_in_question(record: dict) -> float | None:
    """The share of the answer's distinct words that occur in the record's own user turns (of a JSON answer, its
    values' words: the keys are the format, not content)."""
    from tunelab.data.quality import answer_text, json_values, prompt_text

    text = answer_text(record)
    answer, question = set(_words(json_values(text) or text)), set(_words(prompt_text(record)))
    return len(answer & question) / len(answer) if answer else None


def retrieval_hits(held: list[dict], pool: list[dict], k: int) -> list[bool]:
    """Whether the held-out answer occurs in the answer of one of the k pool records most like its question."""
    from tunelab.data.quality import answer_text
    from tunelab.eval.prompted import ShotIndex

    hits = []
    for record, shots in zip(held, ShotIndex(pool).nearest(held, k), strict=True):
        answer = " ".join(answer_text(record).split()).casefold()
        hits.append(bool(answer) and any(answer in " ".join(answer_text(s).split()).casefold() for s in shots))
    return hits


def score_interval(rows: list[dict], name: str) -> dict[str, Any]:
    """A metric over prediction rows with its 95% bootstrap interval (resampling records)."""
    from tunelab.eval.bootstrap import paired_difference, ratio_of_sums
    from tunelab.eval.comparison import metric_terms

    terms = [metric_terms(row["scores"], name) for row in rows]
    kept = np.array([t for t in terms if t is not None], dtype=float)
    if not len(kept):
        return {"value": None, "ci95": None, "count": 0}
    zero = kept * np.array([0.0, 1.0])  # the same denominators, no successes: the difference is the value itself
    _, value, low, high = paired_difference(zero, kept, ratio_of_sums)
    return {"value": round(value, 4), "ci95": [round(low, 4), round(high, 4)], "count": len(kept)}


def data_figures(records: list[dict], tokenizer) -> dict[str, Any]:
    from collections import Counter

    from tunelab.data.audit import audit_sets
    from tunelab.data.quality import answer_text, language, prompt_text
    from tunelab.eval.metrics import parse_json_answer

    audit = audit_sets({"train": records}, {"train": "train"}, [], tokenizer).report
    shares = [s for s in (answer_in_question(r) for r in records) if s is not None]
    answers = [answer_text(r) for r in records]
    return {
        "records": len(records),
        "exact_duplicates": audit["summary"].get("exact_duplicates", 0),
        "near_duplicate_pairs": audit["summary"].get("near_duplicate_pairs", 0),
        "languages": dict(Counter(language(prompt_text(r) + " " + a) for r, a in zip(records, answers, strict=True))),
        "json_answers": sum(isinstance(parse_json_answer(a), dict) for a in answers) / len(answers),
        "distinct_answers": len(set(answers)) / len(answers),
        "answer_words_in_question": round(float(np.mean(shares)), 4) if shares else None,
        "token_lengths": audit.get("lengths", {}).get("per_set", {}).get("train"),
    }


def prompted_scores(model, tokenizer, held, pool, k: int, metrics: list[str], folder: Path) -> dict[str, Any]:
    """Zero-shot and k-shot on the held-out questions: each metric with its interval, k-shot vs zero-shot paired."""
    from tunelab.eval.comparison import compare_predictions
    from tunelab.eval.heldout import evaluate_model, read_predictions
    from tunelab.eval.lengths import reference_token_lengths
    from tunelab.eval.prompted import baseline_records

    longest = max(reference_token_lengths([r["messages"][-1]["content"] for r in held], tokenizer))
    rows, reports = {}, {}
    for label in ("zero_shot", "k_shot"):
        asked = baseline_records(label, held, pool, k, None)
        out = folder / f"predictions_{label}.jsonl"
        reports[label] = evaluate_model(model, tokenizer, asked, out, metrics, max_new_tokens=int(longest) + 8,
                                        batch_size=16, label=label)  # fmt: skip
        rows[label] = read_predictions(out)
    scores = {label: {name: score_interval(rows[label], name) for name in metrics} for label in rows}
    return {"scores": scores, "k_vs_zero": compare_predictions(rows["zero_shot"], rows["k_shot"])["metrics"],
            "prompt_tokens": {label: reports[label].get("mean_prompt_tokens") for label in reports}}  # fmt: skip


def fine_tune_cost(model_name: str, records: list[dict], tokenizer) -> dict[str, Any]:
    """LoRA (r 16, every linear layer) for 3 epochs of the data on the table's GPUs, and the cheapest that fits."""
    from tunelab.config.schema import Recipe
    from tunelab.estimate import parameter_counts
    from tunelab.train.costs import gpu_rows
    from tunelab.train.gpus import gpu_table

    recipe = Recipe.model_validate({"name": "advise", "model": {"name": model_name}, "data": {"sources": []},
                                    "method": {"type": "lora", "r": 16, "target_modules": "all-linear"}})  # fmt: skip
    config, counts = parameter_counts(recipe)
    texts = [tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in records]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    work = {"tokens": sum(lengths), "sequences": len(lengths), "micro_batch": 8, "max_length": max(lengths),
            "trained_tokens": 3 * sum(lengths)}  # fmt: skip
    table = gpu_table()
    rows = gpu_rows(config, counts, "lora", work, table, list(table))
    fitting = [row for row in rows["rows"] if row["fits"] == "yes"]
    cheapest = min(fitting, key=lambda row: row["cost_usd"]) if fitting else None
    return {"epochs": 3, "tokens_per_epoch": work["tokens"], "parameters": counts, "mfu": rows["mfu"],
            "cheapest": cheapest}  # fmt: skip


def split_for_advice(records: list[dict], sample: int, seed: int) -> tuple[list[dict], list[dict]]:
    if len(records) < MIN_RECORDS:
        raise DataError("data", f"{len(records)} records; advice needs at least {MIN_RECORDS} to hold some out",
                        "give more records")  # fmt: skip
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    count = min(sample, len(records) // 4)
    return [records[i] for i in order[:count]], [records[i] for i in order[count:]]


def advise(path: str, model_name: str, goal: str | None = None, sample: int = 40, k: int = 4, target: float = TARGET,
           seed: int = 42, log=print) -> dict[str, Any]:  # fmt: skip
    """Measure, then recommend (see the module docstring); returns the figures and the advice."""
    from tunelab.advice_text import recommend
    from tunelab.data.load import load_source
    from tunelab.data.tokenize import ensure_chat_template
    from tunelab.eval.evaluate import guess_metrics
    from tunelab.model.load import load_model

    invalid: list = []
    records = [r for r in load_source(path, invalid=invalid) if r.get("messages")]
    held, pool = split_for_advice(records, sample, seed)
    log(f"[tunelab] advise: {len(records)} records; {len(held)} held out to measure prompting and retrieval")
    model, tokenizer, _ = load_model(model_name)
    ensure_chat_template(tokenizer)
    metrics = [m for m in guess_metrics(records) if m != "bleu"]  # the others resample as shares: score_interval
    figures: dict[str, Any] = {"data": data_figures(records, tokenizer) | {"invalid": len(invalid)}, "metrics": metrics}
    hits = retrieval_hits(held, pool, k)
    figures["retrieval"] = {"k": k, "hits": sum(hits), "count": len(hits)}
    log(f"[tunelab] advise: the base model zero-shot and {k}-shot on {len(held)} held-out questions")
    with tempfile.TemporaryDirectory(prefix="tunelab-advise-") as scratch:
        figures["prompting"] = prompted_scores(model, tokenizer, held, pool, k, metrics, Path(scratch))
    figures["fine_tune"] = fine_tune_cost(model_name, pool, tokenizer)
    return (
        {"file": str(path), "model": model_name, "goal": goal, "target": target}
        | figures
        | {"advice": recommend(figures, target, goal)}
    )
