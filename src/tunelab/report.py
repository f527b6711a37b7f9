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
