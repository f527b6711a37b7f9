"""Base vs tuned on the held-out test set, with a paired-bootstrap 95% interval for every metric's difference.

Records are paired by id from `predictions_base.jsonl` and `predictions_tuned.jsonl` and resampled together, each
keeping its base and its tuned answer. Each metric is recomputed on every resample the way `metrics.aggregate`
computes it: shares and ROUGE-L as means, field accuracy as Σcorrect / Σtotal, BLEU as corpus BLEU from the summed
per-record statistics. The result goes to `eval/comparison.json`, with the files' hashes so that a stale one (after
`tunelab eval` rewrote a predictions file) is recomputed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from tunelab.eval.bootstrap import MIN_ITEMS, SAMPLES, direction, paired_difference, ratio_of_sums
from tunelab.eval.metrics import SCORED_METRICS, UNCATEGORIZED, format_change, is_share
from tunelab.eval.text_metrics import corpus_bleu_many

COMPARISON_FILE = "comparison.json"
BASELINE_NAMES = {"base": "base", "zero_shot": "prompted base (zero-shot)", "k_shot": "prompted base (k-shot)"}


def comparison_file(baseline: str = "base") -> str:
    """comparison.json against the base model; comparison_<label>.json against a prompted baseline."""
    return COMPARISON_FILE if baseline == "base" else f"comparison_{baseline}.json"


def metric_terms(scores: dict[str, Any], name: str) -> list[float] | None:
    """One record's contribution to a metric: [numerator, denominator], or BLEU's 10 statistics; None if absent."""
    value = scores.get(name)
    if value is None:
        return None
    if name == "field_accuracy":
        return [value["correct"], value["total"]] if value.get("total") else None
    if name == "bleu":
        return [float(x) for x in value["stats"]] if value.get("stats") else None
    return [float(value), 1.0]


def compare_metric(pairs: list[tuple[dict, dict]], name: str, samples: int = SAMPLES, seed: int = 0) -> dict | None:
    """{"count", "base", "tuned", "difference", "ci95", "verdict"} for one metric over (base, tuned) score pairs;
    None when no pair has the metric on both sides. Values are fractions in [0, 1] (a reward: its own units)."""
    terms = [(metric_terms(b, name), metric_terms(t, name)) for b, t in pairs]
    kept = [(b, t) for b, t in terms if b is not None and t is not None]
    if not kept:
        return None
    base, tuned = (np.array(side, dtype=float) for side in zip(*kept, strict=True))
    reduce = corpus_bleu_many if name == "bleu" else ratio_of_sums
    before, after, low, high = paired_difference(base, tuned, reduce, samples, seed)
    return {
        "count": len(kept),
        "base": round(before, 6),
        "tuned": round(after, 6),
        "difference": round(after - before, 6),
        "ci95": [round(low, 6), round(high, 6)],
        "verdict": direction(low, high, len(kept)),
    }


def compare_scores(pairs: list[tuple[dict, dict]], names: list[str], seed: int = 0) -> dict[str, dict]:
    results = {name: compare_metric(pairs, name, seed=seed) for name in names}
    return {name: result for name, result in results.items() if result is not None}


def compare_predictions(base_rows: list[dict], tuned_rows: list[dict]) -> dict[str, Any]:
    """Overall and per-category comparison of two prediction files' rows, paired by record id."""
    tuned_by_id = {str(row["id"]): row for row in tuned_rows if "id" in row}
    pairs = [(row, tuned_by_id[str(row["id"])]) for row in base_rows if str(row.get("id")) in tuned_by_id]
    shared = {m for b, t in pairs for m in b.get("scores", {}) if m in t.get("scores", {})}
    names = sorted(SCORED_METRICS & shared)
    scored = [(b.get("scores", {}), t.get("scores", {})) for b, t in pairs]
    result: dict[str, Any] = {
        "count": len(pairs),
        "unpaired": {"base": len(base_rows) - len(pairs), "tuned": len(tuned_rows) - len(pairs)},
        "samples": SAMPLES,
        "min_items": MIN_ITEMS,
        "metrics": compare_scores(scored, names),
        "by_category": {},
    }
    categories = [t.get("category") or b.get("category") for b, t in pairs]
    if any(categories):
        groups: dict[str, list[tuple[dict, dict]]] = {}
        for pair, category in zip(scored, categories, strict=True):
            groups.setdefault(category or UNCATEGORIZED, []).append(pair)
        result["by_category"] = {
            name: {"count": len(group), "metrics": compare_scores(group, names, seed=index + 1)}
            for index, (name, group) in enumerate(sorted(groups.items()))
        }
    return result


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _prediction_files(eval_dir: Path, baseline: str) -> dict[str, Path] | None:
    files = {label: Path(eval_dir) / f"predictions_{label}.jsonl" for label in (baseline, "tuned")}
    return files if all(path.is_file() for path in files.values()) else None


