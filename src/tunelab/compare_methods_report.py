"""compare-methods' results: one row per method (quality with its interval, paired against the best method,
trainable parameters, peak memory, training time, forgetting), three plots (quality against trainable parameters,
peak memory and training time) and a recommendation whose every claim cites a figure of the table."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from tunelab.runs import read_json

GIB = 1024**3


def primary_metric(recipe) -> str:
    """The metric the comparison ranks by: field accuracy when measured, else the first scored metric."""
    metrics = list(recipe.eval.metrics or [])
    return "field_accuracy" if "field_accuracy" in metrics else (metrics[0] if metrics else "exact_match")


def _row(outcome: dict[str, Any], document: dict, metric: str) -> dict[str, Any]:
    from tunelab.eval.comparison import load_comparison

    run = Path(outcome["run"])
    training = read_json(run / "training.json", {}) or {}
    tuned = ((read_json(run / "eval" / "metrics.json", {}) or {}).get("tuned") or {}).get(metric)
    against_base = ((load_comparison(run / "eval") or {}).get("metrics") or {}).get(metric)
    forgetting = read_json(run / "eval" / "forgetting.json")
    parameters = training.get("parameters") or {}
    return {
        "method": outcome["method"],
        "type": document["method"]["type"],
        "state": outcome["state"],
        "error": outcome.get("error"),
        "run": outcome["run"],
        "learning_rate": document["train"]["learning_rate"],
        "quality": tuned,
        "vs_base": against_base and {k: against_base[k] for k in ("difference", "ci95", "verdict")},
        "trainable": parameters.get("trainable"),
        "total": parameters.get("total"),
        "peak_rss_bytes": training.get("peak_rss_bytes"),
        "weight_bytes": training.get("weight_bytes"),
        "train_seconds": training.get("train_seconds"),
        "forgetting": forgetting and {k: forgetting.get(k) for k in ("difference", "ci95", "verdict")},
    }


def summarise(recipe, outcomes: list[dict[str, Any]], documents: dict[str, dict]) -> dict[str, Any]:
    """The comparison's table (paired differences against the best completed method) and recommendation."""
    metric = primary_metric(recipe)
    rows = [_row(outcome, documents[outcome["method"]], metric) for outcome in outcomes]
    scored = [row for row in rows if row["state"] == "completed" and row["quality"] is not None]
    best = max(scored, key=lambda row: row["quality"]) if scored else None
    for row in scored:
        row["vs_best"] = None if row is best else _paired(best, row, metric)
    return {"recipe": recipe.name, "metric": metric, "best": best and best["method"], "rows": rows,
            "recommendation": recommend(scored, best, metric)}  # fmt: skip


def _paired(best: dict, row: dict, metric: str) -> dict[str, Any] | None:
    """This method minus the best, per test record, with the paired-bootstrap interval."""
    from tunelab.eval.comparison import compare_predictions
    from tunelab.eval.heldout import read_predictions

    files = [Path(r["run"]) / "eval" / "predictions_tuned.jsonl" for r in (best, row)]
    if not all(path.is_file() for path in files):
        return None
    compared = compare_predictions(*(read_predictions(path) for path in files))["metrics"].get(metric)
    return compared and {k: compared[k] for k in ("difference", "ci95", "verdict")}


def _tied(row: dict, best: dict) -> bool:
    """Not shown to be worse than the best: the paired interval of the difference reaches zero."""
    return row is best or (row.get("vs_best") is not None and row["vs_best"]["ci95"][1] >= 0)


def recommend(scored: list[dict], best: dict | None, metric: str) -> str:
    if best is None:
        return "No method completed with a held-out score, so there is nothing to recommend; see each method's log."
    tied = [row for row in scored if _tied(row, best)]
    cheapest = min(tied, key=lambda row: (row["trainable"] or 0, row["peak_rss_bytes"] or 0))
    lines = [f"Best {metric}: {best['method']} at {_share(best['quality'])}."]
    others = [row for row in tied if row is not best]
    if others:
        lines.append("Not distinguishable from it on this test set (the paired 95% interval of the difference "
                     f"includes zero): {_against_best(others)}.")  # fmt: skip
    worse = [row for row in scored if not _tied(row, best)]
    if worse:
        lines.append(f"Worse than it (interval below zero): {_against_best(worse)}.")
    why = "the only method not shown worse than the best" if len(tied) == 1 else (
        "among the methods as good as the best, it trains the fewest parameters")  # fmt: skip
    lines.append(f"Recommended: {cheapest['method']} — {why} ({_count(cheapest['trainable'])} trained, "
                 f"{_fraction(cheapest)} of the model; peak {_gib(cheapest['peak_rss_bytes'])}; "
                 f"{_seconds(cheapest['train_seconds'])} of training).")  # fmt: skip
    forgetting = cheapest.get("forgetting")
    if forgetting:
        lines.append(f"Its forgetting-probe change: {_interval(forgetting)} ({forgetting.get('verdict')}).")
    return " ".join(lines + _cheaper_alternative(scored, cheapest))


