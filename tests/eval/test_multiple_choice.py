"""Multiple-choice scoring: the cached, batched scorer equals a plain forward pass per choice; prompts follow the
harness's layouts; benchmark folders in the layouts of ../shared/data load per task."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from helpers import shared_data
from tunelab.data.benchmarks import BenchmarkItem
from tunelab.errors import DataError
from tunelab.eval.bench import run_benchmark, summarize
from tunelab.eval.multiple_choice import accuracy_with_stderr, build_prompts, score_prompts
from tunelab.eval.tasks import TASKS, LoadedTask, check_task, load_task


@pytest.fixture(scope="module")
def random_model(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.manual_seed(0)
    for parameter in model.parameters():  # sharp random weights make every log-likelihood distinct
        torch.nn.init.normal_(parameter, std=0.2)
    return model.eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def items(count: int = 12) -> list[BenchmarkItem]:
    return [
        BenchmarkItem(f"q{i}", "math" if i % 2 else "geo", f"What is {i} plus {3 * i}?" + " long" * (i % 5),
                      [str(i), str(4 * i), "seven", f"red {i}" * (1 + i % 3)], list("ABCD"), "B", "test")
        for i in range(count)
    ]  # fmt: skip


def reference_scores(model, tokenizer, prompt) -> list[float]:
    """Log-likelihood of each continuation from one plain forward pass over context + continuation."""
    context = prompt.prefix + prompt.question
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    scores = []
    for continuation in prompt.continuations:
        whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([whole])).logits[0].float(), -1)
        scores.append(sum(logprobs[i - 1, whole[i]].item() for i in range(len(context_ids), len(whole))))
    return scores


@pytest.mark.parametrize(("scoring", "shots"), [("letters", 0), ("letters", 2), ("text", 0), ("text", 3)])
def test_cached_batched_scores_equal_a_plain_forward_pass(random_model, scoring, shots, monkeypatch):
    import tunelab.eval.multiple_choice as mc

    monkeypatch.setattr(mc, "TOKENS_PER_BATCH", 200)  # several batches, so batching and padding are exercised
    model, tokenizer = random_model
    prompts = build_prompts(LoadedTask("t", "en", items(), {}), shots, scoring)
    got = score_prompts(model, tokenizer, prompts)
    for prompt, scores in zip(prompts, got, strict=True):
        assert scores == pytest.approx(reference_scores(model, tokenizer, prompt), abs=1e-4)


def test_letter_prompt_is_the_harness_mmlu_layout():
    pool = {"geo": [BenchmarkItem("d", "geo", "Dev question?", ["a", "b", "c", "d"], list("ABCD"), "C", "mmlu")]}
    task = LoadedTask("mmlu", "en", items(1), pool, names={"geo": "world geography"})
    (prompt,) = build_prompts(task, shots=1)
    assert prompt.prefix == (
        "The following are multiple choice questions (with answers) about world geography.\n\n"
        "Dev question?\nA. a\nB. b\nC. c\nD. d\nAnswer: C\n\n"
    )
    assert prompt.question == "What is 0 plus 0?\nA. 0\nB. 0\nC. seven\nD. red 0\nAnswer:"
    assert prompt.continuations == [" A", " B", " C", " D"] and prompt.gold == 1


def test_text_prompt_is_the_harness_arc_layout_and_chinese_gets_chinese_cues():
    chinese = BenchmarkItem("z", "zh", "中国的首都是哪里？", ["上海", "北京"], ["A", "B"], "B", "x")
    task = LoadedTask("probe", "auto", [*items(3), chinese], {})
    prompts = build_prompts(task, shots=1, scoring="text")  # the shot is the subject's other item
    assert prompts[0].prefix == "Question: What is 2 plus 6? long long\nAnswer: 8\n\n" and prompts[0].gold == 1
    assert prompts[0].continuations == [" 0", " 0", " seven", " red 0"]
    assert (
        prompts[3].prefix == ""
        and prompts[3].question == "问题：中国的首都是哪里？\n答案："
        and prompts[3].continuations == [" 上海", " 北京"]
    )


def test_run_benchmark_reports_subjects_categories_and_items(random_model, tmp_path):
    model, tokenizer = random_model
    task = LoadedTask("t", "en", items(), {}, categories={"geo": "Social", "math": "STEM"})
    report, rows = run_benchmark(model, tokenizer, task, shots=1, scoring="letters", out_dir=tmp_path)
    assert report["overall"]["count"] == 12 and set(report["by_category"]) == {"Social", "STEM"}
    assert set(report["by_subject"]) == {"geo", "math"}
    saved = [json.loads(line) for line in (tmp_path / "items.jsonl").read_text().splitlines()]
    assert saved == json.loads(json.dumps(rows)) and all(r["gold"] == "B" for r in saved)
    assert json.loads((tmp_path / "report.json").read_text())["overall"] == report["overall"]
    assert model.training is False


def test_accuracy_and_standard_error():
    result = accuracy_with_stderr([True, True, False, False])
    assert result["accuracy"] == 0.5 and result["stderr"] == pytest.approx((0.25 / 3) ** 0.5)
    rows = [{"subject": "s", "category": "c", "correct": c, "correct_norm": True} for c in (True, False, True)]
    report = summarize(rows, LoadedTask("t", "en", [], {}), 0, "text", 1.0)
    assert report["overall"]["accuracy"] == pytest.approx(2 / 3) and report["overall"]["accuracy_norm"] == 1.0


def test_the_built_in_probe_loads_with_balanced_letters():
    task = load_task("probe")
    assert len(task.items) == 360 and task.scoring == "text"
    subjects = {item.subject for item in task.items}
    assert subjects == {"knowledge", "arithmetic", "common_sense", "instruction_following", "chinese"}
    for subject in subjects:
        answers = [item.answer for item in task.items if item.subject == subject]
        assert all(0.2 <= answers.count(letter) / len(answers) <= 0.3 for letter in "ABCD")
    assert len(load_task("probe", limit=3).items) == 15


def test_the_probe_arithmetic_file_is_what_its_generator_writes(tmp_path):
    import shutil
    import subprocess
    import sys

    from tunelab.eval.tasks import PROBE_DIR

    shutil.copy(PROBE_DIR / "make_arithmetic.py", tmp_path)
    subprocess.run([sys.executable, str(tmp_path / "make_arithmetic.py")], check=True)
    assert (tmp_path / "arithmetic.jsonl").read_bytes() == (PROBE_DIR / "arithmetic.jsonl").read_bytes()


@pytest.mark.parametrize(
    ("task", "folder", "count", "subject", "shots_pool"),
    [
        ("mmlu", "mmlu", 57 * 2, "abstract_algebra", 5),
        ("cmmlu", "cmmlu", 67 * 2, "agronomy", 5),
        ("ceval", "ceval", 52 * 2, "accountant", 5),
        ("arc_easy", "arc", 2, "ARC-Easy", 2251),
        ("arc_challenge", "arc", 2, "ARC-Challenge", 1119),
    ],
)
def test_tasks_read_the_upstream_layouts(task, folder, count, subject, shots_pool):
    loaded = load_task(task, str(shared_data(folder)), limit=2)
    assert len(loaded.items) == count
    assert {item.subject for item in loaded.items} >= {subject}
    assert len(loaded.fewshot[subject]) == shots_pool
    assert loaded.scoring == TASKS[task].scoring
    if task in ("mmlu", "cmmlu", "ceval"):
        assert loaded.category(subject) in {"STEM", "Humanities", "Social Sciences", "Other"}
    prompts = build_prompts(loaded, shots=5, scoring=loaded.scoring)
    assert prompts[0].prefix.count("\n\n") >= 5


def test_cmmlu_prompts_are_in_chinese_with_the_subject_name_from_the_mapping():
    loaded = load_task("cmmlu", str(shared_data("cmmlu")), limit=1)
    prompt = next(p for p in build_prompts(loaded, shots=1) if p.item.subject == "agronomy")
    assert prompt.prefix.startswith("以下是关于农学的单项选择题") and prompt.question.endswith("\n答案：")


def test_task_problems_are_clear(tmp_path):
    assert check_task("mmlu", None).startswith("task mmlu needs its benchmark folder")
    assert "not found" in check_task("mmlu", str(tmp_path / "nope"))
    assert "unknown task 'mmlx'" in check_task("mmlx", None)
    assert check_task("probe", None) is None
    with pytest.raises(DataError, match="no test files of mmlu found"):
        load_task("mmlu", str(tmp_path))
    wrong = tmp_path / "data" / "test"
    wrong.mkdir(parents=True)
    (wrong / "x_test.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="not a recognised benchmark CSV layout"):
        load_task("mmlu", str(tmp_path))


def test_a_benchmark_file_is_a_task(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps({"question": f"q{i}", "choices": ["x", "y"], "answer": i % 2}) + "\n"
                            for i in range(4)))  # fmt: skip
    loaded = load_task(str(path))
    assert len(loaded.items) == 4 and loaded.scoring == "letters" and loaded.name == "mine.jsonl"
