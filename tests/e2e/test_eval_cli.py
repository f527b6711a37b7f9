"""`tunelab eval`, `bench`, `report` and `compare` through the real CLI on the tiny model, and a run's forgetting
check and report."""

from __future__ import annotations

import json

import pytest

from helpers import cli, quickstart_records, tiny_recipe, write_jsonl


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model_dir):
    """One completed tiny run shared by the tests that only read it."""
    from tunelab.cli import main

    tmp_path = tmp_path_factory.mktemp("run")
    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    assert main(["run", str(recipe), "train.max_steps=4"]) == 0
    return tmp_path / "runs" / "tiny"


def test_run_writes_the_forgetting_check_and_the_report(finished_run):
    forgetting = json.loads((finished_run / "eval" / "forgetting.json").read_text())
    assert forgetting["task"] == "probe" and forgetting["count"] == 20  # 4 items × 5 subjects (the test recipe)
    assert set(forgetting) >= {"base", "tuned", "difference", "ci95", "flagged", "significant", "by_category"}
    for label in ("base", "tuned"):
        assert (finished_run / "eval" / "forgetting" / label / "items.jsonl").is_file()
    metrics = json.loads((finished_run / "eval" / "metrics.json").read_text())
    assert "probe_accuracy" in metrics["base"] and "probe_accuracy" in metrics["tuned"]
    html = (finished_run / "eval" / "report.html").read_text()
    for section in ("Run report: tiny", "Data audit", "Loss", "Held-out test set", "Forgetting check",
                    "data:image/png;base64,"):  # fmt: skip
        assert section in html
    assert "Forgetting check" in (finished_run / "eval" / "report.md").read_text()


def test_eval_a_run_on_its_own_test_set_and_on_another_file(finished_run, tmp_path, capsys):
    result = cli(["eval", finished_run, "--metrics", "exact_match", "rouge_l", "bleu"], capsys)
    assert result.exit_code == 0, result.err
    assert "rouge_l" in result.out and "bleu" in result.out
    metrics = json.loads((finished_run / "eval" / "metrics.json").read_text())
    assert {"rouge_l", "bleu", "probe_accuracy"} <= set(metrics["tuned"]) and "base" in metrics
    other = write_jsonl(tmp_path / "other.jsonl", quickstart_records("test", 3))
    assert cli(["eval", finished_run, "--data", other], capsys).exit_code == 0
    rows = (finished_run / "eval" / "other" / "predictions_tuned.jsonl").read_text().splitlines()
    assert len(rows) == 3 and set(json.loads(rows[0])["scores"]) == {"json_validity", "field_accuracy", "exact_match"}


def test_eval_a_model_with_a_schema_and_categories(tiny_model_dir, tmp_path, capsys, monkeypatch):
    from helpers import QUICKSTART

    monkeypatch.chdir(tmp_path)
    data = write_jsonl(tmp_path / "t.jsonl", quickstart_records("test", 4))
    args = ["eval", tiny_model_dir, "--data", data, "--metrics", "json_schema", "field_accuracy", "--json-schema",
            QUICKSTART / "schema.json", "--max-new-tokens", "8"]  # fmt: skip
    result = cli(args, capsys)
    assert result.exit_code == 0, result.err
    report = json.loads((tmp_path / "eval" / "model" / "report_model.json").read_text())
    assert set(report["metrics"]) == {"json_schema", "field_accuracy"} and set(report["by_category"]) == {"en", "zh"}