def _cheaper_alternative(scored: list[dict], chosen: dict) -> list[str]:
    """The best-scoring method that trains under a tenth of the chosen one's parameters, with what it costs in
    quality: the trade-off a reader with less memory or time would take."""
    cheaper = [
        r for r in scored if r["trainable"] and chosen["trainable"] and r["trainable"] < chosen["trainable"] / 10
    ]
    if not cheaper:
        return []
    alternative = max(cheaper, key=lambda row: row["quality"])
    return [f"If memory or time matter more: {alternative['method']} trains {_fraction(alternative)} of the model "
            f"({_count(alternative['trainable'])}), peaks at {_gib(alternative['peak_rss_bytes'])} and scored "
            f"{_share(alternative['quality'])}, {_interval(alternative.get('vs_best'))} against the best."]  # fmt: skip


def _against_best(rows: list[dict]) -> str:
    return "; ".join(f"{row['method']} {_interval(row['vs_best'])}" for row in rows)


def _share(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _interval(compared: dict | None) -> str:
    if not compared:
        return "—"
    low, high = (100 * x for x in compared["ci95"])
    return f"{100 * compared['difference']:+.1f} pts [{low:+.1f}, {high:+.1f}]"


def _count(value: int | None) -> str:
    if value is None:
        return "—"
    return f"{value / 1e6:.2f}M" if value >= 1e5 else f"{value:,}"


def _fraction(row: dict) -> str:
    return f"{100 * row['trainable'] / row['total']:.3g}%" if row.get("trainable") and row.get("total") else "—"


def _gib(value: int | None) -> str:
    return "—" if value is None else f"{value / GIB:.2f} GiB"


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f} s"


COLUMNS = ("method", "lr", "quality", "vs base", "vs best", "trainable", "share", "peak RSS", "train time",
           "forgetting")  # fmt: skip


def table_rows(summary: dict[str, Any]) -> list[list[str]]:
    rows = []
    for row in summary["rows"]:
        if row["state"] != "completed":
            rows.append([row["method"], f"{row['learning_rate']:g}", f"failed: {row['error']}"] + [""] * 7)
            continue
        rows.append([row["method"], f"{row['learning_rate']:g}", _share(row["quality"]), _interval(row["vs_base"]),
                     "best" if row["method"] == summary["best"] else _interval(row.get("vs_best")),
                     _count(row["trainable"]), _fraction(row), _gib(row["peak_rss_bytes"]),
                     _seconds(row["train_seconds"]), _interval(row["forgetting"])])  # fmt: skip
    return rows


MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")


def plot(summary: dict[str, Any], out: Path) -> dict[str, Path]:
    """Quality against trainable parameters (log scale), peak memory and training time; one point per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summary["rows"] if r["state"] == "completed" and r["quality"] is not None]
    axes_of = {"parameters": ("trainable", "trainable parameters", 1.0, True),
               "memory": ("peak_rss_bytes", "peak RSS (GiB)", GIB, False),
               "time": ("train_seconds", "training time (s)", 1.0, False)}  # fmt: skip
    written = {}
    for name, (key, label, scale, log_x) in axes_of.items():
        points = [(r[key] / scale, 100 * r["quality"], r["method"]) for r in rows if r.get(key)]
        figure, axis = plt.subplots(figsize=(7.5, 4))
        for index, (x, y, method) in enumerate(points):  # a legend, not labels: LoRA-like methods sit on each other
            axis.scatter(x, y, marker=MARKERS[index % len(MARKERS)], s=50, label=method, alpha=0.85)
        axis.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
        axis.set_xscale("log" if log_x else "linear")
        axis.set_xlabel(label)
        axis.set_ylabel(f"{summary['metric']} (%)")
        axis.set_title(f"{summary['metric']} against {label}")
        axis.grid(alpha=0.3)
        written[name] = out / f"quality_vs_{name}.png"
        figure.tight_layout()
        figure.savefig(written[name], dpi=110)
        plt.close(figure)
    return written


def write_report(summary: dict[str, Any], out: Path) -> dict[str, Path]:
    plots = plot(summary, out)
    rows = table_rows(summary)
    md = [f"# compare-methods: {summary['recipe']}", "", f"Ranked by held-out **{summary['metric']}**; intervals are "
          "paired-bootstrap 95% intervals over the test records.", "", "| " + " | ".join(COLUMNS) + " |",
          "|" + "---|" * len(COLUMNS)] + ["| " + " | ".join(row) + " |" for row in rows]  # fmt: skip
    md += ["", "## Recommendation", "", summary["recommendation"], ""]
    md += [f"![{name}]({path.name})" for name, path in plots.items()]
    (out / "methods.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    images = "".join(f'<img src="{p.name}" alt="{html.escape(n)}">' for n, p in plots.items())
    page = (f"<!doctype html><meta charset='utf-8'><title>compare-methods: {html.escape(summary['recipe'])}</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:4px 8px}"
            "table{border-collapse:collapse}img{max-width:32%;margin:4px}</style>"
            f"<h1>compare-methods: {html.escape(summary['recipe'])}</h1><p>Ranked by held-out "
            f"<b>{html.escape(summary['metric'])}</b>; paired-bootstrap 95% intervals.</p>"
            f"<table><tr>{head}</tr>{body}</table><h2>Recommendation</h2>"
            f"<p>{html.escape(summary['recommendation'])}</p>{images}")  # fmt: skip
    (out / "methods.html").write_text(page, encoding="utf-8")
    return {"md": out / "methods.md", "html": out / "methods.html", **plots}