def compute_comparison(eval_dir: Path, baseline: str = "base") -> dict[str, Any] | None:
    """The tuned model against `baseline` (base, zero_shot, k_shot) in a run's eval folder, or None without both
    prediction files (or without a common id). The baseline's side is called "base" in the result."""
    from tunelab.eval.heldout import read_predictions

    files = _prediction_files(eval_dir, baseline)
    if files is None:
        return None
    rows = {label: read_predictions(path) for label, path in files.items()}
    comparison = compare_predictions(rows[baseline], rows["tuned"])
    if not comparison["count"]:
        return None
    comparison["baseline"] = baseline
    comparison["sha256"] = {label: _digest(path) for label, path in files.items()}
    return comparison


def write_comparison(eval_dir: Path, baseline: str = "base") -> dict[str, Any] | None:
    """Compute the tuned-vs-`baseline` comparison and write it (`comparison_file`); None (and nothing written) when
    the folder lacks either prediction file."""
    from tunelab.runs import write_json

    comparison = compute_comparison(eval_dir, baseline)
    if comparison is not None:
        write_json(Path(eval_dir) / comparison_file(baseline), comparison)
    return comparison


def load_comparison(eval_dir: Path, baseline: str = "base") -> dict[str, Any] | None:
    """The saved comparison when it matches the current prediction files, else computed again (and saved when the
    folder is writable): reports work for runs written before it existed and after `tunelab eval` reran."""
    from tunelab.runs import read_json

    files = _prediction_files(eval_dir, baseline)
    if files is None:
        return None
    saved = read_json(Path(eval_dir) / comparison_file(baseline))
    if isinstance(saved, dict) and saved.get("sha256") == {label: _digest(p) for label, p in files.items()}:
        return saved
    try:
        return write_comparison(eval_dir, baseline)
    except OSError:
        return compute_comparison(eval_dir, baseline)


def format_interval(ci95: list[float] | None, name: str = "") -> str:
    """ "-3.0 to +12.0" in points (a reward's in its own units: "-0.001 to +0.015"), or "—" without an interval."""
    if not ci95 or any(x is None or not np.isfinite(x) for x in ci95):
        return "—"
    if not is_share(name):
        return f"{ci95[0]:+.3f} to {ci95[1]:+.3f}"
    return f"{100 * ci95[0]:+.1f} to {100 * ci95[1]:+.1f}"


def describe(comparison: dict[str, Any]) -> str:
    """One line for the console: every metric's change with its interval and verdict."""
    parts = [
        f"{name} {format_change(name, m['base'], m['tuned'])} (95% CI {format_interval(m['ci95'], name)}) "
        f"{m['verdict']}"
        for name, m in comparison["metrics"].items()
    ]
    baseline = BASELINE_NAMES.get(comparison.get("baseline", "base"), "base")
    return f"held-out test set, tuned vs {baseline} on {comparison['count']} records: " + "; ".join(parts)
