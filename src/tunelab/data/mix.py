"""Mix several sources at target ratios, e.g. 80% domain data with 20% general data against forgetting.

Each source gets round(total × ratio) records (largest remainder, so the counts add up to `total` and every achieved
ratio is within 1/total of its target). A source with fewer records than that is up-sampled: whole shuffled passes
first, then a seeded sample for the rest, so no record appears twice before every record appeared once. A source
with more is down-sampled by a seeded sample. Repeated records get ids suffixed "#2", "#3", ... so ids stay unique.

Default `total`: the largest mix that needs no duplication, i.e. min over sources of available / ratio. The source
that sets it is used whole, the others are down-sampled. Pass `total` to force a size (which may up-sample).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

from tunelab.data.split import apportion
from tunelab.errors import DataError

RATIO_TOLERANCE = 1e-6
WHERE = "data mix"

Source = tuple[str, Sequence[Mapping[str, Any]], float | None]


def mix_sources(
    sources: Sequence[Source], seed: int, total: int | None = None
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The mixed records (shuffled with `seed`) and a report of what each source contributed.

    Ratios must sum to 1; all None means "natural proportions" (each source in proportion to its size).
    Each source draws from its own random stream (seeded by `seed` and its name), so adding a source does not
    change which records the others contribute.
    """
    ratios = _ratios(sources)
    _check_not_empty(sources, ratios)
    total = _default_total(sources, ratios) if total is None else _check_total(total)
    counts = apportion(total, ratios)
    mixed: list[dict[str, Any]] = []
    report: dict[str, Any] = {"seed": seed, "total": total, "sources": []}
    for name, records, _ in sources:
        rng = random.Random(f"{seed}:{name}")
        mixed += take(records, counts[name], rng, name)
        report["sources"].append(_report_row(name, len(records), ratios[name], counts[name], total))
    random.Random(seed).shuffle(mixed)
    return mixed, report


def take(records: Sequence[Mapping[str, Any]], count: int, rng: random.Random, name: str) -> list[dict[str, Any]]:
    """`count` records: a seeded sample when there are enough, else whole shuffled passes plus a seeded sample."""
    available = len(records)
    if count <= available:
        return [dict(records[index]) for index in sorted(rng.sample(range(available), count))]
    passes, rest = divmod(count, available)
    taken: list[dict[str, Any]] = []
    for copy in range(1, passes + 1):
        order = list(range(available))
        rng.shuffle(order)
        taken += [_copy(records[index], copy, name, index) for index in order]
    taken += [_copy(records[index], passes + 1, name, index) for index in rng.sample(range(available), rest)]
    return taken


def format_mix_report(report: Mapping[str, Any]) -> str:
    """A small table for the terminal: one line per source."""
    lines = [f"mix of {report['total']} records (seed {report['seed']}):"]
    for row in report["sources"]:
        change = "all used"
        if row["upsampled"] or row["downsampled"]:
            change = f"+{row['upsampled']} repeated" if row["upsampled"] else f"{row['downsampled']} left out"
        lines.append(
            f"  {row['name']}: {row['taken']} of {row['available']} ({change}), "
            f"ratio {row['achieved_ratio']:.4f} (target {row['target_ratio']:.4f})"
        )
    return "\n".join(lines)


def _copy(record: Mapping[str, Any], copy: int, name: str, index: int) -> dict[str, Any]:
    """The record itself for its first copy; later copies get "#<copy>" on their id."""
    result = dict(record)
    if copy > 1:
        result["id"] = f"{record.get('id', f'{name}-{index}')}#{copy}"
    return result


def _ratios(sources: Sequence[Source]) -> dict[str, float]:
    """Checked target ratio per source name."""
    if not sources:
        raise DataError(WHERE, "no sources given", fix="pass at least one (name, records, ratio)")
    names = [name for name, _, _ in sources]
    for name in names:
        if not isinstance(name, str) or not name or names.count(name) > 1:
            raise DataError(
                WHERE, f"source names must be unique, non-empty strings; got {name!r}", fix="give each source a name"
            )
    given = [ratio for _, _, ratio in sources]
    if all(ratio is None for ratio in given):
        size = sum(len(records) for _, records, _ in sources)
        if not size:
            raise DataError(WHERE, "every source is empty", fix="check the source files")
        return {name: len(records) / size for name, records, _ in sources}
    for name, _, ratio in sources:
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 <= ratio <= 1:
            raise DataError(
                f"{WHERE}, source {name!r}",
                f"ratio must be a number from 0 to 1, got {ratio!r}",
                fix="give every source a ratio, or none of them (to keep their natural proportions)",
            )
    summed = sum(given)
    if abs(summed - 1) > RATIO_TOLERANCE:
        shown = " + ".join(f"{name}={ratio:g}" for name, _, ratio in sources)
        raise DataError(WHERE, f"the ratios sum to {summed:g} ({shown}), not 1", fix="make the ratios add up to 1")
    return {name: ratio / summed for name, _, ratio in sources}


def _default_total(sources: Sequence[Source], ratios: Mapping[str, float]) -> int:
    """The largest total that needs no source up-sampled; every record of the scarcest source is used."""
    limits = [len(records) / ratios[name] for name, records, _ in sources if ratios[name] > 0]
    return math.floor(min(limits) + 1e-9)


def _check_not_empty(sources: Sequence[Source], ratios: Mapping[str, float]) -> None:
    for name, records, _ in sources:
        if ratios[name] > 0 and not records:
            raise DataError(
                f"{WHERE}, source {name!r}", "has no records but a ratio above 0", fix="give it ratio 0 or fix its data"
            )


def _check_total(total: int) -> int:
    if isinstance(total, bool) or not isinstance(total, int) or total < 1:
        raise DataError(WHERE, f"total must be a positive whole number, got {total!r}", fix="or leave it unset")
    return total


def _report_row(name: str, available: int, ratio: float, taken: int, total: int) -> dict[str, Any]:
    return {
        "name": name,
        "available": available,
        "target_ratio": ratio,
        "taken": taken,
        "achieved_ratio": taken / total if total else 0.0,
        "upsampled": max(taken - available, 0),
        "downsampled": max(available - taken, 0),
    }