def test_eval_bad_input(tiny_model_dir, tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = cli(["eval", tiny_model_dir, "--data", empty, "--out", tmp_path / "o"], capsys)
    assert result.exit_code == 1 and "empty.jsonl: no records" in result.err
    result = cli(["eval", tiny_model_dir, "--out", tmp_path / "o"], capsys)
    assert result.exit_code == 1 and "pass --data" in result.err
    data = write_jsonl(tmp_path / "t.jsonl", quickstart_records("test", 1))
    result = cli(["eval", tiny_model_dir, "--data", data, "--metrics", "json_schema"], capsys)
    assert result.exit_code == 1 and "needs a schema" in result.err
    result = cli(["eval", tiny_model_dir, "--data", data, "--metrics", "meteor"], capsys)
    assert result.exit_code == 1 and "unknown metric meteor" in result.err
    no_answer = write_jsonl(tmp_path / "q.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    result = cli(["eval", tiny_model_dir, "--data", no_answer], capsys)
    assert result.exit_code == 1 and "q.jsonl" in result.err


def test_bench_the_probe_and_a_file(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "b"
    result = cli(["bench", tiny_model_dir, "--task", "probe", "--limit", "2", "--shots", "1", "--out", out], capsys)
    assert result.exit_code == 0, result.err
    assert "probe (1-shot, text)" in result.out and "knowledge" in result.out
    report = json.loads((out / "report.json").read_text())
    assert report["overall"]["count"] == 10 and len((out / "items.jsonl").read_text().splitlines()) == 10
    mine = tmp_path / "mine.jsonl"
    mine.write_text(json.dumps({"question": "2+2?", "choices": ["3", "4"], "answer": "B"}) + "\n")
    result = cli(["bench", tiny_model_dir, "--task", mine, "--out", tmp_path / "m", "--scoring", "text"], capsys)
    assert result.exit_code == 0 and "mine.jsonl (5-shot, text)" in result.out


def test_bench_bad_input(tiny_model_dir, tmp_path, capsys):
    result = cli(["bench", tiny_model_dir, "--task", "mmlu"], capsys)
    assert result.exit_code == 1 and "needs its benchmark folder" in result.err
    result = cli(["bench", tiny_model_dir, "--task", "mmlu", "--data", tmp_path], capsys)
    assert result.exit_code == 1 and "no test files of mmlu" in result.err and "expected the layout" in result.err
    result = cli(["bench", tiny_model_dir, "--task", "nope"], capsys)
    assert result.exit_code == 1 and "unknown task 'nope'" in result.err
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n")
    result = cli(["bench", tiny_model_dir, "--task", bad], capsys)
    assert result.exit_code == 1 and "not a recognised benchmark CSV layout" in result.err


def test_report_and_compare(finished_run, capsys):
    (finished_run / "eval" / "report.html").unlink()
    result = cli(["report", finished_run], capsys)
    assert result.exit_code == 0 and (finished_run / "eval" / "report.html").is_file()
    result = cli(["compare", finished_run, finished_run], capsys)
    assert result.exit_code == 0 and result.out.count("tiny") >= 2 and "forgetting" in result.out
    result = cli(["compare", finished_run.parent], capsys)
    assert result.exit_code == 1 and "not a tunelab run directory" in result.err


def test_recipe_eval_settings_are_validated(tmp_path, tiny_model_dir, capsys):
    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    result = cli(["validate", recipe, "eval.metrics=[json_schema]", "eval.forgetting.task=mmlu"], capsys)
    assert result.exit_code == 2
    assert "eval.metrics: json_schema needs a schema file" in result.err
    assert "eval.forgetting: task mmlu needs its benchmark folder" in result.err
    missing = tmp_path / "missing.json"
    result = cli(["validate", recipe, f"eval.json_schema={missing}", "eval.forgetting.shots=99"], capsys)
    assert result.exit_code == 2 and "eval.json_schema: file not found" in result.err
    assert "eval.forgetting.shots" in result.err  # both problems at once
    broken = tmp_path / "schema.json"
    broken.write_text("{oops")
    result = cli(["validate", recipe, f"eval.json_schema={broken}"], capsys)
    assert result.exit_code == 2 and "eval.json_schema" in result.err and "not valid JSON" in result.err
    assert cli(["validate", recipe, "eval.forgetting=false"], capsys).exit_code == 0


def test_eval_a_model_without_a_chat_template(tiny_model_no_template_dir, tmp_path, capsys):
    data = write_jsonl(tmp_path / "t.jsonl", quickstart_records("test", 2))
    args = ["eval", tiny_model_no_template_dir, "--data", data, "--out", tmp_path / "o", "--max-new-tokens", "4"]
    assert cli(args, capsys).exit_code == 0
    assert len((tmp_path / "o" / "predictions_model.jsonl").read_text().splitlines()) == 2


def test_the_html_report_renders_in_headless_chromium(finished_run, tmp_path):
    """A real browser opens the report; the screenshot is a full page, not a blank or broken one."""
    import shutil
    import subprocess

    from matplotlib.image import imread

    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("chromium is not installed (make setup installs it where it can)")
    shot = tmp_path / "report.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2200", f"--screenshot={shot}"]  # fmt: skip
    page = (finished_run / "eval" / "report.html").resolve().as_uri()
    subprocess.run([browser, *flags, page], check=True, capture_output=True, timeout=120)
    pixels = imread(shot)
    assert pixels.shape[:2] == (2200, 1280)
    colours = {tuple(p) for p in (pixels[::20, ::20, :3] * 255).astype(int).reshape(-1, 3)}
    assert len(colours) > 20  # text, tables and the loss plot, not an empty page


def test_a_damaged_run_directory_is_a_clear_error(finished_run, tmp_path, capsys):
    """Found by fuzzing: a hand-edited or damaged file in a run made `report`, `compare` and `bench` fail with a
    traceback; now the error names the run and the damaged files, and nothing is written."""
    import shutil

    damaged = tmp_path / "damaged"
    shutil.copytree(finished_run, damaged)
    (damaged / "eval" / "metrics.json").write_text('{"base": 1, "tuned": [2]}')
    (damaged / "eval" / "forgetting.json").write_text("[1, 2")
    for verb in (["report", damaged], ["compare", damaged, finished_run]):
        result = cli(verb, capsys)
        assert result.exit_code == 1 and str(damaged) in result.err and "Traceback" not in result.err, result.err
    (damaged / "recipe.yaml").write_text("name: [unclosed\n")
    assert "completed" in cli(["status", damaged], capsys).out  # status.json alone still says how the run ended
    for verb in (["report", damaged], ["chat", damaged, "--prompt", "hi"], ["export", damaged]):
        result = cli(verb, capsys)
        assert result.exit_code == 1 and "recipe.yaml" in result.err and "damaged" in result.err, (verb, result.err)
