"""Render an audit: report.json (everything), report.md (what a person reads), histograms as PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tunelab.runs import write_atomic

SHOWN = 20  # rows per section in the markdown; report.json has up to audit.LISTED
INFO_NOTES = {
    "answer_extracted_from_prompt": "expected for extraction tasks, not a problem: the answer takes spans or values "
    "from the prompt; an answer that repeats the prompt itself is counted as answer repeats prompt",
}


def write_audit(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    histograms = report.get("lengths", {}).get("histogram", {})
    written = {"json": out_dir / "report.json", "md": out_dir / "report.md"}
    stored = {**report, "lengths": {k: v for k, v in report.get("lengths", {}).items() if k != "histogram"}}
    write_atomic(written["json"], json.dumps(stored, indent=2, ensure_ascii=False) + "\n")
    if histograms:
        written["token_lengths"] = _histogram(histograms, out_dir / "token_lengths.png", "tokens per record", report)
    written["turns"] = _turns_plot(report["quality"]["turns"], out_dir / "turns.png")
    write_atomic(written["md"], render_markdown(stored, {k: v.name for k, v in written.items()}))
    return written


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _histogram(lengths: dict[str, list[int]], out: Path, xlabel: str, report: dict[str, Any]) -> Path:
    plt = _figure()
    figure, axis = plt.subplots(figsize=(7, 4), dpi=110)
    for name, values in lengths.items():
        if values:
            axis.hist(values, bins=40, alpha=0.6, label=f"{name} ({len(values)})")
    limits = {s.get("max_length") for s in report["lengths"]["per_set"].values() if s.get("max_length")}
    for limit in limits:
        axis.axvline(limit, color="#d62728", linestyle="--", label=f"max_length {limit}")
    axis.set_xlabel(xlabel)
    axis.set_ylabel("records")
    axis.set_title("token length distribution")
    if axis.get_legend_handles_labels()[0]:
        axis.legend()
    figure.tight_layout()
    figure.savefig(out)
    plt.close(figure)
    return out


def _turns_plot(turns: dict[str, dict[str, int]], out: Path) -> Path:
    plt = _figure()
    figure, axis = plt.subplots(figsize=(7, 3.5), dpi=110)
    names = list(turns)
    width = 0.8 / max(1, len(names))
    for index, name in enumerate(names):
        keys = sorted(turns[name], key=int)
        positions = [int(k) + index * width for k in keys]
        axis.bar(positions, [turns[name][k] for k in keys], width=width, label=name)
    axis.set_xlabel("assistant turns per record")
    axis.set_ylabel("records")
    axis.set_title("conversation turns")
    if axis.get_legend_handles_labels()[0]:  # no records (all invalid): no legend, nor matplotlib's warning about it
        axis.legend()
    figure.tight_layout()
    figure.savefig(out)
    plt.close(figure)
    return out


def render_markdown(report: dict[str, Any], images: dict[str, str]) -> str:
    lines = ["# Data audit", "", _sets_table(report), "", "## Summary", "", _summary_table(report["summary"]), ""]
    lines += _invalid_lines(report["invalid"], report["summary"]["invalid_records"])
    lines += _duplicate_lines(report["duplicates"])
    lines += _leakage_lines(report["leakage"])
    lines += _contamination_lines(report["contamination"])
    lines += _quality_lines(report["quality"])
    lines += _pair_lines(report.get("pairs"))
    lines += _length_lines(report["lengths"], images)
    return "\n".join(lines) + "\n"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(cell).replace("|", "\\|").replace("\n", " ") for cell in row) + " |" for row in rows]
    return "\n".join(out)


def _sets_table(report: dict[str, Any]) -> str:
    rows = [[name, info["role"], info["records"]] for name, info in report["sets"].items()]
    return _table(["set", "role", "records"], rows)


def _summary_table(summary: dict[str, Any]) -> str:
    return _table(["check", "count"], [[k.replace("_", " "), "—" if v is None else v] for k, v in summary.items()])


def _ref(ref: dict[str, str]) -> str:
    return f"`{ref['id']}` ({ref['set']}, {ref['source']})"


def _invalid_lines(invalid: list[dict], count: int) -> list[str]:
    if not count:
        return ["## Invalid records", "", "None.", ""]
    rows = [[item["where"], item["problem"], item["fix"]] for item in invalid[:SHOWN]]
    return [
        "## Invalid records",
        "",
        f"{count} records could not be used:",
        "",
        _table(["where", "problem", "fix"], rows),
        "",
    ]


def _duplicate_lines(section: dict[str, Any]) -> list[str]:
    lines = ["## Duplicates", "", f"{section['exact_groups']} groups of exact duplicates "
             f"({section['exact_extra_copies']} extra copies), {section['near_pairs']} near-duplicate pairs, "
             f"{section['cross_set_links']} links across sets.", ""]  # fmt: skip
    if section["exact"]:
        rows = [
            [", ".join(_ref(r) for r in group[:4]) + (" …" if len(group) > 4 else "")] for group in section["exact"]
        ]
        lines += [_table(["exact duplicates"], rows[:SHOWN]), ""]
    if section["near"]:
        rows = [[_ref(p["a"]), _ref(p["b"]), p["similarity"]] for p in section["near"][:SHOWN]]
        lines += [_table(["record", "near-duplicate of", "similarity"], rows), ""]
    return lines


def _leakage_lines(section: dict[str, Any]) -> list[str]:
    if not section["pairs"]:
        return ["## Leakage", "", "No evaluation record duplicates a training record.", ""]
    rows = [[_ref(p["eval"]), _ref(p["train"]), p["kind"], p["similarity"]] for p in section["listed"][:SHOWN]]
    head = f"**{section['leaked_records']} evaluation records duplicate training records** ({section['pairs']} pairs)."
    lines = [
        "## Leakage",
        "",
        head,
        "",
        _table(["evaluation record", "training record", "kind", "similarity"], rows),
        "",
    ]
    return lines + _dropped_lines(section)


def _dropped_lines(section: dict[str, Any]) -> list[str]:
    if "dropped_records" not in section:
        return []
    rows = [[f"`{d['id']}` ({d['set']}, {d['source']})", f"`{d['train_id']}`", d["kind"], d["similarity"]]
            for d in section["dropped"][:SHOWN]]  # fmt: skip
    head = (f"**{section['dropped_records']} leaked evaluation records are left out of evaluation** "
            "(`data.leakage: drop`); training uses every training record.")  # fmt: skip
    return [head, "", _table(["left out", "duplicates training record", "kind", "similarity"], rows), ""]


def _contamination_lines(section: dict[str, Any]) -> list[str]:
    if not section.get("checked"):
        return ["## Benchmark contamination", "", "Not checked (give benchmark files with --against).", ""]
    head = (f"{section['contaminated_records']} training records share an n-gram with one of "
            f"{section['benchmark_items']} benchmark items ({', '.join(section['benchmarks'])}).")  # fmt: skip
    rows = [[h.get("record_id"), h.get("subject"), h.get("example_ngram", "")] for h in section["listed"][:SHOWN]]
    return [
        "## Benchmark contamination",
        "",
        head,
        "",
        _table(["record", "benchmark subject", "shared text"], rows),
        "",
    ]


def _quality_lines(section: dict[str, Any]) -> list[str]:
    lines = ["## Answers and languages", ""]
    for flag, info in section["flags"].items():
        examples = ", ".join(_ref(r) for r in info["listed"][:5])
        lines.append(f"- **{flag.replace('_', ' ')}**: {info['count']} (e.g. {examples})")
    if not section["flags"]:
        lines.append("- No short answers, echoed prompts or answers in another language.")
    for flag, info in section.get("info", {}).items():
        examples = ", ".join(_ref(r) for r in info["listed"][:3])
        lines.append(
            f"- {flag.replace('_', ' ')}: {info['count']} ({INFO_NOTES.get(flag, 'information')}; e.g. {examples})"
        )
    rows = [[name, ", ".join(f"{lang} {count}" for lang, count in sorted(counts.items()))]
            for name, counts in section["languages"].items()]  # fmt: skip
    return [*lines, "", _table(["set", "prompt languages"], rows), ""]


def _pair_lines(section: dict[str, Any] | None) -> list[str]:
    """The "Preference pairs" section (preference data only): same or empty sides, length bias, label balance."""
    if section is None:
        return []
    if section["kind"] == "unpaired":
        return _label_lines(section)
    rows = []
    for name, stats in section["per_set"].items():
        chars, tokens = stats["chars"], stats.get("tokens", {})
        shares = [_fmt(chars["chosen_longer_share"]), _fmt(tokens.get("chosen_longer_share"))]
        means = f"{chars['mean_chosen']} / {chars['mean_rejected']}"
        rows.append([name, stats["pairs"], stats["identical"], stats["empty_side"], *shares, means])
    header = ["set", "pairs", "chosen = rejected", "empty side", "chosen longer (chars)", "chosen longer (tokens)"]
    lines = ["## Preference pairs", "", _table([*header, "mean chars chosen / rejected"], rows), ""]
    lines += [_baseline_line(section.get("held_out")), ""]
    listed = [ref for stats in section["per_set"].values() for ref in stats["identical_listed"]][:SHOWN]
    if listed:
        lines += [f"Pairs whose answers are the same (whitespace and case aside): {', '.join(map(_ref, listed))}", ""]
    return lines


def _baseline_line(held_out: dict[str, Any] | None) -> str:
    if not held_out or not held_out["total"]:
        return "No held-out pairs (test or validation file): the length baseline is the training share above."
    where = f"{', '.join(held_out['sets'])}, by {held_out['measured_in']}"
    return (
        f'**Length baseline**: "the longer answer wins" picks the chosen answer in {held_out["correct"]} of '
        f"{held_out['total']} held-out pairs ({where}): {_fmt(held_out['length_rule_accuracy'])}. A preference "
        "model has to beat this to show it learned more than length."
    )


def _label_lines(section: dict[str, Any]) -> list[str]:
    weigh = "**imbalanced**: weight the smaller side (desirable_weight / undesirable_weight)"
    rows = [
        [
            name,
            s["records"],
            s["desirable"],
            s["undesirable"],
            _fmt(s["desirable_share"]),
            weigh if s["imbalanced"] else "ok",
        ]
        for name, s in section["per_set"].items()
    ]
    header = ["set", "records", "desirable", "undesirable", "desirable share", "balance"]
    return ["## Preference labels (unpaired)", "", _table(header, rows), ""]


def _length_lines(section: dict[str, Any], images: dict[str, str]) -> list[str]:
    lines = ["## Lengths", ""]
    if not section.get("checked"):
        return [*lines, "Not measured (no tokenizer).", ""]
    keys = ["count", "min", "median", "p95", "max", "truncated", "truncated_share", "answer_cut_off"]
    rows = [[name, *[_fmt(stats.get(k)) for k in keys]] for name, stats in section["per_set"].items()]
    lines += [_table(["set", *keys], rows), ""]
    lines += [f"![token lengths]({images['token_lengths']})", ""] if "token_lengths" in images else []
    lines += [f"![turns]({images['turns']})", ""] if "turns" in images else []
    return lines


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:.1%}" if isinstance(value, float) and value < 1 and value > 0 else str(value)


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A few lines for the console."""
    s = report["summary"]
    sets = ", ".join(f"{name} {info['records']}" for name, info in report["sets"].items())
    lines = [f"audited {s['records']} records ({sets}) in {report.get('seconds', 0)} s"]
    lines.append(f"  invalid records: {s['invalid_records']}")
    lines.append(
        f"  exact duplicate copies: {s['exact_duplicate_copies']}, near-duplicate pairs: {s['near_duplicate_pairs']}"
    )
    dropped = f" ({s['leaked_records_dropped']} left out of evaluation)" if "leaked_records_dropped" in s else ""
    lines.append(f"  leaked evaluation records: {s['leaked_records']}{dropped}")
    if s.get("contaminated_records") is not None:
        lines.append(f"  benchmark-contaminated training records: {s['contaminated_records']}")
    if s.get("truncated") is not None:
        lines.append(f"  truncated: {s['truncated']}, answer cut off entirely: {s['answer_cut_off']}")
    flags = {k: v for k, v in s.items() if k in {"short_answer", "answer_repeats_prompt", "answer_in_other_language"}}
    if flags:
        lines.append("  " + ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in flags.items()))
    extracted = report["quality"].get("info", {}).get("answer_extracted_from_prompt", {}).get("count")
    if extracted:
        lines.append(f"  answers extracted from the prompt: {extracted} (expected for extraction tasks, not a problem)")
    if "identical_pairs" in s:
        accuracy = "—" if s["length_rule_accuracy"] is None else f"{s['length_rule_accuracy']:.1%}"
        lines.append(f"  pairs with the same answer twice: {s['identical_pairs']}, with an empty side: "
                     f"{s['empty_sides']}; held-out accuracy of \"the longer answer wins\": {accuracy}")  # fmt: skip
    if s.get("imbalanced_label_sets"):
        lines.append(f"  sets with imbalanced labels (desirable vs undesirable): {s['imbalanced_label_sets']}")
    return lines
