"""The forgetting check: paired bootstrap intervals and the flag for a drop larger than the threshold."""

from __future__ import annotations

import random

import pytest

from tunelab.eval.forgetting import describe, forgetting_report, paired_bootstrap


def rows(correct: list[bool], categories=("a", "b")) -> list[dict]:
    return [{"id": f"i{n}", "category": categories[n % len(categories)], "correct": c} for n, c in enumerate(correct)]


def test_identical_models_have_zero_difference_and_a_zero_width_interval():
    same = [True, False] * 50
    assert paired_bootstrap(same, same) == (0.0, 0.0, 0.0)


def test_pairing_makes_the_interval_narrower_than_ignoring_it():
    rng = random.Random(0)
    base = [rng.random() < 0.6 for _ in range(300)]
    tuned = [b if rng.random() < 0.9 else not b for b in base]  # mostly the same answers, a few flipped
    difference, low, high = paired_bootstrap(base, tuned)
    assert low <= difference <= high
    # unpaired: resample each side on its own
    unpaired = []
    for seed in range(400):
        r = random.Random(seed)
        unpaired.append(sum(r.choice(tuned) for _ in tuned) / 300 - sum(r.choice(base) for _ in base) / 300)
    unpaired.sort()
    assert high - low < 0.6 * (unpaired[389] - unpaired[10])


def test_a_real_drop_is_flagged_and_significant():
    base = [True] * 80 + [False] * 20
    tuned = [True] * 60 + [False] * 40  # 20 points lower, the same items lost
    report = forgetting_report(rows(base), rows(tuned), "probe", threshold_points=2.0)
    assert report["difference"] == pytest.approx(-0.2) and report["flagged"] and report["significant"]
    assert report["ci95"][1] < 0 and set(report["by_category"]) == {"a", "b"}
    assert "FORGETTING" in describe(report) and "-20.0 points" in describe(report)


def test_a_small_change_is_not_flagged():
    base = [True] * 50 + [False] * 50
    tuned = [True] * 49 + [False] * 51
    report = forgetting_report(rows(base), rows(tuned), "probe", threshold_points=2.0)
    assert not report["flagged"] and not report["significant"]
    assert "no drop larger than 2 points" in describe(report)


def test_items_are_matched_by_id_and_must_overlap():
    base = rows([True, False, True])
    tuned = list(reversed(rows([True, False, True])))
    assert forgetting_report(base, tuned, "t", 2.0)["difference"] == 0.0
    with pytest.raises(ValueError, match="common item"):
        forgetting_report(base, [{"id": "other", "correct": True}], "t", 2.0)
