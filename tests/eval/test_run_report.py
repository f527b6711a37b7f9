"""The run report and the console tables from a run directory: intervals and verdicts for every base-vs-tuned
difference, the three forgetting verdicts in three styles, cut-off answers; runs written before these existed."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from rich.console import Console

from tunelab.eval.forgetting import forgetting_report
from tunelab.eval.metrics import aggregate, score_records
from tunelab.eval.report_render import render_html, render_markdown
from tunelab.eval.run_report import collect, write_report
from tunelab.report import compare_table, metrics_table, print_outcome
from tunelab.runs import RunDir, write_json

REFERENCE = '{"customer": "Alice", "city": "Berlin"}'
METRICS = ["json_validity", "field_accuracy", "exact_match"]


def _predictions(run: Path, label: str, answers: list[str], cut: set[int]) -> dict:
    categories = ["en" if n % 3 else "zh" for n in range(len(answers))]
    scores = score_records(answers, [REFERENCE] * len(answers), METRICS)
    rows = [{"id": f"t{n}", "category": categories[n], "label": label, "prompt": f"order {n}", "reference": REFERENCE,
             "prediction": answer, "finish_reason": "length" if n in cut else "stop", "scores": scores[n]}
            for n, answer in enumerate(answers)]  # fmt: skip
    (run / "eval" / f"predictions_{label}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return aggregate(scores)


def _forgetting(losses: int, count: int = 100) -> dict:
    base = [{"id": f"p{n}", "category": "knowledge", "correct": n < 60} for n in range(count)]
    tuned = [{**row, "correct": row["correct"] and n >= losses} for n, row in enumerate(base)]
    report = forgetting_report(base, tuned, "probe", threshold_points=2.0)
    return report


def make_run(tmp_path: Path, losses: int = 3, cut: set[int] = frozenset(), old: bool = True, name="orders") -> Path:
    """A finished run directory as an older tunelab wrote it: no comparison.json, no verdicts, no lengths."""
    run = tmp_path / name
    (run / "eval").mkdir(parents=True)
    recipe = {"model": {"name": "tiny"}, "method": {"type": "lora", "r": 8}, "seed": 0, "eval": {"max_new_tokens": 24}}
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    write_json(run / "status.json", {"state": "completed", "step": 4})
    base = _predictions(run, "base", ["no JSON here"] * 30, set())
    tuned = _predictions(run, "tuned", [REFERENCE] * 20 + ['{"customer": "Al'] * 10, cut)
    write_json(
        run / "eval" / "metrics.json",
        {"base": base | {"probe_accuracy": 0.6}, "tuned": tuned | {"probe_accuracy": 0.6 - losses / 100}},
    )
    forgetting = _forgetting(losses)
    if old:
        forgetting = {k: v for k, v in forgetting.items() if k not in ("sd", "verdict", "items_needed",
                                                                       "flagged_categories")}  # fmt: skip
        forgetting["by_category"] = {n: {k: v for k, v in p.items() if k not in ("sd", "verdict", "items_needed")}
                                     for n, p in forgetting["by_category"].items()}  # fmt: skip
    write_json(run / "eval" / "forgetting.json", forgetting)
    return run


def test_an_old_run_gets_intervals_verdicts_and_comparison_json(tmp_path):
    run = make_run(tmp_path)
    data = collect(RunDir(run))
    assert (run / "eval" / "comparison.json").is_file()
    exact = data["comparison"]["metrics"]["exact_match"]
    assert exact["difference"] == pytest.approx(20 / 30) and exact["verdict"] == "better"
    markdown = render_markdown(data)
    assert "| metric | base | tuned | change | 95% CI (pts) | verdict |" in markdown
    low, high = (100 * x for x in exact["ci95"])
    assert f"| exact_match | 0.0% | 66.7% | +66.7 pts | {low:+.1f} to {high:+.1f} | better |" in markdown
    assert "| category | records | metric | base | tuned | change | 95% CI (pts) | verdict |" in markdown
    assert "| zh | 10 | exact_match |" in markdown and "paired bootstrap" in markdown
    probe = "{:+.1f} to {:+.1f}".format(*(100 * x for x in data["forgetting"]["ci95"]))
    assert f"| probe_accuracy | 60.0% | 57.0% | -3.0 pts | {probe} | inconclusive |" in markdown  # forgetting's CI


def test_the_three_forgetting_verdicts_look_different(tmp_path):
    styles = {}
    for losses, name in ((1, "unsure"), (20, "flag"), (0, "ok")):
        data = collect(RunDir(make_run(tmp_path / name, losses=losses)))
        html, markdown = render_html(data, None), render_markdown(data)
        styles[name] = (html, markdown)
        assert f'<p class="{name}">' in html
        for other in {"unsure", "flag", "ok"} - {name}:
            assert f'<p class="{other}">' not in html
    assert "🟠 Inconclusive on probe: a drop larger than 2 points is not ruled out" in styles["unsure"][1]
    assert "About " in styles["unsure"][1] and "items would decide it" in styles["unsure"][1]
    assert (
        "🔴 **FORGETTING on probe" in styles["flag"][1] and '<td class="v-worse">FORGETTING</td>' in styles["flag"][0]
    )
    assert "🟢 No forgetting on probe" in styles["ok"][1]
    assert "| knowledge | 100 |" in styles["unsure"][1] and "| inconclusive |" in styles["unsure"][1]


def test_cut_off_answers_are_reported_per_category_and_label(tmp_path):
    run = make_run(tmp_path, cut={1, 2, 3, 21})
    data = collect(RunDir(run))
    markdown = render_markdown(data)
    assert "### Answers cut off at the token limit" in markdown
    assert "0 of 30 base answers and 4 of 30 tuned answers stopped at the token limit (eval.max_new_tokens=24)" in (
        markdown
    )
    assert "| all | 0 of 30 (0%) | 4 of 30 (13%) |" in markdown and "| zh | 0 of 10 (0%) | 2 of 10 (20%) |" in markdown
    assert "not recorded" in markdown  # an old run: reference lengths unknown, no limit suggested
    lengths = {"max_new_tokens": 24, "reference_tokens": {"max": 40, "p95": 38, "mean": 30.0},
               "references_over_limit": 30, "suggested_max_new_tokens": 48}  # fmt: skip
    write_json(run / "eval" / "report_tuned.json", {"label": "tuned", "count": 30, **lengths})
    html = render_html(collect(RunDir(run)), None)
    assert "set eval.max_new_tokens: 48." in html and "Answers cut off at the token limit" in html
    assert "Answers cut off" not in render_markdown(collect(RunDir(make_run(tmp_path / "clean"))))


def test_html_colours_single_changes_but_not_intervals(tmp_path):
    html = render_html(collect(RunDir(make_run(tmp_path))), None)
    assert '<td class="num up">+66.7 pts</td>' in html and '<td class="v-better">better</td>' in html
    assert '<td class="num">+' in html  # the interval cell: a number, neither green nor red
    assert '<td class="num">-3.0</td>' in html  # forgetting inconclusive: its change is not painted red


def _text(renderable) -> str:
    console = Console(record=True, width=220)
    console.print(renderable)
    return console.export_text()


def test_console_tables_show_intervals_and_verdicts(tmp_path, capsys):
    run = make_run(tmp_path, cut={0, 1})
    data = collect(RunDir(run))
    table = _text(metrics_table(data["metrics"], data["comparison"], data["forgetting"]))
    assert "95% CI (pts)" in table and "better" in table and "exact_match" in table
    compared = _text(compare_table([str(run), str(make_run(tmp_path / "b", losses=20, name="other"))]))
    assert "orders" in compared and "other" in compared and "FORGETTING" in compared and "inconclusive" in compared
    assert "CI +" in compared
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    print_outcome(SimpleNamespace(run=RunDir(run), metrics=metrics, merge_check=None, state="completed", global_step=4))
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long sentences
    assert "95% CI" in out and "2 of 30 tuned answers stopped at the token limit" in out and "count as failures" in out


def test_write_report_for_an_old_run(tmp_path):
    run = make_run(tmp_path)
    paths = write_report(RunDir(run))
    assert "95% CI (pts)" in paths["md"].read_text() and "Inconclusive on probe" in paths["html"].read_text()
