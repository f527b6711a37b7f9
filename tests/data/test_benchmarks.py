"""Benchmark readers: the real public files in their upstream layouts, and the errors for files in no known layout."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from helpers import shared_data
from tunelab.data.benchmarks import BenchmarkItem, read_benchmark, subject_of
from tunelab.errors import DataError


def by_subject(items: list[BenchmarkItem], subject: str) -> list[BenchmarkItem]:
    return [item for item in items if item.subject == subject]


def test_mmlu_dev_has_five_items_for_each_of_57_subjects():
    items = read_benchmark(shared_data("mmlu", "data", "dev"))
    assert len(items) == 285
    assert len({item.subject for item in items}) == 57
    assert all(len(by_subject(items, s)) == 5 for s in {item.subject for item in items})
    assert {item.source for item in items} == {"mmlu"}
    hyoid = by_subject(items, "anatomy")[0]
    assert hyoid.question == "What is the embryological origin of the hyoid bone?"
    assert hyoid.choices[3] == "The second and third pharyngeal arches"
    assert (hyoid.labels, hyoid.answer) == (["A", "B", "C", "D"], "D")
    field = by_subject(items, "abstract_algebra")[0]
    assert (field.choices, field.answer) == (["0", "1", "2", "3"], "B")
    assert len({item.id for item in items}) == 285


def test_mmlu_cell_with_a_next_line_character_stays_one_row():
    # management_test.csv has "create\x85..." inside a cell; str.splitlines would break the row there.
    items = read_benchmark(shared_data("mmlu", "data", "test", "management_test.csv"))
    assert len(items) == 103
    assert items[39].question == "Functional structures help to create\x85..."
    assert items[39].answer == "B"


def test_mmlu_test_split_reads_all_14042_items():
    items = read_benchmark(shared_data("mmlu", "data", "test"))
    assert len(items) == 14042
    assert {item.answer for item in items} == {"A", "B", "C", "D"}


def test_cmmlu_dev_header_layout():
    items = read_benchmark(shared_data("cmmlu", "data", "dev"))
    assert len(items) == 335
    assert len({item.subject for item in items}) == 67
    beef = by_subject(items, "agronomy")[0]
    assert beef.question == "肉牛屠宰后，胴体的哪个部位肉质较好"
    assert (beef.choices, beef.answer, beef.source) == (["胸", "腹", "大腿", "小腿"], "C", "cmmlu")
    assert beef.id == "dev/agronomy:2"  # CSV row 2: the header is row 1


def test_ceval_dev_header_layout_ignores_the_explanation_column():
    items = read_benchmark(shared_data("ceval", "data", "dev"))
    assert len(items) == 260
    assert len({item.subject for item in items}) == 52
    budget = by_subject(items, "accountant")[0]
    assert budget.question.endswith("此时甲公司应要求乙公司编制____。")
    assert budget.choices == ["增量预算", "零基预算", "固定预算", "弹性预算"]
    assert (budget.answer, budget.source) == ("B", "ceval")


def test_arc_easy_dev_keeps_numeric_labels_and_odd_choice_counts():
    items = read_benchmark(shared_data("arc", "arc_easy", "ARC-Easy-Dev.jsonl"))
    assert len(items) == 570
    first = items[0]
    assert (first.id, first.subject, first.source) == ("MCAS_2000_4_6", "ARC-Easy", "arc")
    assert first.question == "Which technology was developed most recently?"
    assert (first.choices[0], first.answer) == ("cellular telephone", "A")
    numeric = next(item for item in items if item.id == "NYSEDREGENTS_2014_8_10")
    assert (numeric.labels, numeric.answer) == (["1", "2", "3", "4"], "1")
    assert len(next(item for item in items if item.id == "TIMSS_1995_8_J5").choices) == 5
    assert all(item.answer in item.labels for item in items)


def test_gsm8k_answer_is_the_number_after_the_four_hashes():
    items = read_benchmark(shared_data("gsm8k", "test.jsonl"))
    assert len(items) == 1319
    assert items[0].question.startswith("Janet’s ducks lay 16 eggs per day.")
    assert (items[0].answer, items[0].choices, items[0].subject, items[0].source) == ("18", [], "gsm8k", "gsm8k")
    assert items[-1].answer == "14"
    assert all(re.fullmatch(r"-?\d+(\.\d+)?", item.answer) for item in items)


def test_truthfulqa_mc1_marks_one_correct_choice():
    items = read_benchmark(shared_data("truthfulqa", "mc_task.json"))
    assert len(items) == 817
    assert all(item.answer in item.labels and len(item.choices) == len(item.labels) for item in items)


def test_folder_skips_json_that_is_not_a_benchmark(tmp_path):
    shutil.copy(shared_data("mmlu", "data", "dev", "anatomy_dev.csv"), tmp_path / "anatomy_dev.csv")
    shutil.copy(shared_data("mmlu", "mapping.json"), tmp_path / "mapping.json")
    items = read_benchmark(tmp_path)
    assert len(items) == 5 and {item.subject for item in items} == {"anatomy"}


def test_generic_jsonl_accepts_label_index_or_choice_text(tmp_path):
    rows = [
        {"question": "2 + 2?", "choices": ["3", "4"], "answer": "B"},
        {"question": "Sky colour?", "choices": ["blue", "green"], "answer": 0},
        {"id": "q3", "question": "Capital of France?", "choices": ["Lyon", "Paris"], "answer": "Paris"},
    ]
    path = tmp_path / "quiz_test.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    items = read_benchmark(path)
    assert [item.answer for item in items] == ["B", "A", "B"]
    assert [item.id for item in items] == [f"{tmp_path.name}/quiz_test:1", f"{tmp_path.name}/quiz_test:2", "q3"]
    assert {item.subject for item in items} == {"quiz"}


def test_csv_in_a_wrong_layout_names_the_file_and_the_expected_layouts(tmp_path):
    path = tmp_path / "orders.csv"
    path.write_text("order,customer,total\n1,Ann,3.50\n", encoding="utf-8")
    with pytest.raises(DataError) as error:
        read_benchmark(path)
    assert error.value.where == "orders.csv"
    assert "MMLU" in error.value.fix and "CMMLU" in error.value.fix and "C-Eval" in error.value.fix


def test_wrong_csv_inside_a_folder_is_an_error_not_skipped(tmp_path):
    shutil.copy(shared_data("mmlu", "data", "dev", "anatomy_dev.csv"), tmp_path / "anatomy_dev.csv")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "notes.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"sub/notes\.csv"):
        read_benchmark(tmp_path)


def test_bad_answer_letter_names_the_row(tmp_path):
    path = tmp_path / "anatomy_test.csv"
    path.write_text("Q1?,a,b,c,d,A\nQ2?,a,b,c,d,E\n", encoding="utf-8")
    with pytest.raises(DataError) as error:
        read_benchmark(path)
    assert error.value.where == "anatomy_test.csv row 2"
    assert "'E'" in error.value.problem


def test_ceval_test_split_without_answers_says_to_use_dev_or_val(tmp_path):
    path = tmp_path / "law_test.csv"
    path.write_text("id,question,A,B,C,D,answer\n0,问题,甲,乙,丙,丁,\n", encoding="utf-8")
    with pytest.raises(DataError, match="withholds its answers"):
        read_benchmark(path)


def test_folder_without_benchmark_files_is_an_error(tmp_path):
    (tmp_path / "mapping.json").write_text(json.dumps({"anatomy": {"name": "Anatomy"}}), encoding="utf-8")
    (tmp_path / "readme.txt").write_text("nothing here", encoding="utf-8")
    with pytest.raises(DataError) as error:
        read_benchmark(tmp_path)
    assert error.value.where == str(tmp_path)
    assert "no benchmark file" in error.value.problem and "MMLU" in error.value.fix


def test_json_file_in_an_unknown_shape_is_an_error(tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="not a recognised benchmark layout"):
        read_benchmark(path)


@pytest.mark.parametrize(
    ("name", "subject"),
    [("anatomy_test.csv", "anatomy"), ("high_school_physics_val.csv", "high_school_physics"),
     ("agronomy.csv", "agronomy"), ("ARC-Easy-Dev.jsonl", "ARC-Easy"), ("gsm8k/test.jsonl", "gsm8k")],
)  # fmt: skip
def test_subject_comes_from_the_file_name(name, subject):
    assert subject_of(Path(name)) == subject
