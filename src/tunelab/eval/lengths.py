"""Answers cut off at `eval.max_new_tokens`, and the limit the test references need.

An answer that stops at the token limit is scored as it stands (half a JSON object is invalid JSON), so it counts as
a failure. The references' lengths with the model's tokenizer say what the task needs: a complete answer is the
reference plus the end-of-turn token that stops generation, and the suggestion adds 10% headroom for answers worded
or formatted a little longer than their reference, rounded up to a multiple of 16.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from tunelab.eval.metrics import UNCATEGORIZED

HEADROOM = 0.10
ROUND_TO = 16


def reference_token_lengths(references: Sequence[str], tokenizer) -> list[int]:
    """Token count of each reference with the model's tokenizer (no special tokens added)."""
    if not references:
        return []
    return [len(ids) for ids in tokenizer(list(references), add_special_tokens=False)["input_ids"]]


def suggest_max_new_tokens(longest: int) -> int:
    """A limit with room for the longest reference, its end-of-turn token and 10% headroom, rounded up to 16."""
    needed = math.ceil(longest * (1 + HEADROOM)) + 1
    return ROUND_TO * math.ceil(needed / ROUND_TO)


def too_long(lengths: Sequence[int], max_new_tokens: int) -> int:
    """How many references cannot be generated whole: the end-of-turn token needs one token of the limit too."""
    return int(sum(1 for length in lengths if length + 1 > max_new_tokens))


def length_summary(lengths: Sequence[int], max_new_tokens: int) -> dict[str, Any]:
    """The fields report_<label>.json keeps about reference lengths (empty when there are none)."""
    if not lengths:
        return {}
    array = np.asarray(lengths)
    return {
        "max_new_tokens": max_new_tokens,
        "reference_tokens": {
            "max": int(array.max()),
            "p95": int(math.ceil(np.percentile(array, 95))),
            "mean": round(float(array.mean()), 1),
        },  # fmt: skip
        "references_over_limit": too_long(lengths, max_new_tokens),
        "suggested_max_new_tokens": suggest_max_new_tokens(int(array.max())),
    }


def _reference(record: dict[str, Any]) -> str | None:
    messages = record.get("messages") or []
    if not messages or messages[-1].get("role") != "assistant":
        return None
    content = messages[-1].get("content")
    return content if isinstance(content, str) else None


def reference_length_warning(records: Sequence[dict[str, Any]], tokenizer, max_new_tokens: int) -> str | None:
    """A warning when some test references do not fit in `max_new_tokens` (with the end-of-turn token), else None.

    `records` are canonical ({"messages": [..., {"role": "assistant", "content": reference}]}); records without a
    final assistant message are skipped (validation reports those).
    """
    references = [ref for ref in (_reference(record) for record in records) if ref is not None]
    lengths = reference_token_lengths(references, tokenizer)
    over = too_long(lengths, max_new_tokens)
    if not over:
        return None
    longest = max(lengths)
    return (
        f"{over} of {len(lengths)} test references are longer than eval.max_new_tokens={max_new_tokens} tokens allow "
        f"(longest {longest} tokens, plus the end-of-turn token); answers cut at the limit count as failures; "
        f"set eval.max_new_tokens: {suggest_max_new_tokens(longest)}"
    )


def truncation_counts(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """{"count", "truncated", "by_category": {category: {"count", "truncated"}}} from prediction rows
    (finish_reason "length" means the answer stopped at the token limit); by_category is empty without categories."""
    cut = [row.get("finish_reason") == "length" for row in rows]
    categories = [row.get("category") for row in rows]
    by_category: dict[str, dict[str, int]] = {}
    if any(categories):
        for category, was_cut in zip(categories, cut, strict=True):
            group = by_category.setdefault(category or UNCATEGORIZED, {"count": 0, "truncated": 0})
            group["count"] += 1
            group["truncated"] += int(was_cut)
    return {"count": len(rows), "truncated": sum(cut), "by_category": dict(sorted(by_category.items()))}


_LENGTH_KEYS = ("max_new_tokens", "reference_tokens", "references_over_limit", "suggested_max_new_tokens")


def counts_from_report(report: dict[str, Any]) -> dict[str, Any]:
    """truncation_counts' shape from a report_<label>.json (per category only when it has truncated_by_category)."""
    by_category = {
        name: {"count": report.get("by_category", {}).get(name, {}).get("count", 0), "truncated": cut}
        for name, cut in report.get("truncated_by_category", {}).items()
    }
    return {"count": report.get("count", 0), "truncated": report.get("truncated", 0), "by_category": by_category}


def truncation_section(counts: dict[str, dict[str, Any]], reports: dict[str, dict[str, Any]], max_new_tokens=None):
    """What the report says about answers cut at the limit: None when no answer of any label was cut.

    `counts` is {label: truncation_counts(...)}; the reference lengths come from whichever report_<label>.json has
    them (runs evaluated before they were recorded have none), `max_new_tokens` is the recipe's as a fallback.
    """
    if not any(part.get("truncated") for part in counts.values()):
        return None
    lengths = next((report for report in reports.values() if report.get("reference_tokens")), {})
    section: dict[str, Any] = {"labels": counts, "max_new_tokens": max_new_tokens}
    section.update({key: lengths[key] for key in _LENGTH_KEYS if lengths.get(key) is not None})
    return section


def truncation_sentences(section: dict[str, Any]) -> list[str]:
    """How many answers were cut, that they count as failures, and the limit the references need."""
    cut = " and ".join(f"{part['truncated']} of {part['count']} {label} answers"
                       for label, part in section["labels"].items() if part.get("count"))  # fmt: skip
    limit = section.get("max_new_tokens")
    where = f"the token limit (eval.max_new_tokens={limit})" if limit else "the token limit (eval.max_new_tokens)"
    lines = [f"{cut} stopped at {where}; they are scored as they stand, so they count as failures."]
    refs = section.get("reference_tokens")
    if not refs:
        lines.append("The references' token lengths were not recorded by this evaluation, so no limit is suggested.")
    elif section.get("references_over_limit"):
        lines.append(f"{section['references_over_limit']} references are too long for the limit with the model's "
                     f"tokenizer (longest {refs['max']} tokens, 95th percentile {refs['p95']}): "
                     f"set eval.max_new_tokens: {section['suggested_max_new_tokens']}.")  # fmt: skip
    else:
        lines.append(f"Every reference fits the limit (longest {refs['max']} tokens, 95th percentile {refs['p95']}), "
                     "so the cut answers ran on past their reference's length; a higher limit alone would not "
                     "make them right.")  # fmt: skip
    return lines


def truncation_rows(section: dict[str, Any]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """(head, rows) of answers cut at the limit per category and label, "all" first."""
    labels = list(section["labels"])
    head = ("category", *(f"{label} cut off" for label in labels))

    def cell(part: dict[str, Any] | None) -> str:
        if not part or not part.get("count"):
            return "—"
        return f"{part['truncated']} of {part['count']} ({part['truncated'] / part['count']:.0%})"

    rows = [("all", *(cell(section["labels"][label]) for label in labels))]
    names = sorted({name for label in labels for name in section["labels"][label].get("by_category", {})})
    for name in names:
        rows.append((name, *(cell(section["labels"][label]["by_category"].get(name)) for label in labels)))
    return head, rows
