"""Prompted baselines: the untouched base model asked well, to show what fine-tuning adds over a good prompt.

- zero_shot: the test conversation with the task's instructions as its system prompt — the system prompt the
  training records share (or `data.system`), plus the answer format when the recipe names a JSON Schema.
- k_shot: the same, with the k training conversations most like the test prompt placed before it as earlier turns
  (chosen from the training split only, never validation or test, by TF-IDF cosine over words, and characters and
  character pairs of Chinese, Japanese and Korean text).

Each is scored like the base and tuned models (predictions_<label>.jsonl, report_<label>.json) and compared with the
tuned model by the same paired bootstrap (comparison_<label>.json).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

BASELINES = ("base", "zero_shot", "k_shot")
PROMPTED = ("zero_shot", "k_shot")


def _user_text(record: dict[str, Any]) -> str:
    return "\n".join(m.get("content") or "" for m in record.get("messages", []) if m.get("role") == "user")


def _system_of(record: dict[str, Any]) -> str | None:
    messages = record.get("messages") or []
    return messages[0].get("content") if messages and messages[0].get("role") == "system" else None


def task_instructions(train_records: Sequence[dict], json_schema: dict | None = None) -> str | None:
    """The system prompt most training records carry, with the answer format when a JSON Schema gives it."""
    found = Counter(_system_of(r) for r in train_records if _system_of(r))
    parts = [found.most_common(1)[0][0]] if found else []
    if json_schema is not None:
        schema = json.dumps(json_schema, ensure_ascii=False, separators=(",", ":"))
        parts.append(f"Answer with one JSON object only, no other text, that follows this JSON Schema: {schema}")
    return "\n\n".join(parts) or None


def _turns(record: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in record.get("messages", []) if m.get("role") != "system"]


def prompted_record(record: dict[str, Any], instructions: str | None, shots: Sequence[dict] = ()) -> dict:
    """The test record asked with `instructions` as its system prompt and `shots` as earlier turns (its own
    conversation, reference answer last, follows unchanged)."""
    system = [{"role": "system", "content": instructions}] if instructions else []
    examples = [turn for shot in shots for turn in _turns(shot)]
    return {**record, "messages": [*system, *examples, *_turns(record)]}


WORDS = re.compile(r"[^\W_]+(?:[-./][^\W_]+)*")
CJK_RUN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]+")


def _ngrams(text: str) -> Counter:
    """Words, and for Chinese, Japanese and Korean text (no spaces between words) its characters and character pairs.
    Whole words keep a rare identifier (a product code, a name) from being outweighed by the common phrasing around
    it, which character n-grams of the whole text let happen."""
    text = text.lower()
    features: Counter = Counter()
    for run in CJK_RUN.findall(text):
        features.update(run)
        features.update(run[i : i + 2] for i in range(len(run) - 1))
    features.update(WORDS.findall(CJK_RUN.sub(" ", text)))
    return features


class ShotIndex:
    """Training conversations indexed by their user turns' words (TF-IDF, L2-normalised rows; `_ngrams`).

    Written here rather than with scikit-learn's TfidfVectorizer, which tunelab does not otherwise need; scipy's
    sparse matrices (a dependency of datasketch) keep it linear in the data's size.
    """

    def __init__(self, records: Sequence[dict[str, Any]]):

        self.records = list(records)
        counts = [_ngrams(_user_text(r)) for r in self.records]
        documents = Counter(gram for c in counts for gram in c)
        self.vocabulary = {gram: i for i, gram in enumerate(documents)}
        total = len(self.records)
        self.idf = np.array([math.log((1 + total) / (1 + documents[g])) + 1 for g in self.vocabulary])
        self.matrix = self._vectors(counts)

    def _vectors(self, counts: list[Counter]):
        rows, cols, values = [], [], []
        for row, count in enumerate(counts):
            known = [(self.vocabulary[g], n) for g, n in count.items() if g in self.vocabulary]
            rows += [row] * len(known)
            cols += [col for col, _ in known]
            values += [n * self.idf[col] for col, n in known]
        from scipy.sparse import csr_matrix

        matrix = csr_matrix((values, (rows, cols)), shape=(len(counts), len(self.vocabulary)))
        norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        return csr_matrix(matrix.multiply(1 / norms[:, None]))

    def nearest(self, records: Sequence[dict[str, Any]], k: int) -> list[list[dict[str, Any]]]:
        """For each record, the k most similar training records, least similar first (the most similar sits next
        to the question), ties broken by training order."""
        if not self.records or k <= 0:
            return [[] for _ in records]
        similarity = (self._vectors([_ngrams(_user_text(r)) for r in records]) @ self.matrix.T).toarray()
        chosen = []
        for scores in similarity:
            order = np.argsort(-scores, kind="stable")[: min(k, len(self.records))]
            chosen.append([self.records[i] for i in reversed(order)])
        return chosen


def baseline_records(label: str, test_records: list[dict], train_records: list[dict], k: int, schema: dict | None):
    """The test records as the `label` baseline asks them."""
    instructions = task_instructions(train_records, schema)
    if label == "zero_shot":
        return [prompted_record(r, instructions) for r in test_records]
    shots = ShotIndex(train_records).nearest(test_records, k)
    return [prompted_record(r, instructions, s) for r, s in zip(test_records, shots, strict=True)]


def wanted_baselines(recipe) -> list[str]:
    """The prompted baselines the recipe asks for, in their fixed order."""
    return [label for label in PROMPTED if label in recipe.eval.baselines]


def evaluate_prompted(stage, model, tokenizer, test_records, train_records, recipe, eval_dir, results, announce):
    """Score the base model on each prompted baseline not yet in `results` (a resumed run keeps what it has);
    `announce(text)` says which one is being evaluated."""
    from tunelab.eval.metrics import load_json_schema
    from tunelab.runs import write_json

    pending = [label for label in wanted_baselines(recipe) if label not in results]
    if not pending:
        return
    schema = None
    if recipe.eval.json_schema:
        schema = load_json_schema(recipe.eval.json_schema).schema  # checked as the metric checks it
    for label in pending:
        records = baseline_records(label, test_records, train_records, recipe.eval.k_shot, schema)
        shots = f" with {recipe.eval.k_shot} similar training examples in each prompt" if label == "k_shot" else ""
        announce(f"evaluating the base model prompted {label.replace('_', '-')}{shots}")
        asked = same_memory_batches(recipe, test_records, records)
        results[label] = stage.evaluate(model, tokenizer, records, asked, eval_dir, label)
        write_json(eval_dir / "metrics.json", results)


def _length(records: Sequence[dict]) -> int:
    return sum(len(m.get("content") or "") for r in records for m in r.get("messages", []))


def same_memory_batches(recipe, test_records: Sequence[dict], asked: Sequence[dict]):
    """The recipe with eval.batch_size scaled down by how much longer the prompted records are than the test
    records, so that a batch of k-shot prompts holds about as many tokens as a batch of the test set's own.
    Measured on the built-in model (quickstart, 4-shot prompts of 530 tokens against 93): a batch of 60 took the
    process to 11.1 GiB, batches of 12 to 2.4 GiB, at the same 2.6 s per answer on 2 cores."""
    ratio = _length(asked) / max(1, _length(test_records))
    if ratio <= 1.25:
        return recipe
    batch = max(1, round(recipe.eval.batch_size / ratio))
    return recipe.model_copy(update={"eval": recipe.eval.model_copy(update={"batch_size": batch})})
