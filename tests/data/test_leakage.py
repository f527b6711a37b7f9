"""`data.leakage: refuse | drop | allow`: what a run does with evaluation records that duplicate training ones."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from helpers import QUICKSTART, quickstart_records
from tunelab.config.schema import DataSection
from tunelab.data.audit import audit_sets
from tunelab.data.audit_report import render_markdown
from tunelab.data.pipeline import RecipeData, check_audit, drop_leaked
from tunelab.errors import DataError, RecipeError
from tunelab.recipe import load_recipe


def leaking_data() -> RecipeData:
    train = quickstart_records("train", 40)
    near = dict(train[5], id="near-1")
    near["messages"] = [*near["messages"][:-1], {"role": "assistant", "content": near["messages"][-1]["content"][:-2]}]
    test = quickstart_records("test", 4) + [dict(train[3], id="leak-1"), near]
    validation = quickstart_records("test", 8)[4:] + [dict(train[7], id="leak-2")]
    sets = {"train": train, "validation": validation, "test": test}
    return RecipeData(sets, {"train": "train", "validation": "eval", "test": "eval"}, [])


def audit(data: RecipeData):
    return audit_sets(data.sets, data.roles, data.invalid)


def test_refuse_names_the_choices():
    data = leaking_data()
    with pytest.raises(DataError) as error:
        check_audit(audit(data), DataSection(), len(data.train))
    message = str(error.value)
    assert "3 evaluation records duplicate training records" in message and "leak-1" in message
    assert "data.leakage=drop" in message and "data.leakage=allow" in message


@pytest.mark.parametrize("choice", ["drop", "allow"])
def test_drop_and_allow_are_not_refused(choice):
    data = leaking_data()
    check_audit(audit(data), DataSection(leakage=choice), len(data.train))


def test_drop_leaves_the_leaked_records_out_and_lists_them():
    data, logged = leaking_data(), []
    train_before = list(data.train)
    result = audit(data)
    drop_leaked(data, result, DataSection(leakage="drop"), logged.append)
    assert data.train == train_before
    assert [r["id"] for r in data.sets["test"]] == [r["id"] for r in quickstart_records("test", 4)]
    assert "leak-2" not in {r["id"] for r in data.sets["validation"]} and len(data.sets["validation"]) == 4
    dropped = {(d["set"], d["id"], d["train_id"], d["kind"]) for d in data.dropped_leaked}
    assert dropped == {
        ("test", "leak-1", "train-0004", "exact"),
        ("test", "near-1", "train-0006", "near"),
        ("validation", "leak-2", "train-0008", "exact"),
    }
    assert result.report["summary"]["leaked_records_dropped"] == 3
    assert "3 leaked evaluation records are left out of evaluation" in render_markdown(result.report, {})
    assert logged and "left out 3 leaked evaluation records (validation 1, test 2)" in logged[0]


@pytest.mark.parametrize("choice", ["refuse", "allow"])
def test_other_choices_drop_nothing(choice):
    data = leaking_data()
    sizes = {name: len(rows) for name, rows in data.sets.items()}
    drop_leaked(data, audit(data), DataSection(leakage=choice), lambda line: None)
    assert {name: len(rows) for name, rows in data.sets.items()} == sizes and data.dropped_leaked == []


def test_drop_refuses_to_empty_an_evaluation_set():
    data = leaking_data()
    data.sets["test"] = [dict(r, id=f"copy-{i}") for i, r in enumerate(data.train[:3])]
    before = {name: list(rows) for name, rows in data.sets.items()}
    with pytest.raises(DataError) as error:
        drop_leaked(data, audit(data), DataSection(leakage="drop"), lambda line: None)
    assert "data.test" in str(error.value) and "all 3 records" in str(error.value)
    assert data.sets == before  # nothing changed


def test_allow_leakage_is_the_old_spelling_of_allow():
    assert DataSection(allow_leakage=True).leakage == "allow"
    assert DataSection(allow_leakage=False).leakage == "refuse"
    assert DataSection(leakage="allow", allow_leakage=True).leakage == "allow"
    assert DataSection(leakage="drop", allow_leakage=False).leakage == "drop"


@pytest.mark.parametrize(
    "overrides",
    [["data.leakage=drop", "data.allow_leakage=true"], ["data.leakage=allow", "data.allow_leakage=false"]],
)
def test_contradicting_settings_name_both_keys(overrides):
    with pytest.raises(RecipeError) as error:
        load_recipe(QUICKSTART / "recipe.yaml", overrides)
    message = str(error.value)
    assert "data.allow_leakage" in message and "data.leakage" in message and "remove data.allow_leakage" in message


def test_drop_needs_the_audit():
    with pytest.raises(ValidationError, match="data.audit is false"):
        DataSection(audit=False, leakage="drop")
    assert DataSection(audit=False, leakage="allow").leakage == "allow"
