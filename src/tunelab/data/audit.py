"""The data audit: invalid records, duplicates, leakage, benchmark contamination, lengths and answer quality.

Input is a set of named record lists ("train", "test", or one per file) with a role each: `train` sets are what the
model learns from, `eval` sets must not overlap them. The result is one JSON-able report; `audit_report.py` renders it.
Nothing here modifies or drops data: the audit lists, the caller decides.

All sets hold one kind of record (`kinds.py`). For preference data (pairs, or unpaired KTO records) duplicates are
judged on the whole record, leakage and the near-duplicate clusters a split keeps together on the prompt alone, the
answer checks on the prompt with the chosen answer (or the completion), lengths on the prompt with the longer answer;
`pair_audit.py` adds the checks of the pairs themselves (report section "pairs").
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.errors import DataError

LISTED = 200  # entries per list kept in the report; counts always cover everything


@dataclass
class AuditResult:
    report: dict[str, Any]
    records: list[dict] = field(default_factory=list)  # all records, flattened in set order
    labels: list[str] = field(default_factory=list)  # the set name of each record
    clusters: list[list[int]] = field(default_factory=list)  # near-duplicate clusters over `records`
    exact_groups: list[list[int]] = field(default_factory=list)  # all exact-duplicate groups over `records`
    leak_pairs: list[tuple[int, int, str, float]] = field(default_factory=list)  # all (eval, train, kind, similarity)
    invalid_errors: list[DataError] = field(default_factory=list)  # every invalid record, not only the listed ones
    inputs: dict[str, list[Path]] = field(default_factory=dict)  # the files each set was read from, when known

    def leaks(self) -> int:
        return self.report["summary"]["leaked_records"]

    def invalid(self) -> int:
        return self.report["summary"]["invalid_records"]

    def leaked_records(self) -> list[dict[str, Any]]:
        """One entry per leaked evaluation record: its index and set, and the closest training record it duplicates."""
        best: dict[int, tuple[int, str, float]] = {}
        for i, j, kind, similarity in self.leak_pairs:
            if i not in best or similarity > best[i][2]:
                best[i] = (j, kind, similarity)
        return [
            {"index": i, "set": self.labels[i], "id": str(self.records[i].get("id")),
             "source": str(self.records[i].get("source", "")), "train_set": self.labels[j],
             "train_id": str(self.records[j].get("id")), "kind": kind, "similarity": round(similarity, 3)}
            for i, (j, kind, similarity) in sorted(best.items())
        ]  # fmt: skip


def _ref(record: dict, label: str) -> dict[str, str]:
    return {"id": str(record.get("id")), "source": str(record.get("source", "")), "set": label}


def audit_sets(
    sets: dict[str, list[dict]],
    roles: dict[str, str],
    invalid: list[DataError] | None = None,
    tokenizer=None,
    max_length: int | None = None,
    against: list[str | Path] | tuple = (),
    threshold: float = 0.8,
) -> AuditResult:
    """Audit named record sets; `roles[name]` is "train" or "eval"."""
    from tunelab.data.dedup import find_duplicates, prompt_text, record_text
    from tunelab.data.kinds import conversation, sets_kind

    started = time.monotonic()
    kind = sets_kind(sets, roles)
    records = [r for name in sets for r in sets[name]]
    labels = [name for name in sets for _ in sets[name]]
    duplicates = find_duplicates([record_text(r) for r in records], threshold=threshold)
    prompts = duplicates if kind == "messages" else find_duplicates([prompt_text(r) for r in records], threshold)
    leak_pairs = _leak_pairs(prompts, labels, roles)
    tokens = _pair_tokens(sets, tokenizer) if kind == "preference" else None
    report: dict[str, Any] = {
        "kind": kind,
        "sets": {name: {"records": len(rows), "role": roles.get(name, "train")} for name, rows in sets.items()},
        "threshold": threshold,
        "invalid": [{"where": e.where, "problem": e.problem, "fix": e.fix} for e in (invalid or [])][:LISTED],
        "duplicates": _duplicate_section(duplicates, records, labels),
        "leakage": _leakage_section(leak_pairs, records, labels),
        "contamination": _contamination_section(records, labels, roles, against),
        "quality": _quality_section(records if kind == "messages" else [conversation(r) for r in records], labels),
        "lengths": _length_section(sets, tokenizer, max_length, tokens),
    }
    if kind != "messages":
        report["pairs"] = _pairs_section(sets, roles, kind, tokens)
    report["summary"] = _summary(report, len(invalid or []), records)
    report["seconds"] = round(time.monotonic() - started, 2)
    return AuditResult(
        report, records, labels, prompts.clusters, duplicates.exact_groups, leak_pairs, list(invalid or [])
    )


def _pair_tokens(sets, tokenizer) -> dict[str, list] | None:
    """Set name → per pair, the token lengths of prompt + chosen and prompt + rejected (measured once, used twice)."""
    if tokenizer is None:
        return None
    from tunelab.data.pair_audit import token_lengths

    return {name: token_lengths(rows, tokenizer) for name, rows in sets.items()}


def _pairs_section(sets, roles, kind, tokens) -> dict[str, Any]:
    from tunelab.data.kinds import as_unpaired
    from tunelab.data.pair_audit import pair_section, unpaired_section

    if kind == "preference":
        return pair_section(sets, roles, tokens)
    return unpaired_section({name: as_unpaired(rows) for name, rows in sets.items()})


def _duplicate_section(duplicates, records, labels) -> dict[str, Any]:
    exact = [[_ref(records[i], labels[i]) for i in group] for group in duplicates.exact_groups]
    near = [
        {"a": _ref(records[i], labels[i]), "b": _ref(records[j], labels[j]), "similarity": round(sim, 3)}
        for i, j, sim in duplicates.near_pairs
    ]
    cross_set = sum(1 for pair in near if pair["a"]["set"] != pair["b"]["set"])
    cross_set += sum(1 for group in exact if len({ref["set"] for ref in group}) > 1)
    return {
        "exact_groups": len(exact),
        "exact_extra_copies": sum(len(group) - 1 for group in exact),
        "near_pairs": len(near),
        "cross_set_links": cross_set,
        "records_in_clusters": sum(len(c) for c in duplicates.clusters),
        "exact": exact[:LISTED],
        "near": near[:LISTED],
    }


def _leak_pairs(duplicates, labels, roles) -> list[tuple[int, int, str, float]]:
    """Every (evaluation record, training record) pair that is an exact or near duplicate, by record index."""
    from tunelab.data.dedup import cross_pairs

    names = list(dict.fromkeys(labels))
    evals = [n for n in names if roles.get(n) == "eval"]
    trains = [n for n in names if roles.get(n, "train") == "train"]
    return [pair for e in evals for t in trains for pair in cross_pairs(duplicates, labels, e, t)]


def _leakage_section(leak_pairs, records, labels) -> dict[str, Any]:
    pairs = [{"eval": _ref(records[i], labels[i]), "train": _ref(records[j], labels[j]),
              "kind": kind, "similarity": round(sim, 3)} for i, j, kind, sim in leak_pairs]  # fmt: skip
    leaked = {i for i, _, _, _ in leak_pairs}
    return {"pairs": len(pairs), "leaked_records": len(leaked), "listed": pairs[:LISTED]}


def mark_dropped(report: dict[str, Any], dropped: list[dict[str, Any]]) -> None:
    """Record in the report that these leaked evaluation records are left out (`data.leakage: drop`)."""
    report["leakage"]["dropped_records"] = len(dropped)
    report["leakage"]["dropped"] = [{k: v for k, v in item.items() if k != "index"} for item in dropped[:LISTED]]
    report["summary"]["leaked_records_dropped"] = len(dropped)


def _contamination_section(records, labels, roles, against) -> dict[str, Any]:
    if not against:
        return {"checked": False}
    from tunelab.data.benchmarks import read_benchmark
    from tunelab.data.contamination import benchmark_ngrams, find_contamination

    items = [item for path in against for item in read_benchmark(path)]
    if not items:
        raise DataError(", ".join(map(str, against)), "no benchmark items found", "point --against at benchmark files")
    train = [r for r, label in zip(records, labels, strict=True) if roles.get(label, "train") == "train"]
    hits = find_contamination(train, benchmark_ngrams(items))
    return {
        "checked": True,
        "benchmarks": [str(p) for p in against],
        "benchmark_items": len(items),
        "contaminated_records": len({h["record_id"] for h in hits}),
        "listed": hits[:LISTED],
    }


def _quality_section(records, labels) -> dict[str, Any]:
    from tunelab.data.quality import INFO_FLAGS, answer_flags, language, prompt_text, turns

    flagged: dict[str, list[dict]] = {}
    languages: dict[str, Counter] = {}
    turn_counts: dict[str, Counter] = {}
    for record, label in zip(records, labels, strict=True):
        for flag in answer_flags(record):
            flagged.setdefault(flag, []).append(_ref(record, label))
        languages.setdefault(label, Counter())[language(prompt_text(record))] += 1
        turn_counts.setdefault(label, Counter())[turns(record)] += 1
    counted = {flag: {"count": len(refs), "listed": refs[:LISTED]} for flag, refs in flagged.items()}
    return {
        "flags": {flag: info for flag, info in counted.items() if flag not in INFO_FLAGS},
        "info": {flag: info for flag, info in counted.items() if flag in INFO_FLAGS},
        "languages": {label: dict(counts) for label, counts in languages.items()},
        "turns": {label: {str(k): v for k, v in sorted(c.items())} for label, c in turn_counts.items()},
    }


def _length_section(sets, tokenizer, max_length, pair_tokens=None) -> dict[str, Any]:
    """Token lengths per set against max_length: of each conversation, of prompt + completion, or of a pair's prompt
    with its longer answer (what has to fit)."""
    if tokenizer is None:
        return {"checked": False}
    from tunelab.data.kinds import conversation
    from tunelab.data.pair_audit import longer_side_lengths
    from tunelab.data.quality import length_summary, token_lengths

    section: dict[str, Any] = {"checked": True, "per_set": {}, "histogram": {}}
    for name, rows in sets.items():
        if pair_tokens is not None:
            lengths = longer_side_lengths(pair_tokens[name])
        else:
            lengths = token_lengths([conversation(r) for r in rows], tokenizer)
        section["per_set"][name] = length_summary(lengths, max_length)
        section["histogram"][name] = [item["total"] for item in lengths]
    return section


def _summary(report: dict[str, Any], invalid_count: int, records: list[dict]) -> dict[str, Any]:
    lengths = report["lengths"].get("per_set", {})
    flags = report["quality"]["flags"]
    return {
        "records": len(records),
        "invalid_records": invalid_count,
        "exact_duplicate_copies": report["duplicates"]["exact_extra_copies"],
        "near_duplicate_pairs": report["duplicates"]["near_pairs"],
        "cross_set_duplicate_links": report["duplicates"]["cross_set_links"],
        "leaked_records": report["leakage"]["leaked_records"],
        "contaminated_records": report["contamination"].get("contaminated_records"),
        "truncated": sum(s.get("truncated", 0) for s in lengths.values()) if lengths else None,
        "answer_cut_off": sum(s.get("answer_cut_off", 0) for s in lengths.values()) if lengths else None,
        **{flag: info["count"] for flag, info in flags.items()},
        **_pair_summary(report.get("pairs")),
    }


def _pair_summary(section: dict[str, Any] | None) -> dict[str, Any]:
    """The preference checks' counts for the summary (none for conversations)."""
    if section is None:
        return {}
    per_set = section["per_set"].values()
    if section["kind"] == "unpaired":
        return {"imbalanced_label_sets": sum(1 for stats in per_set if stats["imbalanced"])}
    held_out = section["held_out"] or {}
    return {
        "identical_pairs": sum(stats["identical"] for stats in per_set),
        "empty_sides": sum(stats["empty_side"] for stats in per_set),
        "length_rule_accuracy": held_out.get("length_rule_accuracy"),
    }
