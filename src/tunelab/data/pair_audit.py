"""The audit's checks of preference data: pairs whose sides are the same, empty sides, length bias, label balance.

Length bias: when the chosen answer is usually the longer one, a reward model (or DPO) can score well by preferring
length. The audit gives the share of pairs whose chosen side is longer, in characters and (with a tokenizer) in
tokens, and the accuracy the rule "the longer answer wins" already reaches on the held-out pairs: the baseline a
preference model has to beat. `length_rule_accuracy` is that rule, for the evaluation to call on its pairs too.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from tunelab.data.kinds import answer_text

LISTED = 200  # entries per list kept in the report, as in audit.py
LABEL_SHARE_WARNING = (0.25, 0.75)
"""A desirable share outside this range is worth weighting (TRL's KTOConfig desirable_weight/undesirable_weight)."""

Lengths = list[tuple[int, int]]  # (chosen, rejected) per pair


def normalized(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed: two answers equal after this say the same thing."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def char_lengths(pairs: Sequence[Mapping[str, Any]]) -> Lengths:
    """(chosen, rejected) answer lengths in characters, per pair."""
    return [(len(answer_text(pair["chosen"])), len(answer_text(pair["rejected"]))) for pair in pairs]


def token_lengths(pairs: Sequence[Mapping[str, Any]], tokenizer) -> list[tuple[dict, dict]]:
    """Per pair, the estimated tokens of prompt + chosen and of prompt + rejected (`quality.token_lengths` items)."""
    from tunelab.data.quality import token_lengths as lengths

    chosen = lengths([{"messages": [*pair["prompt"], *pair["chosen"]]} for pair in pairs], tokenizer)
    rejected = lengths([{"messages": [*pair["prompt"], *pair["rejected"]]} for pair in pairs], tokenizer)
    return list(zip(chosen, rejected, strict=True))


def length_rule_accuracy(pairs: Sequence[Mapping[str, Any]], tokenizer=None) -> tuple[int, int]:
    """(pairs where the chosen answer is the longer one, pairs): how often "the longer answer wins" is right.

    Lengths are characters of the answers' text (their messages' contents joined by newlines), or tokens with a
    tokenizer. A tie counts as wrong: the rule does not pick the chosen answer (as eval/preference.py's per-pair
    `length_rule` scores it), so correct / total is the rule's accuracy over all pairs.
    """
    if tokenizer is None:
        lengths = char_lengths(pairs)
    else:
        lengths = [(c["total"], r["total"]) for c, r in token_lengths(pairs, tokenizer)]
    return sum(1 for chosen, rejected in lengths if chosen > rejected), len(lengths)


def pair_set_stats(pairs: Sequence[Mapping[str, Any]], label: str, tokens: list | None = None) -> dict[str, Any]:
    """One set of pairs: identical and empty sides (listed), and how often the chosen answer is the longer one."""
    identical = [
        _ref(p, label) for p in pairs if normalized(answer_text(p["chosen"])) == normalized(answer_text(p["rejected"]))
    ]
    empty = [
        _ref(p, label) for p in pairs if not (answer_text(p["chosen"]).strip() and answer_text(p["rejected"]).strip())
    ]
    chars = char_lengths(pairs)
    stats: dict[str, Any] = {
        "pairs": len(pairs),
        "identical": len(identical),
        "identical_listed": identical[:LISTED],
        "empty_side": len(empty),
        "empty_listed": empty[:LISTED],
        "chars": _bias(chars),
    }
    if tokens is not None:
        stats["tokens"] = _bias([(c["total"], r["total"]) for c, r in tokens])
    return stats


def _bias(lengths: Lengths) -> dict[str, Any]:
    """Shares of pairs whose chosen side is longer, shorter or as long, and the mean lengths of both sides."""
    count = len(lengths) or 1
    longer = sum(1 for c, r in lengths if c > r)
    shorter = sum(1 for c, r in lengths if c < r)
    return {
        "chosen_longer": longer,
        "chosen_shorter": shorter,
        "ties": len(lengths) - longer - shorter,
        "chosen_longer_share": round(longer / count, 4),
        "mean_chosen": round(sum(c for c, _ in lengths) / count, 1),
        "mean_rejected": round(sum(r for _, r in lengths) / count, 1),
    }


def held_out_names(sets: Mapping[str, Sequence], roles: Mapping[str, str]) -> list[str]:
    """The sets the length rule is scored on: the test set, else the validation set, else every evaluation set."""
    evaluation = [name for name in sets if roles.get(name) == "eval"]
    for name in ("test", "validation"):
        if name in evaluation:
            return [name]
    return evaluation


def pair_section(sets: Mapping[str, Sequence[dict]], roles: Mapping[str, str], tokens: dict | None) -> dict[str, Any]:
    """The report's "pairs" section for preference sets; `tokens`: set name → `token_lengths` (with a tokenizer)."""
    per_set = {name: pair_set_stats(rows, name, (tokens or {}).get(name)) for name, rows in sets.items()}
    names = held_out_names(sets, roles)
    section: dict[str, Any] = {"kind": "preference", "per_set": per_set, "held_out": None}
    if names:
        unit = "tokens" if tokens else "chars"
        correct = sum(per_set[name][unit]["chosen_longer"] for name in names)
        total = sum(per_set[name]["pairs"] for name in names)
        section["held_out"] = {"sets": names, "measured_in": unit, "correct": correct, "total": total,
                               "length_rule_accuracy": round(correct / total, 4) if total else None}  # fmt: skip
    return section


def unpaired_section(sets: Mapping[str, Sequence[dict]]) -> dict[str, Any]:
    """The report's "pairs" section for unpaired (KTO) sets: how many completions are desirable, per set."""
    per_set = {}
    low, high = LABEL_SHARE_WARNING
    for name, rows in sets.items():
        desirable = sum(1 for row in rows if row["label"])
        share = round(desirable / len(rows), 4) if rows else None
        per_set[name] = {
            "records": len(rows),
            "desirable": desirable,
            "undesirable": len(rows) - desirable,
            "desirable_share": share,
            "imbalanced": share is not None and not low <= share <= high,
        }
    return {"kind": "unpaired", "per_set": per_set}


def longer_side_lengths(tokens: list[tuple[dict, dict]]) -> list[dict]:
    """Per pair, the lengths of prompt + its longer answer: what has to fit in max_length."""
    return [max(chosen, rejected, key=lambda item: item["total"]) for chosen, rejected in tokens]


def _ref(record: Mapping[str, Any], label: str) -> dict[str, str]:
    return {"id": str(record.get("id")), "source": str(record.get("source", "")), "set": label}
