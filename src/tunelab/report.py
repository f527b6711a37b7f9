"""What a person sees at the end of a run: the before/after table and where everything is."""

from __future__ import annotations

from typing import Any

from tunelab.eval.metrics import format_change, format_value

VERDICT_COLOURS = {"better": "green", "worse": "red", "inconclusive": "yellow", "no forgetting": "green",
                   "FORGETTING": "bold red"}  # fmt: skip


def _coloured(verdict: str) -> str:
    colour = VERDICT_COLOURS.get(verdict)
    return f"[{colour}]{verdict}[/]" if colour and verdict else verdict


def metrics_table(results: dict[str, dict[str, float]], comparison=None, forgetting=None):
    """base, tuned, change and, where the run has them, the paired-bootstrap 95% interval and verdict per metric."""
    from rich.table import Table

    from tunelab.eval.report_rows import intervals

    table = Table(title="held-out test set")
    for column in ("metric", "base", "tuned", "change", "95% CI (pts)", "verdict"):
        table.add_column(column, justify="left" if column in ("metric", "verdict") else "right")
    found = intervals(comparison, forgetting)
    base, tuned = results.get("base", {}), results.get("tuned", {})
    for name in sorted(set(base) | set(tuned)):
        before, after = base.get(name), tuned.get(name)
        interval, verdict = found.get(name, ("—", ""))
        table.add_row(name, format_value(name, before), format_value(name, after), format_change(name, before, after),
                      interval, _coloured(verdict))  # fmt: skip
    return table


def truncation_table(section: dict[str, Any]):
    from rich.table import Table

    from tunelab.eval.lengths import truncation_rows

    head, rows = truncation_rows(section)
    table = Table(title="answers cut off")
    for column in head:
        table.add_column(column, justify="left" if column == "category" else "right")
    for row in rows:
        table.add_row(*row)
    return table


def print_truncation(console, section: dict[str, Any] | None) -> None:
    """The cut-off answers per category, that they count as failures, and the limit to set (nothing if none)."""
    from tunelab.eval.lengths import truncation_sentences

    if not section:
        return
    console.print(truncation_table(section))
    for line in truncation_sentences(section):
        console.print(f"[yellow]{line}[/]", highlight=False)


def print_outcome(outcome) -> None:
    from rich.console import Console

    from tunelab.eval.comparison import load_comparison
    from tunelab.eval.run_report import read_forgetting, read_truncation

    console = Console()
    if outcome.metrics:
        comparison, forgetting = load_comparison(outcome.run.eval_dir), read_forgetting(outcome.run)
        console.print(metrics_table(outcome.metrics, comparison, forgetting))
        print_truncation(console, read_truncation(outcome.run, outcome.run.read_recipe()))
    if outcome.merge_check:
        from tunelab.export.verify import describe_policy

        console.print(outcome.merge_check.get("summary") or describe_policy(outcome.merge_check))
    console.print(f"run {outcome.state} at step {outcome.global_step}: {outcome.run.path}")


def print_eval_report(report: dict[str, Any]) -> None:
    """Set-level metrics, then one row per category when the records carry categories; then cut-off answers."""
    from rich.console import Console
    from rich.table import Table

    from tunelab.eval.lengths import counts_from_report, truncation_section

    metrics = report["metrics"]
    table = Table(title=f"{report['label']}: {report['count']} records")
    table.add_column("")
    for name in metrics:
        table.add_column(name, justify="right")
    table.add_row("all", *(format_value(name, metrics[name]) for name in metrics))
    for category, values in report.get("by_category", {}).items():
        table.add_row(f"{category} ({values['count']})", *(format_value(name, values.get(name)) for name in metrics))
    console = Console()
    console.print(table)
    counts = {report["label"]: counts_from_report(report)}
    print_truncation(console, truncation_section(counts, {report["label"]: report}, report.get("max_new_tokens")))


def compare_table(run_paths: list[str]):
    """One row per run: state, method, steps, losses, tuned metrics (change, 95% CI and verdict) and forgetting."""
    from rich.table import Table

    from tunelab.eval.run_report import collect, damaged_files_named
    from tunelab.runs import RunDir

    collected = []
    for path in run_paths:
        run = RunDir.open(path)
        with damaged_files_named(run):
            collected.append(collect(run))
    metrics = sorted({m for data in collected for m in data["metrics"].get("tuned", {})})
    table = Table(title="runs")
    for column in ("run", "state", "method", "steps", "loss", "best eval loss", *metrics, "forgetting"):
        table.add_column(column, justify="left" if column in ("run", "state", "method") else "right")
    for path, data in zip(run_paths, collected, strict=True):
        with damaged_files_named(RunDir(path)):
            table.add_row(*_compare_row(data, metrics))
    return table


def _compare_row(data: dict[str, Any], metrics: list[str]) -> list[str]:
    loss = data["loss"]
    tuned, base = data["metrics"].get("tuned", {}), data["metrics"].get("base", {})
    compared = (data.get("comparison") or {}).get("metrics", {})
    cells = [_with_base(m, tuned.get(m), base.get(m), compared.get(m)) for m in metrics]
    return [
        data["name"], str(data["status"].get("state", "?")), str(data["recipe"].get("method", {}).get("type")),
        str(loss["steps"]), _number(loss["last"]), _number(loss["best_eval"]), *cells,
        _forgetting_cell(data.get("forgetting")),
    ]  # fmt: skip


def _forgetting_cell(report: dict[str, Any] | None) -> str:
    from tunelab.eval.comparison import format_interval
    from tunelab.eval.forgetting import VERDICT_LABELS

    if not report:
        return "—"
    change = f"{100 * report['difference']:+.1f} pts ({format_interval(report['ci95'])})"
    return f"{change}\n{_coloured(VERDICT_LABELS[report['verdict']])}"


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "—"


def _with_base(name: str, tuned: Any, base: Any, compared: dict[str, Any] | None = None) -> str:
    from tunelab.eval.comparison import format_interval

    if tuned is None:
        return "—"
    change = format_change(name, base, tuned).removesuffix(" pts")
    text = format_value(name, tuned) + (f" ({change})" if change else "")
    if compared:
        text += f"\nCI {format_interval(compared['ci95'], name)} {_coloured(compared['verdict'])}"
    return text
