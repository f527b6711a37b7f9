"""The forgetting check: paired score intervals and the three-way verdict read from the interval."""

from __future__ import annotations

import random

import pytest

from tunelab.eval.forgetting import (
    FORGETTING,
    INCONCLUSIVE,
    NO_FORGETTING,
    classify,
    describe,
    forgetting_report,
    items_needed,
    paired_interval,
    verdict_sentence,
    wilson_interval,
    with_verdicts,
)


def rows(correct: list[bool], categories=("a", "b")) -> list[dict]:
    return [{"id": f"i{n}", "category": categories[n % len(categories)], "correct": c} for n, c in enumerate(correct)]


def changed(count: int, gains: int, losses: int, right: int) -> tuple[list[bool], list[bool]]:
    """`count` items: `gains` wrong→right, `losses` right→wrong, `right` right in both, the rest wrong in both."""
    base = [False] * gains + [True] * losses + [True] * right
    tuned = [True] * gains + [False] * losses + [True] * right
    rest = count - len(base)
    return base + [False] * rest, tuned + [False] * rest


def report_for(count, gains, losses, right, threshold=2.0, categories=("a", "b")):
    base, tuned = changed(count, gains, losses, right)
    return forgetting_report(rows(base, categories), rows(tuned, categories), "probe", threshold_points=threshold)


def test_the_wilson_interval_matches_published_values():
    assert wilson_interval(19, 20) == pytest.approx((0.7639, 0.9911), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)


def test_identical_answers_still_leave_what_few_items_cannot_rule_out():
    """A percentile bootstrap gives a zero-width interval here and 'rules out' any drop; 20 items cannot."""
    same = [True] * 19 + [False]
    difference, low, high = paired_interval(same, same)
    assert difference == 0.0 and low == pytest.approx(-0.145, abs=0.005) and high == pytest.approx(0.145, abs=0.005)
    report = forgetting_report(rows(same), rows(same), "probe", threshold_points=2.0)
    assert report["verdict"] == INCONCLUSIVE
    many = [True, False] * 500
    assert paired_interval(many, many)[1] > -0.01  # 1,000 identical answers do rule out a 2-point drop


def test_pairing_makes_the_interval_narrower_than_ignoring_it():
    rng = random.Random(0)
    base = [rng.random() < 0.6 for _ in range(300)]
    tuned = [b if rng.random() < 0.9 else not b for b in base]  # mostly the same answers, a few flipped
    difference, low, high = paired_interval(base, tuned)
    assert low <= difference <= high
    # unpaired: resample each side on its own
    unpaired = []
    for seed in range(400):
        r = random.Random(seed)
        unpaired.append(sum(r.choice(tuned) for _ in tuned) / 300 - sum(r.choice(base) for _ in base) / 300)
    unpaired.sort()
    assert high - low < 0.6 * (unpaired[389] - unpaired[10])


def test_the_interval_covers_the_true_change_about_95_percent_of_the_time():
    """Simulated pairs with a known 3-point drop: the 95% interval should hold it in roughly 95 of 100 runs."""
    rng = random.Random(1)
    covered = 0
    for _ in range(400):
        base = [rng.random() < 0.6 for _ in range(150)]
        tuned = [b if rng.random() < 0.85 else rng.random() < 0.4 for b in base]  # a 15% share re-drawn
        truth = 0.85 * 0.6 + 0.15 * 0.4 - 0.6
        _, low, high = paired_interval(base, tuned)
        covered += low <= truth <= high
    assert 0.92 <= covered / 400 <= 0.985


def test_a_small_drop_with_a_wide_interval_is_inconclusive_not_a_pass():
    """-1.0 points, 95% CI about -7 to +5 on 100 items (the score interval: -6.8 to +4.8): a 6-point drop is not
    ruled out."""
    report = report_for(100, gains=4, losses=5, right=50)
    assert report["difference"] == pytest.approx(-0.01)
    assert report["ci95"][0] == pytest.approx(-0.07, abs=0.011) and report["ci95"][1] == pytest.approx(0.05, abs=0.011)
    assert report["verdict"] == INCONCLUSIVE and not report["flagged"]
    # sd of the differences ≈ 0.30: (1.96 · 0.30 / |−0.01 + 0.02|)² ≈ 3,500 items
    assert 3000 <= report["items_needed"] <= 4000
    line = describe(report)
    assert "Inconclusive" in line and "a drop larger than 2 points is not ruled out" in line and "-6.8" in line
    assert f"About {report['items_needed']:,} items" in line and "No forgetting" not in line


def test_a_large_drop_with_an_interval_reaching_zero_is_inconclusive_not_forgetting():
    """-6.0 points on 50 items (reported with a 95% CI of -14 to 0; the score interval gives -12.6 to +0.6): a drop of
    under 2 points is not ruled out."""
    report = report_for(50, gains=0, losses=3, right=30)
    assert report["difference"] == pytest.approx(-0.06)
    assert report["ci95"] == pytest.approx([-0.126, 0.006], abs=0.003)
    assert report["verdict"] == INCONCLUSIVE and not report["flagged"]
    assert 100 <= report["items_needed"] <= 250  # sd ≈ 0.24: (1.96 · 0.24 / 0.04)² ≈ 140
    line = describe(report)
    assert "the drop may be 2 points or less" in line and "FORGETTING" not in line


