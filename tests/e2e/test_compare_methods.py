"""`tunelab compare-methods` on the tiny model: every method an ordinary run, the base evaluation shared, one table,
three plots and a recommendation; bad flags refused before anything runs."""

from __future__ import annotations

import json

from tests.helpers import cli, tiny_recipe


def test_compare_methods_writes_runs_table_plots_and_recommendation(tmp_path, tiny_model_dir, capsys):
    recipe = tiny_recipe(tmp_path, tiny_model_dir, eval={"forgetting": {"limit": 2, "shots": 0}})
    out = tmp_path / "cmp"
    result = cli(["compare-methods", recipe, "--methods", "lora,prompt,freeze", "--lr", "prompt=0.05",
                  "--out", out, "train.max_steps=3"], capsys)  # fmt: skip
    assert result.exit_code == 0, result.err
    summary = json.loads((out / "methods.json").read_text())
    assert [row["method"] for row in summary["rows"]] == ["lora", "prompt", "freeze"]
    assert all(row["state"] == "completed" for row in summary["rows"]), summary["rows"]
    rows = {row["method"]: row for row in summary["rows"]}
    assert rows["prompt"]["learning_rate"] == 0.05 and rows["freeze"]["learning_rate"] == 5e-3 * 0.1
    assert rows["prompt"]["trainable"] < rows["lora"]["trainable"] < rows["freeze"]["trainable"]
    assert all(row["peak_rss_bytes"] > 0 and row["train_seconds"] > 0 for row in rows.values())
    assert all(row["vs_base"] and len(row["vs_base"]["ci95"]) == 2 for row in rows.values())
    assert sum(row.get("vs_best") is None for row in rows.values()) == 1  # the best one
    for name in ("lora", "prompt", "freeze"):
        run = out / f"tiny-{name}"
        assert (run / "recipe.yaml").is_file() and (run / "eval" / "report.html").is_file()
    assert not (out / "tiny-lora" / "merged").exists()  # no merge unless --merge
    # the base model was evaluated once: the later runs took it from the first
    assert not (out / "tiny-lora" / "eval" / "base_from.json").exists()
    assert json.loads((out / "tiny-prompt" / "eval" / "base_from.json").read_text())["run"] == str(out / "tiny-lora")
    for label in ("zero_shot", "k_shot"):  # the prompted baselines too
        first, later = (out / f"tiny-{m}" / "eval" / f"predictions_{label}.jsonl" for m in ("lora", "prompt"))
        assert later.read_bytes() == first.read_bytes()
    table = (out / "methods.md").read_text()
    assert table.count("\n| ") == 4 and "Recommendation" in table and summary["recommendation"] in table
    assert summary["best"] in summary["recommendation"]
    for plot in ("parameters", "memory", "time"):
        assert (out / f"quality_vs_{plot}.png").stat().st_size > 5000
    assert "<img" in (out / "methods.html").read_text()
    assert summary["recommendation"] in result.out


def test_compare_methods_refuses_bad_flags_before_running(tmp_path, tiny_model_dir, capsys):
    recipe = tiny_recipe(tmp_path, tiny_model_dir)
    for flags, message in ((["--methods", "lora,lorax"], "unknown lorax"),
                           (["--methods", "lora,lora"], "named twice"),
                           (["--methods", "lora", "--lr", "full=1e-5"], "not among --methods"),
                           (["--methods", "lora", "--lr", "lora=fast"], "expected method=number"),
                           (["--budget", "soon"], "expected a positive time"),
                           (["--budget=-5m"], "expected a positive time"),
                           (["--budget", "0m"], "expected a positive time")):  # fmt: skip
        result = cli(["compare-methods", recipe, *flags, "--out", tmp_path / "cmp"], capsys)
        assert result.exit_code != 0 and message in result.err and "Traceback" not in result.err
        assert not (tmp_path / "cmp").exists()
    result = cli(["compare-methods", recipe, "data.test=null", "--out", tmp_path / "cmp"], capsys)  # no held-out set
    assert result.exit_code != 0 and "data.test" in result.err and "held-out" in result.err
    assert "Traceback" not in result.err and not (tmp_path / "cmp").exists()
    earlier = tmp_path / "earlier"
    (earlier / "tiny-lora").mkdir(parents=True)
    result = cli(["compare-methods", recipe, "--methods", "lora", "--out", earlier], capsys)
    assert result.exit_code == 1 and "holds an earlier comparison" in result.err and "--overwrite" in result.err
    assert (earlier / "tiny-lora").is_dir() and not (earlier / "recipes").exists()  # left as it was


def test_a_time_budget_ends_training_early_and_the_run_still_completes(tmp_path, tiny_model_dir, capsys):
    recipe = tiny_recipe(tmp_path, tiny_model_dir, eval={"forgetting": {"enabled": False}})
    result = cli(["run", recipe, "train.max_seconds=0.001", "train.max_steps=8"], capsys)
    assert result.exit_code == 0, result.err
    training = json.loads((tmp_path / "runs" / "tiny" / "training.json").read_text())
    assert training["completed"] and training["global_step"] == 1
    assert training["stopped_by_time_budget_at_step"] == 1
    refused = cli(["validate", recipe, "train.max_seconds=-1"], capsys)
    assert refused.exit_code == 2 and "train.max_seconds: must be positive" in refused.err
