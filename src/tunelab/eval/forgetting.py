"""Forgetting check: did fine-tuning cost general ability? Base and tuned model are scored on the same items and the
accuracy difference gets a 95% interval for paired proportions: Newcombe's hybrid score interval (method 10 of
Newcombe 1998, "Improved confidence intervals for the difference between binomial proportions based on paired data"),
built from the Wilson intervals of the two accuracies and their correlation across items. Pairing is what makes the
interval tight enough to mean something on a few hundred items. A percentile bootstrap was used before; it collapses
to zero width when base and tuned agree on every item (20 items all right in both "ruled out" any drop), while the
score interval keeps what so few items cannot rule out (about ±15 points there).

The verdict reads the interval against the threshold T (points), not the point estimate:
- no_forgetting: the whole interval is at or above −T (a drop larger than T is ruled out);
- forgetting: the whole interval is below −T (a drop larger than T is established);
- inconclusive: the interval spans −T, or there are fewer than `MIN_ITEMS` items. Then `items_needed` estimates how
  many items would decide it if the change and the spread of the per-item differences stayed as measured:
  n ≈ (1.96·sd / |mean + T|)², a rough figure (the measured mean is itself uncertain), and None when the mean sits
  so close to −T that no practical number would do (over `ITEMS_NEEDED_CAP`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tunelab.eval.bootstrap import MIN_ITEMS

NO_FORGETTING, FORGETTING, INCONCLUSIVE = "no_forgetting", "forgetting", "inconclusive"
INTERVAL_METHOD = "Newcombe hybrid score interval for paired proportions (95%)"
ITEMS_NEEDED_CAP = 100_000
_Z = 1.959964
_TOLERANCE = 1e-9  # interval ends can land exactly on −T; rounding must not decide the verdict


def wilson_interval(successes: int, count: int) -> tuple[float, float]:
    """The Wilson score 95% interval of a proportion."""
    share = successes / count
    scale = 1 + _Z**2 / count
    centre = (share + _Z**2 / (2 * count)) / scale
    half = _Z * math.sqrt(share * (1 - share) / count + _Z**2 / (4 * count**2)) / scale
    return max(0.0, centre - half), min(1.0, centre + half)


def paired_interval(base: list[bool], tuned: list[bool]) -> tuple[float, float, float]:
    """(tuned − base accuracy, lower and upper end of its 95% interval), as fractions, for answers paired by item:
    Newcombe's method 10 (the Wilson intervals of both accuracies, combined with their correlation across items)."""
    if len(base) != len(tuned) or not base:
        raise ValueError("paired_interval needs two equally long, non-empty lists")
    pairs = list(zip(base, tuned, strict=True))
    both, lost, gained = pairs.count((True, True)), pairs.count((True, False)), pairs.count((False, True))
    neither, count = len(pairs) - both - lost - gained, len(pairs)
    before, after = (both + lost) / count, (both + gained) / count
    low_before, high_before = wilson_interval(both + lost, count)
    low_after, high_after = wilson_interval(both + gained, count)
    spread = (both + lost) * (gained + neither) * (both + gained) * (lost + neither)
    phi = (both * neither - lost * gained) / math.sqrt(spread) if spread else 0.0
    # distances from each accuracy to its own Wilson bounds, combined with the correlation phi
    after_down, after_up = after - low_after, high_after - after
    before_down, before_up = before - low_before, high_before - before
    down = after_down**2 - 2 * phi * after_down * before_up + before_up**2
    up = after_up**2 - 2 * phi * after_up * before_down + before_down**2
    difference = after - before
    return difference, difference - math.sqrt(max(0.0, down)), difference + math.sqrt(max(0.0, up))


def classify(low: float, high: float, threshold_points: float, count: int) -> str:
    """no_forgetting, forgetting or inconclusive from the 95% interval (fractions) and the threshold (points)."""
    floor = -threshold_points / 100
    if count < MIN_ITEMS:
        return INCONCLUSIVE
    if low >= floor - _TOLERANCE:
        return NO_FORGETTING
    if high < floor - _TOLERANCE:
        return FORGETTING
    return INCONCLUSIVE


def items_needed(difference: float, sd: float, threshold_points: float, count: int) -> int | None:
    """Items for a 95% interval of the measured spread to clear −threshold (rounded up to two figures); None when
    over ITEMS_NEEDED_CAP."""
    gap = abs(difference + threshold_points / 100)
    if gap < _TOLERANCE:
        return None
    estimate = math.ceil((_Z * sd / gap) ** 2)
    if estimate > ITEMS_NEEDED_CAP:
        return None
    return _two_figures(max(estimate, MIN_ITEMS, count + 1))  # the interval at `count` items did not decide it


def _two_figures(count: int) -> int:
    """Rounded up to two significant figures (3489 → 3500): the estimate is no more precise than that."""
    step = 10 ** max(0, len(str(count)) - 2)
    return step * math.ceil(count / step)


def _verdict_fields(part: dict[str, Any], threshold_points: float, sd: float) -> dict[str, Any]:
    low, high = part["ci95"]
    verdict = classify(low, high, threshold_points, part["count"])
    needed = items_needed(part["difference"], sd, threshold_points, part["count"]) if verdict == INCONCLUSIVE else None
    return {"sd": round(sd, 6), "verdict": verdict, "items_needed": needed}


