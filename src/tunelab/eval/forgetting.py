"""Forgetting check: did fine-tuning cost general ability? Base and tuned model are scored on the same items and the
accuracy difference gets a paired-bootstrap 95% interval (items are resampled, each keeping its base and tuned
result together, which is what makes the interval tight enough to mean something on a few hundred items).
"""

from __future__ import annotations

from typing import Any

import numpy as np

BOOTSTRAP_SAMPLES = 2000


def paired_bootstrap(base: list[bool], tuned: list[bool], samples: int = BOOTSTRAP_SAMPLES, seed: int = 0):
    """(tuned − base accuracy, 2.5th and 97.5th percentiles of the resampled difference), all as fractions."""
    if len(base) != len(tuned) or not base:
        raise ValueError("paired_bootstrap needs two equally long, non-empty lists")
    differences = np.asarray(tuned, dtype=float) - np.asarray(base, dtype=float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(differences), size=(samples, len(differences)))
    resampled = differences[picks].mean(axis=1)
    low, high = np.percentile(resampled, [2.5, 97.5])
    return float(differences.mean()), float(low), float(high)


def _compare(base_rows: list[dict], tuned_rows: list[dict]) -> dict[str, Any]:
    base = [bool(r["correct"]) for r in base_rows]
    tuned = [bool(r["correct"]) for r in tuned_rows]
    difference, low, high = paired_bootstrap(base, tuned)
    return {
        "count": len(base),
        "base": sum(base) / len(base),
        "tuned": sum(tuned) / len(tuned),
        "difference": difference,
        "ci95": [low, high],
    }


def forgetting_report(base_rows: list[dict], tuned_rows: list[dict], task: str, threshold_points: float) -> dict:
    """Overall and per-category comparison; `flagged` when accuracy dropped by more than the threshold."""
    tuned_by_id = {row["id"]: row for row in tuned_rows}
    pairs = [(row, tuned_by_id[row["id"]]) for row in base_rows if row["id"] in tuned_by_id]
    if not pairs:
        raise ValueError("base and tuned were not scored on any common item")
    overall = _compare([b for b, _ in pairs], [t for _, t in pairs])
    categories: dict[str, list[tuple[dict, dict]]] = {}
    for base, tuned in pairs:
        categories.setdefault(base.get("category", "(none)"), []).append((base, tuned))
    by_category = {
        name: _compare([b for b, _ in group], [t for _, t in group]) for name, group in sorted(categories.items())
    }
    drop = -overall["difference"] * 100
    return {
        "task": task,
        "threshold_points": threshold_points,
        **overall,
        "flagged": drop > threshold_points,
        "significant": overall["ci95"][1] < 0,
        "by_category": by_category,
    }


def describe(report: dict[str, Any]) -> str:
    """One line for the console: the change in points with its interval and the verdict."""
    low, high = (100 * x for x in report["ci95"])
    change = 100 * report["difference"]
    verdict = "FORGETTING: accuracy dropped by more than" if report["flagged"] else "no drop larger than"
    return (
        f"forgetting check ({report['task']}, {report['count']} items): base {report['base']:.1%} → tuned "
        f"{report['tuned']:.1%}, change {change:+.1f} points (95% CI {low:+.1f} to {high:+.1f}); "
        f"{verdict} {report['threshold_points']:g} points"
    )
