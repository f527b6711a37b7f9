"""Leakage-free splits (split.py): clusters stay whole, seeds reproduce, strata keep their share."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunelab.data.split import apportion, split_records, split_summary
from tunelab.errors import DataError

FRACTIONS = {"train": 0.8, "validation": 0.1, "test": 0.1}


def records_of(count: int, categories: int = 1) -> list[dict]:
    return [{"id": f"r{index}", "category": f"c{index % categories}"} for index in range(count)]


@st.composite
def cluster_structures(draw) -> tuple[int, list[list[int]]]:
    """A record count and disjoint clusters of 2+ indices drawn from a random permutation."""
    size = draw(st.integers(min_value=1, max_value=120))
    order = draw(st.permutations(range(size)))
    clusters, position = [], 0
    while position < size and draw(st.booleans()):
        length = draw(st.integers(min_value=2, max_value=max(2, size // 3)))
        cluster = list(order[position : position + length])
        if len(cluster) >= 2:
            clusters.append(cluster)
        position += length
    return size, clusters


def where_each(splits: dict[str, list[int]]) -> dict[int, str]:
    return {index: name for name, indices in splits.items() for index in indices}


@settings(max_examples=150, deadline=None)
@given(cluster_structures(), st.integers(min_value=0, max_value=2**32), st.sampled_from([None, "category"]))
def test_no_cluster_straddles_two_splits_and_every_record_is_placed_once(structure, seed, stratify):
    size, clusters = structure
    records = records_of(size, categories=3)
    splits = split_records(records, FRACTIONS, clusters, seed, stratify=stratify)
    placed = [index for indices in splits.values() for index in indices]
    assert sorted(placed) == list(range(size))
    home = where_each(splits)
    for cluster in clusters:
        assert len({home[index] for index in cluster}) == 1


@settings(max_examples=50, deadline=None)
@given(cluster_structures(), st.integers(min_value=0, max_value=2**32))
def test_same_seed_gives_the_same_split(structure, seed):
    size, clusters = structure
    records = records_of(size, categories=2)
    first = split_records(records, FRACTIONS, clusters, seed, stratify="category")
    assert split_records(records, FRACTIONS, [list(c) for c in clusters], seed, stratify="category") == first


def test_different_seeds_usually_give_different_splits():
    records = records_of(200)
    clusters = [[0, 1, 2], [10, 11], [50, 60, 70, 80]]
    splits = [split_records(records, FRACTIONS, clusters, seed) for seed in range(20)]
    distinct = {tuple(split["test"]) for split in splits}
    assert len(distinct) >= 19


def test_sizes_match_the_targets_exactly_without_clusters():
    splits = split_records(records_of(1001), FRACTIONS, [], seed=3)
    assert {name: len(indices) for name, indices in splits.items()} == apportion(1001, FRACTIONS)
    assert apportion(1001, FRACTIONS) == {"train": 801, "validation": 100, "test": 100}


def test_a_large_cluster_goes_whole_to_train_and_the_overshoot_is_reported():
    records = records_of(100)
    big = list(range(0, 85))
    splits = split_records(records, FRACTIONS, [big], seed=0)
    assert set(big) <= set(splits["train"])
    summary = split_summary(records, splits, FRACTIONS)
    assert summary["splits"]["train"]["count"] == 85
    assert summary["splits"]["train"]["off_by"] == 5
    assert any("train has 85 records, 5 more than its target 80" in warning for warning in summary["warnings"])


def test_small_splits_are_not_left_the_singletons():
    # 600 prompts with two pairs each (clusters of 2), then 300 records without a near-duplicate: a validation split
    # should hold both kinds in about their share, not only the records dealt last
    records = records_of(1500)
    clusters = [[2 * n, 2 * n + 1] for n in range(600)]
    splits = split_records(records, {"train": 0.95, "validation": 0.05}, clusters, seed=42)
    singletons = sum(index >= 1200 for index in splits["validation"])
    assert len(splits["validation"]) == 75 and 5 <= singletons <= 30  # 20% of the records: 15 expected


def test_overlapping_clusters_are_merged():
    splits = split_records(records_of(50), FRACTIONS, [[1, 2], [2, 3], [3, 40]], seed=5)
    home = where_each(splits)
    assert len({home[index] for index in (1, 2, 3, 40)}) == 1


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(min_value=20, max_value=400), min_size=1, max_size=6),
    st.integers(min_value=0, max_value=1000),
)
def test_stratified_split_keeps_each_stratum_share(stratum_sizes, seed):
    records = [{"category": f"c{number}"} for number, size in enumerate(stratum_sizes) for _ in range(size)]
    rng = random.Random(seed)
    singles = rng.sample(range(len(records)), len(records) // 4)
    clusters = [singles[i : i + 2] for i in range(0, len(singles) - 1, 2)]
    clusters = [c for c in clusters if records[c[0]]["category"] == records[c[1]]["category"]]
    splits = split_records(records, FRACTIONS, clusters, seed, stratify="category")
    summary = split_summary(records, splits, FRACTIONS, stratify="category")
    for stratum in summary["strata"].values():
        for name, share in stratum["splits"].items():
            # within one record (rounding) plus one pair (a cluster may overshoot by its size)
            assert abs(share["count"] - stratum["count"] * FRACTIONS[name]) <= 3
    for name, split in summary["splits"].items():
        assert abs(split["fraction"] - FRACTIONS[name]) <= 0.01 + 3 * len(stratum_sizes) / len(records)


def test_many_small_strata_do_not_starve_a_small_split():
    # 40 strata of 5: each stratum's exact test share is 0.5; rounding each the same way would give 0 or 40 overall
    records = [{"category": f"c{index // 5}"} for index in range(200)]
    splits = split_records(records, FRACTIONS, [], seed=1, stratify="category")
    assert {name: len(indices) for name, indices in splits.items()} == {"train": 160, "validation": 20, "test": 20}


def test_a_zero_fraction_split_stays_empty():
    splits = split_records(records_of(30), {"train": 0.9, "validation": 0.0, "test": 0.1}, [[0, 1, 2, 3]], seed=2)
    assert splits["validation"] == []
    assert len(splits["train"]) + len(splits["test"]) == 30


def test_stratum_summary_counts_per_split():
    records = records_of(100, categories=2)
    splits = split_records(records, {"train": 0.5, "test": 0.5}, [], seed=0, stratify="category")
    summary = split_summary(records, splits, {"train": 0.5, "test": 0.5}, stratify="category")
    assert summary["strata"]["c0"] == {
        "count": 50,
        "splits": {"train": {"count": 25, "fraction": 0.5}, "test": {"count": 25, "fraction": 0.5}},
    }
    assert summary["warnings"] == []


def test_records_without_the_field_form_their_own_stratum():
    records = [{"category": "a"}] * 10 + [{}] * 10
    splits = split_records(records, {"train": 0.5, "test": 0.5}, [], seed=0, stratify="category")
    summary = split_summary(records, splits, {"train": 0.5, "test": 0.5}, stratify="category")
    assert summary["strata"]["(missing)"]["splits"]["test"]["count"] == 5


@pytest.mark.parametrize(
    ("fractions", "message"),
    [
        ({"train": 0.8, "test": 0.1}, r"the fractions sum to 0\.9 \(0\.8 \+ 0\.1\), not 1"),
        ({"train": 1.2, "test": -0.2}, "train: expected a number from 0 to 1"),
        ({}, "no splits given"),
    ],
)
def test_bad_fractions_are_refused(fractions, message):
    with pytest.raises(DataError, match=message):
        split_records(records_of(10), fractions, [], seed=0)


def test_fractions_within_tolerance_are_accepted():
    splits = split_records(records_of(10), {"train": 0.7000001, "test": 0.3}, [], seed=0)
    assert sum(len(indices) for indices in splits.values()) == 10


def test_bad_cluster_index_and_unknown_stratify_field_name_the_fix():
    with pytest.raises(DataError, match="duplicate cluster 1: 10 is not a record index"):
        split_records(records_of(10), FRACTIONS, [[0, 1], [2, 10]], seed=0)
    with pytest.raises(DataError, match="no record has this field"):
        split_records(records_of(10), FRACTIONS, [], seed=0, stratify="topic")