def _compare(base_rows: list[dict], tuned_rows: list[dict], threshold_points: float) -> dict[str, Any]:
    base = [bool(r["correct"]) for r in base_rows]
    tuned = [bool(r["correct"]) for r in tuned_rows]
    difference, low, high = paired_interval(base, tuned)
    differences = np.asarray(tuned, dtype=float) - np.asarray(base, dtype=float)
    sd = float(differences.std(ddof=1)) if len(differences) > 1 else 0.0
    part = {
        "count": len(base),
        "base": sum(base) / len(base),
        "tuned": sum(tuned) / len(tuned),
        "difference": difference,
        "ci95": [low, high],
    }
    return part | _verdict_fields(part, threshold_points, sd)


def forgetting_report(base_rows: list[dict], tuned_rows: list[dict], task: str, threshold_points: float) -> dict:
    """Overall and per-category comparison with three-way verdicts; `flagged` (and `flagged_categories`) only
    where forgetting is established, i.e. the whole interval lies below −threshold."""
    tuned_by_id = {row["id"]: row for row in tuned_rows}
    pairs = [(row, tuned_by_id[row["id"]]) for row in base_rows if row["id"] in tuned_by_id]
    if not pairs:
        raise ValueError("base and tuned were not scored on any common item")
    overall = _compare([b for b, _ in pairs], [t for _, t in pairs], threshold_points)
    categories: dict[str, list[tuple[dict, dict]]] = {}
    for base, tuned in pairs:
        categories.setdefault(base.get("category", "(none)"), []).append((base, tuned))
    by_category = {
        name: _compare([b for b, _ in group], [t for _, t in group], threshold_points)
        for name, group in sorted(categories.items())
    }
    return {
        "task": task,
        "threshold_points": threshold_points,
        **overall,
        "flagged": overall["verdict"] == FORGETTING,
        "significant": overall["ci95"][1] < 0,
        "flagged_categories": [name for name, part in by_category.items() if part["verdict"] == FORGETTING],
        "interval": INTERVAL_METHOD,
        "by_category": by_category,
    }


def _sd_from_interval(part: dict[str, Any]) -> float:
    """The per-item spread a stored interval implies (half-width ≈ 1.96·sd/√n), for reports without `sd`."""
    low, high = part["ci95"]
    return (high - low) / (2 * _Z) * math.sqrt(part["count"])


def with_verdicts(report: dict[str, Any]) -> dict[str, Any]:
    """The report with verdict fields, computed from the stored difference, ci95 and threshold_points when it was
    written before verdicts existed (the spread is then estimated from the interval's width)."""
    if "verdict" in report:
        return report
    threshold = report["threshold_points"]

    def filled(part: dict[str, Any]) -> dict[str, Any]:
        return part | _verdict_fields(part, threshold, part.get("sd", _sd_from_interval(part)))

    by_category = {name: filled(part) for name, part in report.get("by_category", {}).items()}
    overall = filled(report)
    return overall | {
        "flagged": overall["verdict"] == FORGETTING,
        "flagged_categories": [name for name, part in by_category.items() if part["verdict"] == FORGETTING],
        "by_category": by_category,
    }


VERDICT_LABELS = {NO_FORGETTING: "no forgetting", FORGETTING: "FORGETTING", INCONCLUSIVE: "inconclusive"}


def _open_question(report: dict[str, Any]) -> str:
    """What an inconclusive interval leaves open, and how many items would settle it."""
    threshold, count = report["threshold_points"], report["count"]
    low, high = (100 * x for x in report["ci95"])
    if count < MIN_ITEMS:
        text = f"only {count} items were scored, fewer than the {MIN_ITEMS} a verdict needs."
    elif 100 * report["difference"] >= -threshold:
        text = f"a drop larger than {threshold:g} points is not ruled out (the 95% interval reaches {low:+.1f})."
    else:
        text = (f"the drop may be {threshold:g} points or less (the 95% interval reaches {high:+.1f}), "
                "so forgetting is not established.")  # fmt: skip
    needed = report.get("items_needed")
    if needed is not None:
        return f"{text} About {needed:,} items would decide it if the change and its spread stay as measured."
    return f"{text} The change sits on the threshold: no practical number of items would decide it."


def verdict_sentence(report: dict[str, Any]) -> str:
    """The verdict in words, saying what the interval rules out (and what it does not)."""
    report = with_verdicts(report)
    threshold, task, verdict = report["threshold_points"], report["task"], report["verdict"]
    interval = "{:+.1f} to {:+.1f}".format(*(100 * x for x in report["ci95"]))
    if verdict == NO_FORGETTING:
        text = (f"No forgetting on {task}: a drop larger than {threshold:g} points is ruled out "
                f"(the whole 95% interval, {interval}, is at or above -{threshold:g}).")  # fmt: skip
    elif verdict == FORGETTING:
        text = (f"FORGETTING on {task}: accuracy dropped by more than {threshold:g} points "
                f"(the whole 95% interval, {interval}, is below -{threshold:g}).")  # fmt: skip
    else:
        text = f"Inconclusive on {task}: {_open_question(report)}"
    if report["flagged_categories"]:
        names = ", ".join(report["flagged_categories"])
        text += f" Forgetting in {names}: the whole interval is below -{threshold:g} points."
    return text


def describe(report: dict[str, Any]) -> str:
    """One line for the console: the change in points with its interval and the verdict."""
    low, high = (100 * x for x in report["ci95"])
    change = 100 * report["difference"]
    return (
        f"forgetting check ({report['task']}, {report['count']} items): base {report['base']:.1%} → tuned "
        f"{report['tuned']:.1%}, change {change:+.1f} points (95% CI {low:+.1f} to {high:+.1f}). "
        f"{verdict_sentence(report)}"
    )
