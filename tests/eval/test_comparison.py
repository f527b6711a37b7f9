"""Base vs tuned on the held-out set: paired-bootstrap intervals per metric, verdicts, comparison.json."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from tunelab.eval.bootstrap import BETTER, INCONCLUSIVE, WORSE, direction
from tunelab.eval.comparison import (
    compare_metric,
    compare_predictions,
    describe,
    load_comparison,
    write_comparison,
)
from tunelab.eval.metrics import aggregate, score_records

METRICS = ["json_validity", "field_accuracy", "exact_match", "rouge_l", "bleu"]


def prediction_rows(label: str, predictions: list[str], references: list[str], categories=None) -> list[dict]:
    scores = score_records(predictions, references, METRICS)
    categories = categories or [None] * len(predictions)
    return [
        {"id": f"r{n}", "label": label, "category": c, "prediction": p, "reference": r, "scores": s,
         "finish_reason": "stop"}
        for n, (p, r, s, c) in enumerate(zip(predictions, references, scores, categories, strict=True))
    ]  # fmt: skip


def shares(base: list[float], tuned: list[float], name="exact_match") -> list[tuple[dict, dict]]:
    return [({name: b}, {name: t}) for b, t in zip(base, tuned, strict=True)]


def test_a_clear_gain_is_better_a_clear_loss_worse_a_small_change_inconclusive():
    gain = compare_metric(shares([0.0] * 50, [1.0] * 30 + [0.0] * 20), "exact_match")
    assert gain["difference"] == pytest.approx(0.6) and gain["ci95"][0] > 0.4 and gain["verdict"] == BETTER
    loss = compare_metric(shares([1.0] * 50, [1.0] * 30 + [0.0] * 20), "exact_match")
    assert loss["difference"] == pytest.approx(-0.4) and loss["ci95"][1] < 0 and loss["verdict"] == WORSE
    small = compare_metric(shares([1.0, 0.0, 1.0, 0.0] * 12 + [0.0], [0.0, 1.0, 1.0, 0.0] * 12 + [1.0]), "exact_match")
    assert small["ci95"][0] < 0 < small["ci95"][1] and small["verdict"] == INCONCLUSIVE


def test_fewer_than_ten_records_never_get_a_direction():
    nine = compare_metric(shares([0.0] * 9, [1.0] * 9), "exact_match")
    assert nine["ci95"] == [1.0, 1.0] and nine["verdict"] == INCONCLUSIVE  # a bootstrap of 9 is far too sure
    assert compare_metric(shares([0.0] * 10, [1.0] * 10), "exact_match")["verdict"] == BETTER
    assert direction(float("nan"), 0.1, 100) == INCONCLUSIVE


def test_the_interval_matches_the_normal_approximation_for_a_share():
    rng = random.Random(3)
    base = [float(rng.random() < 0.5) for _ in range(400)]
    tuned = [b if rng.random() < 0.8 else 1.0 - b for b in base]
    result = compare_metric(shares(base, tuned), "exact_match")
    differences = np.array(tuned) - np.array(base)
    half = 1.96 * differences.std(ddof=1) / math.sqrt(len(differences))
    assert result["difference"] == pytest.approx(differences.mean())
    assert (result["ci95"][1] - result["ci95"][0]) / 2 == pytest.approx(half, rel=0.12)


def test_field_accuracy_is_resampled_as_a_ratio_of_sums():
    refs = ['{"a": 1, "b": 2, "c": 3, "d": 4}', '{"a": 1}', "plain text"] * 10
    base_preds = ['{"a": 1}', '{"a": 0}', "x"] * 10
    tuned_preds = ['{"a": 1, "b": 2, "c": 3, "d": 4}', '{"a": 0}', "x"] * 10
    base, tuned = prediction_rows("base", base_preds, refs), prediction_rows("tuned", tuned_preds, refs)
    result = compare_predictions(base, tuned)["metrics"]["field_accuracy"]
    assert result["count"] == 20  # plain-text references have no fields
    assert result["base"] == pytest.approx(aggregate([r["scores"] for r in base])["field_accuracy"])  # 10/50
    assert result["tuned"] == pytest.approx(40 / 50)  # a mean of per-record shares would be 0.5
    assert result["verdict"] == BETTER and result["ci95"][0] <= result["difference"] <= result["ci95"][1]


def test_bleu_and_rouge_match_the_set_level_aggregate():
    refs = [f"the order {n} goes to Berlin by express" for n in range(30)]
    base_preds = [f"order {n} Berlin" for n in range(30)]
    tuned_preds = [f"the order {n} goes to Berlin" if n % 3 else "nothing" for n in range(30)]
    base, tuned = prediction_rows("base", base_preds, refs), prediction_rows("tuned", tuned_preds, refs)
    result = compare_predictions(base, tuned)["metrics"]
    for name in ("bleu", "rouge_l"):
        assert result[name]["base"] == pytest.approx(aggregate([r["scores"] for r in base])[name], abs=1e-6)
        assert result[name]["tuned"] == pytest.approx(aggregate([r["scores"] for r in tuned])[name], abs=1e-6)
        low, high = result[name]["ci95"]
        assert low <= result[name]["difference"] <= high and high - low > 0


def test_records_are_paired_by_id_and_categories_get_their_own_intervals():
    refs = ['{"a": 1}'] * 40
    categories = ["orders"] * 34 + ["rare"] * 6
    base = prediction_rows("base", ["no"] * 40, refs, categories)
    tuned = prediction_rows("tuned", ['{"a": 1}'] * 40, refs, categories)
    tuned = list(reversed(tuned)) + [{**tuned[0], "id": "only-tuned"}]
    result = compare_predictions(base, tuned)
    assert result["count"] == 40 and result["unpaired"] == {"base": 0, "tuned": 1}
    assert result["metrics"]["exact_match"]["difference"] == pytest.approx(1.0)
    assert result["by_category"]["orders"]["count"] == 34
    assert result["by_category"]["orders"]["metrics"]["exact_match"]["verdict"] == BETTER
    assert result["by_category"]["rare"]["metrics"]["exact_match"]["verdict"] == INCONCLUSIVE  # 6 records


def test_only_metrics_scored_on_both_sides_are_compared():
    base = [{"id": "1", "scores": {"exact_match": 1.0, "rouge_l": 0.5}}]
    tuned = [{"id": "1", "scores": {"exact_match": 0.0}}]
    assert set(compare_predictions(base, tuned)["metrics"]) == {"exact_match"}


def test_a_reward_is_compared_in_its_own_units():
    rng = random.Random(3)
    base = [{"id": str(n), "scores": {"reward": 1.0 + rng.random() * 0.5}} for n in range(60)]
    tuned = [{"id": row["id"], "scores": {"reward": row["scores"]["reward"] + 0.2}} for row in base]
    compared = compare_predictions(base, tuned)["metrics"]["reward"]
    assert compared["difference"] == pytest.approx(0.2) and compared["verdict"] == BETTER
    assert compared["ci95"] == pytest.approx([0.2, 0.2])  # the same gain on every record
    line = describe({"count": 60, "metrics": {"reward": compared}})
    assert "reward +0.200 (95% CI +0.200 to +0.200) better" in line and "pts" not in line
    assert aggregate([row["scores"] for row in base])["reward"] == pytest.approx(
        sum(row["scores"]["reward"] for row in base) / 60
    )


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_comparison_json_is_written_reused_and_recomputed_when_predictions_change(tmp_path):
    refs = ["Paris"] * 20
    _write(tmp_path / "predictions_base.jsonl", prediction_rows("base", ["Rome"] * 20, refs))
    _write(tmp_path / "predictions_tuned.jsonl", prediction_rows("tuned", ["Paris"] * 20, refs))
    written = write_comparison(tmp_path)
    saved = json.loads((tmp_path / "comparison.json").read_text())
    assert saved["metrics"]["exact_match"]["verdict"] == BETTER and saved == written
    assert "exact_match +100.0 pts (95% CI +100.0 to +100.0) better" in describe(saved)
    marker = {**saved, "marker": True}
    (tmp_path / "comparison.json").write_text(json.dumps(marker))
    assert load_comparison(tmp_path)["marker"]  # up to date: read, not recomputed
    _write(tmp_path / "predictions_tuned.jsonl", prediction_rows("tuned", ["Rome"] * 20, refs))
    fresh = load_comparison(tmp_path)
    assert "marker" not in fresh and fresh["metrics"]["exact_match"]["difference"] == 0.0
    assert json.loads((tmp_path / "comparison.json").read_text()) == fresh


def test_no_comparison_without_both_prediction_files(tmp_path):
    _write(tmp_path / "predictions_tuned.jsonl", prediction_rows("tuned", ["a"], ["a"]))
    assert write_comparison(tmp_path) is None and load_comparison(tmp_path) is None
    assert not (tmp_path / "comparison.json").exists()
