"""Split records into named parts (train / validation / test) without leaking near-duplicates across them.

A near-duplicate of a test example in the training set makes the test score measure memory, not skill, so every
near-duplicate cluster goes whole into one split. Each cluster is one unit (every other record is a unit of one);
units are dealt in a seeded random order to the split furthest below its target — clusters big enough to overshoot a
split first, largest first — which keeps achieved sizes as close to the targets as whole clusters allow. With
`stratify`, each stratum (e.g. each category) is split on its own so every split keeps the stratum's share. The split
is a pure function of the records, clusters and seed.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from tunelab.errors import DataError

FRACTION_TOLERANCE = 1e-6
MISSING = "(missing)"
"""The stratum of records that do not have the `stratify` field."""

Unit = list[int]


def split_records(
    records: Sequence[Mapping[str, Any]],
    fractions: Mapping[str, float],
    clusters: Sequence[Sequence[int]],
    seed: int,
    stratify: str | None = None,
) -> dict[str, list[int]]:
    """Indices of the records in each split (keys in the order of `fractions`, indices ascending).

    Overlapping clusters are merged, so "no cluster straddles two splits" holds even for transitive duplicates.
    """
    fractions = normalised(fractions)
    units = _units(len(records), clusters)
    strata = _strata(records, units, stratify)
    rng = random.Random(seed)
    splits: dict[str, list[int]] = {name: [] for name in fractions}
    carry = dict.fromkeys(fractions, 0.0)
    for key in sorted(strata):
        stratum_units = strata[key]
        size = sum(len(unit) for unit in stratum_units)
        targets = _targets(size, fractions, carry)
        counts = _deal(stratum_units, targets, fractions, rng, splits)
        for name in fractions:
            carry[name] += size * fractions[name] - counts[name]
    return {name: sorted(indices) for name, indices in splits.items()}


def split_summary(
    records: Sequence[Mapping[str, Any]],
    splits: Mapping[str, Sequence[int]],
    fractions: Mapping[str, float],
    stratify: str | None = None,
) -> dict[str, Any]:
    """Achieved counts and proportions per split (and per stratum), with a warning for each split off its target.

    A split can miss its target when near-duplicate clusters are large: they are never cut to hit a number.
    """
    total = len(records)
    fractions = normalised(fractions)
    targets = apportion(total, fractions)
    summary: dict[str, Any] = {"total": total, "splits": {}, "warnings": []}
    for name in fractions:
        count = len(splits.get(name, ()))
        off_by = count - targets[name]
        summary["splits"][name] = {
            "count": count,
            "fraction": count / total if total else 0.0,
            "target_fraction": fractions[name],
            "target_count": targets[name],
            "off_by": off_by,
        }
        if off_by:
            summary["warnings"].append(
                f"{name} has {count} records, {abs(off_by)} {'more' if off_by > 0 else 'fewer'} than its target "
                f"{targets[name]}: near-duplicate clusters are kept whole"
            )
    if stratify is not None:
        summary["strata"] = _strata_summary(records, splits, fractions, stratify)
    return summary


def check_fractions(fractions: Mapping[str, float]) -> None:
    """Named, non-negative fractions that sum to 1: a split of part of the data is almost surely a typo."""
    where = "split fractions"
    if not fractions:
        raise DataError(where, "no splits given", fix='give fractions such as {"train": 0.9, "test": 0.1}')
    for name, value in fractions.items():
        if not isinstance(name, str) or not name:
            raise DataError(where, f"split names must be non-empty strings, got {name!r}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise DataError(where, f"{name}: expected a number from 0 to 1, got {value!r}")
    total = sum(fractions.values())
    if abs(total - 1) > FRACTION_TOLERANCE:
        shown = " + ".join(f"{value:g}" for value in fractions.values())
        raise DataError(where, f"the fractions sum to {total:g} ({shown}), not 1", fix="make them add up to 1")


def normalised(fractions: Mapping[str, float]) -> dict[str, float]:
    """Checked fractions scaled to sum to exactly 1, so rounding never hands out more records than there are."""
    check_fractions(fractions)
    total = sum(fractions.values())
    return {name: value / total for name, value in fractions.items()}


def apportion(size: int, fractions: Mapping[str, float]) -> dict[str, int]:
    """Whole counts that sum to `size`, each within 1 of size × fraction (largest remainder)."""
    exact = {name: round(size * value, 9) for name, value in fractions.items()}
    counts = {name: math.floor(value) for name, value in exact.items()}
    order = sorted(fractions, key=lambda name: counts[name] - exact[name])
    for name in order[: size - sum(counts.values())]:
        counts[name] += 1
    return counts


# --- units and strata ---------------------------------------------------------------------------------------------


def _units(size: int, clusters: Sequence[Sequence[int]]) -> list[Unit]:
    """Clusters merged where they overlap, plus a unit of one for every other record; ordered by first index."""
    parent = list(range(size))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    for number, cluster in enumerate(clusters):
        members = list(cluster)
        for index in members:
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < size:
                raise DataError(
                    f"duplicate cluster {number}",
                    f"{index!r} is not a record index (there are {size} records)",
                    fix="pass the clusters found for these same records, in the same order",
                )
        for index in members[1:]:
            parent[root(index)] = root(members[0])
    groups: dict[int, Unit] = {}
    for index in range(size):
        groups.setdefault(root(index), []).append(index)
    return sorted(groups.values(), key=lambda unit: unit[0])


def _strata(records: Sequence[Mapping[str, Any]], units: list[Unit], stratify: str | None) -> dict[str, list[Unit]]:
    """Units grouped by stratum; a cluster whose members disagree goes to the stratum most of them have."""
    if stratify is None:
        return {"": units}
    if records and not any(stratify in record for record in records):
        raise DataError(
            f"stratify={stratify!r}",
            "no record has this field",
            fix=f"use a field the records have, e.g. one of: {', '.join(sorted(records[0]))}",
        )
    strata: dict[str, list[Unit]] = {}
    for unit in units:
        votes = Counter(stratum_key(records[index], stratify) for index in unit)
        key = min(votes, key=lambda value: (-votes[value], value))
        strata.setdefault(key, []).append(unit)
    return strata


def stratum_key(record: Mapping[str, Any], field: str) -> str:
    """The record's stratum as text (non-text values as JSON), MISSING when it lacks the field."""
    value = record.get(field)
    if value is None:
        return MISSING
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)


