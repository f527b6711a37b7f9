import pytest

from tunelab.errors import TunelabError
from tunelab.eval.metrics import (
    aggregate,
    aggregate_by_category,
    exact_match,
    field_accuracy,
    format_change,
    format_value,
    json_valid,
    parse_json_answer,
    score_records,
    values_equal,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', {"a": 1}),
        ('  \n {"a": 1} \n', {"a": 1}),
        ('```json\n{"a": 1}\n```', {"a": 1}),
        ('```JSON\n{"a": 1}\n```', {"a": 1}),
        ('```\n{"a": 1}\n```', {"a": 1}),
        ('```json {"a": 1}```', {"a": 1}),
        ("  ```json\n[1, 2]\n```  ", [1, 2]),
        ("[1, 2]", [1, 2]),
        ('"text"', "text"),
    ],
)
def test_parse_json_answer_accepts_json_and_one_fenced_block(text, expected):
    assert parse_json_answer(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        '{"a": 1',
        "{'a': 1}",
        '{"a": 1} trailing words',
        'Here it is: {"a": 1}',
        'Sure!\n```json\n{"a": 1}\n```',
        '```json\n{"a": 1}\n```\nHope this helps',
        '{"a": NaN}',
        '{"a": Infinity}',
        '```json\n{"a": 1,}\n```',
    ],
)
def test_parse_json_answer_rejects_non_json_prose_and_constants(text):
    assert parse_json_answer(text) is None


def test_json_valid_requires_an_object():
    assert json_valid('{"a": 1}')
    assert json_valid("```json\n{}\n```")
    assert not json_valid("[1, 2]")
    assert not json_valid("42")
    assert not json_valid("null")
    assert not json_valid("nope")


def test_values_equal_is_type_strict():
    assert values_equal(2, 2)
    assert values_equal(2, 2.0)
    assert not values_equal(2, "2")
    assert not values_equal(True, 1)
    assert not values_equal(0, False)
    assert values_equal(True, True)
    assert not values_equal(None, "null")
    assert values_equal({"a": [1, {"b": "x"}]}, {"a": [1, {"b": "x"}]})
    assert not values_equal({"a": [1, {"b": "x"}]}, {"a": [1, {"b": "y"}]})
    assert not values_equal({"a": 1}, {"a": 1, "b": 2})
    assert not values_equal([1, 2], [1, 2, 3])
    assert not values_equal([1], {"0": 1})


def test_field_accuracy_counts_reference_keys():
    ref = {"customer": "Alice", "quantity": 2, "size": "M"}
    assert field_accuracy({"customer": "Alice", "quantity": 2, "size": "M"}, ref) == (3, 3)
    assert field_accuracy({"customer": "Alice", "quantity": "2", "size": "M"}, ref) == (2, 3)  # wrong type
    assert field_accuracy({"customer": "Alice"}, ref) == (1, 3)  # missing keys are wrong
    assert field_accuracy({"customer": "Alice", "quantity": 2, "size": "M", "extra": 1}, ref) == (3, 3)
    assert field_accuracy({"Customer": "Alice"}, ref) == (0, 3)  # keys are case sensitive
    assert field_accuracy(None, ref) == (0, 3)
    assert field_accuracy(["Alice", 2, "M"], ref) == (0, 3)
    assert field_accuracy({}, {}) == (0, 0)


def test_exact_match_strips_whitespace_only():
    assert exact_match("  Paris\n", "Paris")
    assert not exact_match("paris", "Paris")
    assert not exact_match("Paris.", "Paris")


def test_score_records_per_record_values():
    refs = ['{"a": 1, "b": "x"}', '{"a": 1, "b": "x"}', "Paris", '{"a": 2}']
    preds = ['{"a": 1, "b": "x"}', '```json\n{"a": "1", "b": "x"}\n```', "Paris", "oops"]
    scores = score_records(preds, refs, ["json_validity", "field_accuracy", "exact_match"])
    assert scores[0] == {"json_validity": 1.0, "field_accuracy": {"correct": 2, "total": 2}, "exact_match": 1.0}
    assert scores[1] == {"json_validity": 1.0, "field_accuracy": {"correct": 1, "total": 2}, "exact_match": 0.0}
    assert scores[2] == {"json_validity": 0.0, "field_accuracy": None, "exact_match": 1.0}  # no JSON reference
    assert scores[3] == {"json_validity": 0.0, "field_accuracy": {"correct": 0, "total": 1}, "exact_match": 0.0}


def test_aggregate_uses_micro_average_for_fields():
    refs = ['{"a": 1, "b": 2, "c": 3}', '{"a": 1}', "plain"]
    preds = ['{"a": 1, "b": 2, "c": 3}', '{"a": 0}', "plain"]
    result = aggregate(score_records(preds, refs, ["json_validity", "field_accuracy", "exact_match"]))
    assert result["field_accuracy"] == pytest.approx(3 / 4)  # macro average would be (1 + 0) / 2
    assert result["json_validity"] == pytest.approx(2 / 3)
    assert result["exact_match"] == pytest.approx(2 / 3)


def test_aggregate_only_reports_requested_metrics_and_none_when_nothing_to_measure():
    scores = score_records(["a", "b"], ["a", "c"], ["exact_match", "field_accuracy"])
    assert aggregate(scores) == {"exact_match": 0.5, "field_accuracy": None}
    assert aggregate([]) == {}


def test_unknown_or_missing_metrics_are_user_errors():
    with pytest.raises(TunelabError, match="unknown metric meteor; choose from bleu, exact_match, field_accuracy"):
        score_records(["a"], ["a"], ["meteor"])
    with pytest.raises(TunelabError, match="no metrics requested"):
        score_records(["a"], ["a"], [])


def test_score_records_rejects_misaligned_lists():
    with pytest.raises(ValueError):
        score_records(["a"], ["a", "b"], ["exact_match"])


def test_category_breakdown():
    refs = ['{"a": 1}', '{"a": 1}', "x", "y"]
    preds = ['{"a": 1}', '{"a": 2}', "x", "z"]
    scores = score_records(preds, refs, ["exact_match", "field_accuracy"])
    result = aggregate_by_category(scores, ["orders", "orders", "qa", None])
    assert result == {
        "(none)": {"exact_match": 0.0, "field_accuracy": None, "count": 1},
        "orders": {"exact_match": 0.5, "field_accuracy": 0.5, "count": 2},
        "qa": {"exact_match": 1.0, "field_accuracy": None, "count": 1},
    }
    assert sum(group["count"] for group in result.values()) == len(scores)


def test_no_categories_means_no_breakdown():
    scores = score_records(["a"], ["a"], ["exact_match"])
    assert aggregate_by_category(scores, [None]) == {}


def test_shares_show_in_percent_and_points_a_reward_in_its_own_units():
    assert format_value("exact_match", 0.7) == "70.0%" and format_change("exact_match", 0.7, 0.783) == "+8.3 pts"
    assert format_value("reward", 1.4351) == "1.435" and format_change("reward", 1.435, 1.442) == "+0.007"
    assert format_value("reward", None) == "—" and format_change("reward", None, 1.0) == ""
