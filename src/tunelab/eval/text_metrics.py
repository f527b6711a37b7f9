"""ROUGE-L and BLEU that mean something for Chinese as well as English, computed offline.

`rouge-score` drops every non-ASCII character with its default tokenizer, so a Chinese answer scores 0 against any
reference; here it gets a tokenizer that keeps each CJK character as a token and lower-cased words and numbers for
the rest. BLEU is sacrebleu's, with its `zh` tokenizer whenever either side contains CJK text and `13a` otherwise.
Per record, BLEU keeps sacrebleu's sufficient statistics, so the set-level value is corpus BLEU (not a mean of
sentence scores) and a resumed evaluation aggregates to the same number.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

# CJK ideographs (with extension A and compatibility), kana, hangul: one token per character.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_TOKEN = re.compile(f"[{_CJK}]|[^\\W_{_CJK}]+")
_HAS_CJK = re.compile(f"[{_CJK}]")


def has_cjk(text: str) -> bool:
    return bool(_HAS_CJK.search(text))


def tokenize(text: str) -> list[str]:
    """Lower-cased words and numbers, each CJK character on its own; punctuation is dropped."""
    return _TOKEN.findall(text.lower())


class _Tokenizer:
    """The interface `rouge_score.RougeScorer(tokenizer=...)` expects."""

    def tokenize(self, text: str) -> list[str]:
        return tokenize(text)


@cache
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], tokenizer=_Tokenizer())


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F1 in [0, 1]."""
    if not tokenize(reference) and not tokenize(prediction):
        return 1.0
    return float(_rouge_scorer().score(reference, prediction)["rougeL"].fmeasure)


@cache
def _bleu(tokenizer: str):
    from sacrebleu.metrics import BLEU

    return BLEU(tokenize=tokenizer, effective_order=True)


def bleu_statistics(prediction: str, reference: str) -> dict[str, Any]:
    """{"stats": sacrebleu's [hyp_len, ref_len, correct_1..4, total_1..4], "sentence": sentence BLEU in [0, 1]}."""
    metric = _bleu("zh" if has_cjk(reference) or has_cjk(prediction) else "13a")
    # `_extract_corpus_statistics` is sacrebleu's own per-segment statistics (sacrebleu 2.x, pinned in pyproject):
    # summing them is exactly how its corpus_score aggregates.
    stats = [int(value) for value in metric._extract_corpus_statistics([prediction], [[reference]])[0]]
    sentence = metric.sentence_score(prediction, [reference]).score / 100
    return {"stats": stats, "sentence": round(sentence, 6)}


def corpus_bleu(statistics: list[list[int]]) -> float | None:
    """Corpus BLEU in [0, 1] from summed per-record statistics; None when there is nothing to score."""
    if not statistics:
        return None
    from sacrebleu.metrics import BLEU

    total = [sum(column) for column in zip(*statistics, strict=True)]
    hyp_len, ref_len, correct, counts = total[0], total[1], total[2:6], total[6:10]
    score = BLEU.compute_bleu(correct, counts, hyp_len, ref_len, smooth_method="exp")
    return score.score / 100


_NO_MATCH_LOG = -9999999999.0  # sacrebleu's my_log(0)


def corpus_bleu_many(statistics):
    """Corpus BLEU in [0, 1] for each row of summed statistics (m × 10: hyp_len, ref_len, correct_1..4,
    total_1..4), vectorised; the same arithmetic as sacrebleu's compute_bleu with "exp" smoothing, for bootstraps."""
    import numpy as np

    stats = np.asarray(statistics, dtype=float)
    hyp, ref, correct, total = stats[:, 0], stats[:, 1], stats[:, 2:6], stats[:, 6:10]
    with np.errstate(divide="ignore", invalid="ignore"):
        brevity = np.where(hyp < ref, np.where(hyp > 0, np.exp(1 - ref / np.where(hyp > 0, hyp, 1)), 0.0), 1.0)
        counted = np.cumprod(total > 0, axis=1).astype(bool)  # sacrebleu stops at the first order with no n-grams
        smoothing = 2.0 ** np.cumsum((correct == 0) & counted, axis=1)
        safe_total = np.where(total > 0, total, 1)
        precision = np.where(correct > 0, 100 * correct / safe_total, 100 / (smoothing * safe_total))
        precision = np.where(counted, precision, 0.0)
        logs = np.where(precision > 0, np.log(np.where(precision > 0, precision, 1)), _NO_MATCH_LOG)
    score = brevity * np.exp(logs.sum(axis=1) / 4)
    return np.where(correct.sum(axis=1) > 0, score, 0.0) / 100