def test_a_real_drop_is_forgetting_flagged_and_significant():
    base = [True] * 80 + [False] * 20
    tuned = [True] * 60 + [False] * 40  # 20 points lower, the same items lost
    report = forgetting_report(rows(base), rows(tuned), "probe", threshold_points=2.0)
    assert report["difference"] == pytest.approx(-0.2) and report["flagged"] and report["significant"]
    assert report["verdict"] == FORGETTING and report["items_needed"] is None
    assert report["ci95"][1] < -0.02 and set(report["by_category"]) == {"a", "b"}
    assert "FORGETTING" in describe(report) and "-20.0 points" in describe(report)


def test_a_tight_interval_above_the_threshold_is_no_forgetting():
    report = report_for(400, gains=2, losses=2, right=200)
    assert report["ci95"][0] > -0.02 and report["verdict"] == NO_FORGETTING and not report["flagged"]
    assert report["items_needed"] is None
    assert describe(report).split(". ", 1)[1].startswith("No forgetting on probe: a drop larger than 2 points is ruled")


@pytest.mark.parametrize(
    ("low", "high", "count", "expected"),
    [
        (-0.02, 0.01, 100, NO_FORGETTING),  # the interval touches −T: a drop larger than T is still ruled out
        (-0.0201, 0.01, 100, INCONCLUSIVE),
        (-0.05, -0.02, 100, INCONCLUSIVE),  # a drop of exactly T is not "more than T"
        (-0.05, -0.0201, 100, FORGETTING),
        (-0.5, -0.3, 9, INCONCLUSIVE),  # too few items for any verdict
        (0.0, 0.0, 9, INCONCLUSIVE),
        (0.0, 0.0, 10, NO_FORGETTING),
    ],
)
def test_verdict_boundaries(low, high, count, expected):
    assert classify(low, high, 2.0, count) == expected


def test_items_needed_formula_cap_and_floor():
    assert items_needed(-0.01, 0.3, 2.0, 100) == 3500  # (1.96·0.3/0.01)² = 3457, rounded up to two figures
    assert items_needed(-0.02, 0.3, 2.0, 100) is None  # the mean sits on the threshold
    assert items_needed(-0.0199, 0.3, 2.0, 100) is None  # over the cap
    assert items_needed(0.05, 0.01, 2.0, 100) == 110  # never fewer than were already scored (+1)
    assert items_needed(0.05, 0.01, 2.0, 3) == 10
    report = report_for(100, gains=0, losses=0, right=50, threshold=0.0)  # identical answers, threshold 0
    assert report["verdict"] == NO_FORGETTING


def test_the_change_sitting_on_the_threshold_says_no_practical_number_decides_it():
    report = report_for(100, gains=3, losses=5, right=50)  # -2.0 points exactly
    assert report["verdict"] == INCONCLUSIVE and report["items_needed"] is None
    assert "no practical number of items would decide it" in verdict_sentence(report)


def test_a_category_wholly_below_the_threshold_is_flagged_even_when_overall_is_not():
    base = [True] * 120
    tuned = [n >= 30 or n % 2 == 1 for n in range(120)]  # category a: 15 of 60 lost; category b: unchanged
    report = forgetting_report(rows(base), rows(tuned), "probe", threshold_points=2.0)
    assert report["by_category"]["a"]["verdict"] == FORGETTING
    assert report["by_category"]["b"]["verdict"] == INCONCLUSIVE  # 60 unchanged answers cannot rule out 2 points
    assert report["flagged_categories"] == ["a"]
    assert "Forgetting in a: the whole interval is below -2 points" in describe(report)


def test_small_categories_are_never_flagged():
    report = report_for(40, gains=0, losses=8, right=20, categories=tuple("abcde"))  # 8 items per category
    assert all(part["verdict"] == INCONCLUSIVE for part in report["by_category"].values())
    assert report["flagged_categories"] == [] and report["verdict"] == FORGETTING


@pytest.mark.parametrize(("gains", "losses", "right"), [(4, 5, 50), (0, 3, 30), (0, 20, 60), (2, 2, 200)])
def test_old_reports_get_the_same_verdicts_from_their_stored_numbers(gains, losses, right):
    count = {(4, 5, 50): 100, (0, 3, 30): 50, (0, 20, 60): 100, (2, 2, 200): 400}[(gains, losses, right)]
    fresh = report_for(count, gains, losses, right)
    keys = ("sd", "verdict", "items_needed")
    old = {k: v for k, v in fresh.items() if k not in (*keys, "flagged_categories")}
    old["by_category"] = {
        name: {k: v for k, v in part.items() if k not in keys} for name, part in old["by_category"].items()
    }
    restored = with_verdicts(old)
    assert restored["verdict"] == fresh["verdict"] and restored["flagged"] == fresh["flagged"]
    assert restored["flagged_categories"] == fresh["flagged_categories"]
    assert {n: p["verdict"] for n, p in restored["by_category"].items()} == {
        n: p["verdict"] for n, p in fresh["by_category"].items()
    }
    if fresh["items_needed"] is not None:  # the spread is estimated from the interval's width: close, not equal
        assert restored["items_needed"] == pytest.approx(fresh["items_needed"], rel=0.35)
    assert verdict_sentence(old).split(":")[0] == verdict_sentence(fresh).split(":")[0]


def test_items_are_matched_by_id_and_must_overlap():
    base = rows([True, False, True])
    tuned = list(reversed(rows([True, False, True])))
    assert forgetting_report(base, tuned, "t", 2.0)["difference"] == 0.0
    with pytest.raises(ValueError, match="common item"):
        forgetting_report(base, [{"id": "other", "correct": True}], "t", 2.0)
