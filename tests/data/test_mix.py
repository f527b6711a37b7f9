"""Mixing sources at target ratios (mix.py): achieved ratios, up/down-sampling, copy ids, errors."""

from __future__ import annotations

from collections import Counter

import pytest

from tunelab.data.mix import format_mix_report, mix_sources
from tunelab.errors import DataError


def source(name: str, count: int) -> list[dict]:
    return [{"id": f"{name}-{index}", "messages": [], "source": name} for index in range(count)]


def achieved(mixed: list[dict]) -> dict[str, float]:
    counts = Counter(record["source"] for record in mixed)
    return {name: count / len(mixed) for name, count in counts.items()}


@pytest.mark.parametrize(
    "ratios",
    [{"domain": 0.83, "general": 0.17}, {"a": 0.5, "b": 0.3, "c": 0.2}, {"a": 0.61, "b": 0.27, "c": 0.12}],
)
@pytest.mark.parametrize("sizes", [(7000, 3000, 2500), (200, 9000, 900)])
def test_achieved_ratios_within_one_point_on_10k_records(ratios, sizes):
    sources = [
        (name, source(name, size), ratio)
        for (name, ratio), size in zip(ratios.items(), sizes[: len(ratios)], strict=True)
    ]
    mixed, report = mix_sources(sources, seed=7, total=10_000)
    assert len(mixed) == 10_000
    for name, ratio in ratios.items():
        assert abs(achieved(mixed)[name] - ratio) <= 0.01
    for row in report["sources"]:
        assert abs(row["achieved_ratio"] - row["target_ratio"]) <= 1 / 10_000
        assert row["taken"] == row["available"] + row["upsampled"] - row["downsampled"]
    assert len({record["id"] for record in mixed}) == len(mixed)


def test_default_total_uses_every_record_of_the_scarcest_source_and_repeats_none():
    sources = [("domain", source("domain", 8300), 0.83), ("general", source("general", 5000), 0.17)]
    mixed, report = mix_sources(sources, seed=1)
    domain, general = report["sources"]
    assert report["total"] == 10_000
    assert (domain["taken"], domain["downsampled"], domain["upsampled"]) == (8300, 0, 0)
    assert (general["taken"], general["downsampled"]) == (1700, 3300)
    assert not any("#" in record["id"] for record in mixed)
    assert abs(achieved(mixed)["general"] - 0.17) <= 0.01


def test_upsampling_uses_whole_passes_before_a_partial_one():
    mixed, report = mix_sources([("small", source("small", 10), 0.5), ("big", source("big", 100), 0.5)], 3, total=200)
    small_ids = Counter(record["id"].split("#")[0] for record in mixed if record["source"] == "small")
    assert sorted(small_ids.values()) == [10] * 10  # 100 taken = exactly 10 passes
    mixed, _ = mix_sources([("small", source("small", 10), 0.5), ("big", source("big", 100), 0.5)], 3, total=230)
    small_ids = Counter(record["id"].split("#")[0] for record in mixed if record["source"] == "small")
    assert sorted(set(small_ids.values())) == [11, 12]  # 115 = 11 passes + 5: no record three passes ahead
    assert report["sources"][0]["upsampled"] == 90


def test_repeated_copies_get_numbered_ids():
    mixed, _ = mix_sources([("one", [{"id": "x", "source": "one"}], 1.0)], seed=0, total=3)
    assert sorted(record["id"] for record in mixed) == ["x", "x#2", "x#3"]


def test_same_seed_same_mix_different_seed_different_mix():
    sources = [("a", source("a", 500), 0.7), ("b", source("b", 500), 0.3)]
    first, _ = mix_sources(sources, seed=11)
    again, _ = mix_sources(sources, seed=11)
    other, _ = mix_sources(sources, seed=12)
    assert [r["id"] for r in first] == [r["id"] for r in again]
    assert {r["id"] for r in first} != {r["id"] for r in other}


def test_adding_a_source_does_not_change_what_another_contributes():
    a = source("a", 300)
    alone, _ = mix_sources([("a", a, 0.5), ("b", source("b", 300), 0.5)], seed=4, total=200)
    with_c, _ = mix_sources([("a", a, 0.5), ("b", source("b", 300), 0.3), ("c", source("c", 50), 0.2)], 4, total=200)
    assert {r["id"] for r in alone if r["source"] == "a"} == {r["id"] for r in with_c if r["source"] == "a"}


def test_no_ratios_means_natural_proportions():
    mixed, report = mix_sources([("a", source("a", 30), None), ("b", source("b", 10), None)], seed=0)
    assert len(mixed) == 40
    assert [row["taken"] for row in report["sources"]] == [30, 10]


def test_the_input_records_are_not_modified():
    records = [{"id": "x", "source": "one"}]
    mix_sources([("one", records, 1.0)], seed=0, total=2)
    assert records == [{"id": "x", "source": "one"}]


def test_report_formats_as_a_table():
    _, report = mix_sources([("a", source("a", 10), 0.5), ("b", source("b", 4), 0.5)], seed=0, total=10)
    text = format_mix_report(report)
    assert "a: 5 of 10 (5 left out)" in text
    assert "b: 5 of 4 (+1 repeated)" in text


@pytest.mark.parametrize(
    ("sources", "total", "message"),
    [
        ([("a", [{}], 0.8), ("b", [{}], 0.1)], None, r"the ratios sum to 0\.9 \(a=0\.8 \+ b=0\.1\), not 1"),
        ([("a", [{}], 0.5), ("b", [{}], None)], None, "ratio must be a number from 0 to 1, got None"),
        ([("a", [{}], 0.5), ("a", [{}], 0.5)], None, "source names must be unique"),
        ([("a", [{}], 0.5), ("b", [], 0.5)], None, "source 'b': has no records but a ratio above 0"),
        ([("a", [{}], 1.0)], 0, "total must be a positive whole number"),
        ([], None, "no sources given"),
    ],
)
def test_bad_mixes_are_refused_with_a_fix(sources, total, message):
    with pytest.raises(DataError, match=message) as caught:
        mix_sources(sources, seed=0, total=total)
    assert caught.value.fix


def test_a_zero_ratio_source_may_be_empty():
    mixed, report = mix_sources([("a", source("a", 5), 1.0), ("b", [], 0.0)], seed=0)
    assert len(mixed) == 5
    assert report["sources"][1]["taken"] == 0