# --- dealing units to splits --------------------------------------------------------------------------------------


def _targets(size: int, fractions: Mapping[str, float], carry: Mapping[str, float]) -> dict[str, int]:
    """Largest remainder within the stratum; the leftover seats favour splits that earlier strata left short.

    Without the carry, many small strata would round the same way and a small split could end up empty overall.
    """
    exact = {name: round(size * value, 9) for name, value in fractions.items()}
    targets = {name: math.floor(value) for name, value in exact.items()}
    eligible = [name for name in fractions if fractions[name] > 0]
    order = sorted(eligible, key=lambda name: -(exact[name] - targets[name] + carry[name]))
    for name in order[: size - sum(targets.values())]:
        targets[name] += 1
    return targets


def _deal(
    units: list[Unit],
    targets: Mapping[str, int],
    fractions: Mapping[str, float],
    rng: random.Random,
    splits: dict[str, list[int]],
) -> dict[str, int]:
    """Units in a seeded random order, each to the split furthest below its target; only clusters over a tenth of the
    smallest split's target go first, largest first, so that they cannot overshoot a split that is nearly full.

    Dealing every unit largest first would leave the small splits the units of one at the end of the line: a
    validation set made only of the records that have no near-duplicate (on examples/preference's pairs plus the
    express twins it held 78 twins and no other pair), unlike the training set it is meant to stand for.
    """
    order = list(units)
    rng.shuffle(order)
    smallest = min((targets[name] for name in fractions if fractions[name] > 0 and targets[name] > 0), default=0)
    large = max(1.0, smallest / 10)
    order = sorted((u for u in order if len(u) > large), key=len, reverse=True) + [u for u in order if len(u) <= large]
    eligible = [name for name in fractions if fractions[name] > 0]
    counts = dict.fromkeys(fractions, 0)
    for unit in order:
        name = max(eligible, key=lambda split: targets[split] - counts[split])
        counts[name] += len(unit)
        splits[name].extend(unit)
    return counts


def _strata_summary(
    records: Sequence[Mapping[str, Any]],
    splits: Mapping[str, Sequence[int]],
    fractions: Mapping[str, float],
    stratify: str,
) -> dict[str, Any]:
    """Per stratum: its size and, per split, how many of its records the split got and what share that is."""
    keys = [stratum_key(record, stratify) for record in records]
    sizes = Counter(keys)
    result: dict[str, Any] = {}
    for key in sorted(sizes):
        result[key] = {"count": sizes[key], "splits": {}}
    for name in fractions:
        counts = Counter(keys[index] for index in splits.get(name, ()))
        for key in sizes:
            result[key]["splits"][name] = {"count": counts[key], "fraction": counts[key] / sizes[key]}
    return result


def generated_links(records: Sequence[Mapping[str, Any]]) -> list[list[int]]:
    """Clusters tying each generated record (`tunelab data augment`) to its original: a paraphrase of a test record
    in the training split would be leakage, so they must land in the same split."""
    position = {str(record.get("id")): index for index, record in enumerate(records)}
    links = []
    for index, record in enumerate(records):
        origin = (record.get("generated") or {}).get("from")
        if origin is not None and str(origin) in position:
            links.append([position[str(origin)], index])
    return links
