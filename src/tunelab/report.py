"""What a person sees at the end of a run: the before/after table and where everything is."""

from __future__ import annotations

from typing import Any


def metrics_table(results: dict[str, dict[str, float]]):
    from rich.table import Table

    table = Table(title="held-out test set")
    table.add_column("metric")
    table.add_column("base", justify="right")
    table.add_column("tuned", justify="right")
    table.add_column("change", justify="right")
    base, tuned = results.get("base", {}), results.get("tuned", {})
    for name in sorted(set(base) | set(tuned)):
        before, after = base.get(name), tuned.get(name)
        change = f"{after - before:+.1%}" if before is not None and after is not None else ""
        table.add_row(name, _percent(before), _percent(after), change)
    return table


def _percent(value: Any) -> str:
    return f"{value:.1%}" if isinstance(value, int | float) else "—"


def print_outcome(outcome) -> None:
    from rich.console import Console

    console = Console()
    if outcome.metrics:
        console.print(metrics_table(outcome.metrics))
    if outcome.merge_check:
        check = outcome.merge_check
        verdict = "identical" if check["identical_outputs"] else "DIFFERENT"
        console.print(f"merged model vs adapter: {verdict} outputs, max |Δlogit| {check['max_abs_logit_diff']:.2e}")
    console.print(f"run {outcome.state} at step {outcome.global_step}: {outcome.run.path}")


def print_eval_report(report: dict[str, Any]) -> None:
    """Set-level metrics, then one row per category when the records carry categories."""
    from rich.console import Console
    from rich.table import Table

    metrics = report["metrics"]
    table = Table(title=f"{report['label']}: {report['count']} records")
    table.add_column("")
    for name in metrics:
        table.add_column(name, justify="right")
    table.add_row("all", *(_percent(metrics[name]) for name in metrics))
    for category, values in report.get("by_category", {}).items():
        table.add_row(f"{category} ({values['count']})", *(_percent(values.get(name)) for name in metrics))
    console = Console()
    console.print(table)
    if report.get("truncated"):
        console.print(f"{report['truncated']} answers were cut off at max_new_tokens")


def compare_table(run_paths: list[str]):
    """One row per run: state, method, steps, losses, tuned metrics and the forgetting change."""
    from rich.table import Table

    from tunelab.eval.run_report import collect
    from tunelab.runs import RunDir

    collected = [collect(RunDir.open(path)) for path in run_paths]
    metrics = sorted({m for data in collected for m in data["metrics"].get("tuned", {})})
    table = Table(title="runs")
    for column in ("run", "state", "method", "steps", "loss", "best eval loss", *metrics, "forgetting"):
        table.add_column(column, justify="left" if column in ("run", "state", "method") else "right")
    for data in collected:
        loss = data["loss"]
        tuned, base = data["metrics"].get("tuned", {}), data["metrics"].get("base", {})
        cells = [_with_base(tuned.get(m), base.get(m)) for m in metrics]
        forgetting = data.get("forgetting")
        change = f"{100 * forgetting['difference']:+.1f} pts" if forgetting else "—"
        table.add_row(
            data["name"], str(data["status"].get("state", "?")), str(data["recipe"].get("method", {}).get("type")),
            str(loss["steps"]), _number(loss["last"]), _number(loss["best_eval"]), *cells, change,
        )  # fmt: skip
    return table


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "—"


def _with_base(tuned: Any, base: Any) -> str:
    if tuned is None:
        return "—"
    return f"{tuned:.1%}" + (f" ({100 * (tuned - base):+.1f})" if isinstance(base, int | float) else "")
