"""Markdown and HTML renderings of the data `run_report.collect` gathers (rows from `report_rows`); no file I/O here."""

from __future__ import annotations

import html
import re
from typing import Any

from tunelab.eval.baseline_report import CHANGE_HEAD, COST_HEAD, baseline_note, change_rows, cost_rows, score_rows
from tunelab.eval.continual_report import HEAD as CONTINUAL_HEAD
from tunelab.eval.continual_report import continual_rows, continual_sentences
from tunelab.eval.lengths import truncation_rows, truncation_sentences
from tunelab.eval.report_rows import (
    SAMPLE_HEAD,
    audit_rows,
    category_comparison_rows,
    category_rows,
    comparison_note,
    forgetting_rows,
    forgetting_style,
    forgetting_verdict,
    judge_rows,
    metric_rows,
    sample_rows,
    summary_rows,
)
from tunelab.eval.roi_report import (
    ESTIMATE_HEAD,
    INFERENCE_HEAD,
    cost_sentences,
    estimate_rows,
    gain_sentence,
    inference_rows,
)

FORGETTING_HEAD = ("category", "items", "base", "tuned", "change (pts)", "95% CI (pts)", "verdict")
JUDGE_HEAD = ("comparison", "judge", "wins", "ties", "losses", "unparseable", "win rate", "95% CI")
METRIC_HEAD = ("metric", "base", "tuned", "change", "95% CI (pts)", "verdict")
CATEGORY_HEAD = ("category", "records", "metric", "base", "tuned", "change", "95% CI (pts)", "verdict")
TRUNCATION_TITLE = "Answers cut off at the token limit"
MD_MARKS = {"flag": "🔴 **", "unsure": "🟠 ", "ok": "🟢 "}  # red and bold only for established forgetting


def _md_table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]


def _md_held_out(data: dict[str, Any]) -> list[str]:
    comparison = data.get("comparison")
    lines = ["## Held-out test set", ""]
    if comparison:
        lines += [comparison_note(comparison), ""]
    lines += _md_table(METRIC_HEAD, metric_rows(data["metrics"], comparison, data.get("forgetting"))) + [""]
    rows = category_comparison_rows(comparison)
    if rows:
        lines += _md_table(CATEGORY_HEAD, rows) + [""]
    else:
        head, rows = category_rows(data["by_category"])
        lines += _md_table(head, rows) + [""] if rows else []
    if data.get("truncation"):
        head, rows = truncation_rows(data["truncation"])
        lines += [f"### {TRUNCATION_TITLE}", "", *truncation_sentences(data["truncation"]), ""]
        lines += _md_table(head, rows) + [""]
    return lines


def _md_forgetting(report: dict[str, Any]) -> list[str]:
    mark = MD_MARKS[forgetting_style(report)]
    verdict = f"> {mark}{forgetting_verdict(report)}" + ("**" if mark.endswith("**") else "")
    return ["## Forgetting check", "", verdict, ""] + _md_table(FORGETTING_HEAD, forgetting_rows(report)) + [""]


BASELINES_TITLE = "Fine-tuning vs prompting the base model"
CONTINUAL_TITLE = "Continual training: the previous generation's test set"


ROI_TITLE = "Cost and return"


def _roi_parts(section: dict[str, Any]) -> tuple[list[str], list[tuple[tuple, list]]]:
    """The section's sentences and its (head, rows) tables, the empty ones left out."""
    sentences = [s for s in (gain_sentence(section), *cost_sentences(section)) if s]
    tables = [(ESTIMATE_HEAD, estimate_rows(section)), (INFERENCE_HEAD, inference_rows(section))]
    return sentences, [(head, rows) for head, rows in tables if rows]


def _md_baselines_and_forgetting(data: dict[str, Any]) -> list[str]:
    lines = _md_baselines(data["baselines"]) if data.get("baselines") else []
    if data.get("roi"):
        sentences, tables = _roi_parts(data["roi"])
        lines += [f"## {ROI_TITLE}", "", *sentences, ""]
        for head, rows in tables:
            lines += _md_table(head, rows) + [""]
    if data.get("forgetting"):
        lines += _md_forgetting(data["forgetting"])
    if data.get("continual"):
        lines += [f"## {CONTINUAL_TITLE}", "", *continual_sentences(data["continual"]), ""]
        lines += _md_table(CONTINUAL_HEAD, continual_rows(data["continual"])) + [""]
    return lines


def _html_baselines_and_forgetting(data: dict[str, Any]) -> list[str]:
    parts = _html_baselines(data["baselines"]) if data.get("baselines") else []
    if data.get("roi"):
        sentences, tables = _roi_parts(data["roi"])
        parts += [f"<h2>{ROI_TITLE}</h2>", *(f'<p class="note">{escape(s)}</p>' for s in sentences)]
        parts += [_html_table(head, rows) for head, rows in tables]
    if data.get("forgetting"):
        report = data["forgetting"]
        css = forgetting_style(report)
        parts += ["<h2>Forgetting check</h2>", f'<p class="{css}">{escape(forgetting_verdict(report))}</p>',
                  _html_table(FORGETTING_HEAD, forgetting_rows(report))]  # fmt: skip
    if data.get("continual"):
        sentences = "".join(f'<p class="note">{escape(line)}</p>' for line in continual_sentences(data["continual"]))
        parts += [f"<h2>{CONTINUAL_TITLE}</h2>", sentences,
                  _html_table(CONTINUAL_HEAD, continual_rows(data["continual"]))]  # fmt: skip
    return parts


def _md_baselines(section: dict[str, Any]) -> list[str]:
    lines = [f"## {BASELINES_TITLE}", "", baseline_note(section), ""]
    lines += _md_table(*score_rows(section)) + [""] + _md_table(CHANGE_HEAD, change_rows(section)) + [""]
    return lines + ["### Cost per request", ""] + _md_table(COST_HEAD, cost_rows(section)) + [""]


def _html_baselines(section: dict[str, Any]) -> list[str]:
    return [f"<h2>{BASELINES_TITLE}</h2>", f'<p class="note">{escape(baseline_note(section))}</p>',
            _html_table(*score_rows(section)), _html_table(CHANGE_HEAD, change_rows(section)),
            "<h3>Cost per request</h3>", _html_table(COST_HEAD, cost_rows(section))]  # fmt: skip


def render_markdown(data: dict[str, Any]) -> str:
    lines = [f"# Run report: {data['name']}", ""]
    lines += _md_table(("run", data["name"]), summary_rows(data)) + [""]
    if data.get("audit"):
        audit = data["audit"]
        lines += ["## Data audit", ""]
        lines += _md_table(("check", "count"), audit_rows(audit)) + [""]
    if data["loss_plot"].is_file():
        lines += ["## Loss", "", "![loss curves](../plots/loss.png)", ""]
    lines += _md_rl(data)
    if data["metrics"]:
        lines += _md_held_out(data)
    lines += _md_baselines_and_forgetting(data)
    if data["judge"]:
        lines += ["## Pairwise A/B (judged in both orders)", ""] + _md_table(JUDGE_HEAD, judge_rows(data["judge"]))
        lines += [""]
    for kind, title in (("best", "Best tuned answers"), ("worst", "Worst tuned answers")):
        if data["examples"][kind]:
            lines += [f"## {title}", ""]
            for example in data["examples"][kind]:
                lines += [f"**{example['id']}** (tuned {example['tuned_score']:.2f}, base "
                          f"{_score(example['base_score'])}): {example['prompt']}", ""]  # fmt: skip
                answers = [(example["reference"], example["base"] or "—", example["tuned"])]
                lines += _md_table(("reference", "base", "tuned"), answers) + [""]
    return "\n".join(lines)


def _score(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "—"


STYLE = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 2rem auto; max-width: 72rem; color: #1d2430; padding: 0 1rem; }
h1 { font-size: 1.6rem; } h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #dde; }
table { border-collapse: collapse; margin: .6rem 0; } td, th { border: 1px solid #d5d9e0; padding: .3rem .6rem; }
th { background: #f2f4f8; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.up { color: #17794a; } .down { color: #b3261e; } .flag { background: #fdecea; padding: .5rem; border-radius: 4px; }
.ok { background: #e8f5ee; padding: .5rem; border-radius: 4px; } pre { white-space: pre-wrap; margin: 0; }
.flag { border-left: 5px solid #b3261e; font-weight: 600; } .ok { border-left: 5px solid #17794a; }
.unsure { background: #fff6dc; padding: .5rem; border-radius: 4px; border-left: 5px solid #b07800; }
td.v-better { color: #17794a; font-weight: 600; } td.v-worse { color: #b3261e; font-weight: 600; }
td.v-unsure { color: #8a6100; } p.note { color: #4a5261; font-size: .9rem; } h3 { font-size: 1.05rem; }
.examples td { vertical-align: top; width: 33%; } img { max-width: 100%; border: 1px solid #e3e6eb; }
"""


def _html_key_values(rows: list[tuple[str, str]]) -> str:
    body = "".join(f"<tr><th>{escape(key)}</th><td>{escape(value)}</td></tr>" for key, value in rows)
    return f"<table>{body}</table>"


_SIGNED = re.compile(r"[+-]\d+(\.\d+)?( pts)?")
_VERDICT_CSS = {"better": "v-better", "no forgetting": "v-better", "worse": "v-worse", "FORGETTING": "v-worse",
                "inconclusive": "v-unsure"}  # fmt: skip


def _cell_class(text: str, colour_changes: bool = True) -> str:
    """num for numbers; a single signed change is green or red (unless its row is inconclusive); verdict words get
    their colour."""
    if text in _VERDICT_CSS:
        return _VERDICT_CSS[text]
    kind = "num" if text[:1] in "+-0123456789—" else ""
    if colour_changes and _SIGNED.fullmatch(text) and float(text.split()[0]) != 0:
        kind += " up" if text.startswith("+") else " down"
    return kind.strip()


def _html_table(head: tuple[str, ...], rows: list[tuple[str, ...]], css: str = "") -> str:
    cells = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = []
    for row in rows:
        decided = "inconclusive" not in row  # a change whose interval spans 0 is shown without green or red
        tds = "".join(f'<td class="{_cell_class(str(value), decided)}">{escape(value)}</td>' for value in row)
        body.append(f"<tr>{tds}</tr>")
    return f'<table class="{css}"><tr>{cells}</tr>{"".join(body)}</table>'


def _html_held_out(data: dict[str, Any]) -> list[str]:
    comparison = data.get("comparison")
    parts = ["<h2>Held-out test set</h2>"]
    if comparison:
        parts.append(f'<p class="note">{escape(comparison_note(comparison))}</p>')
    parts.append(_html_table(METRIC_HEAD, metric_rows(data["metrics"], comparison, data.get("forgetting"))))
    rows = category_comparison_rows(comparison)
    if rows:
        parts.append(_html_table(CATEGORY_HEAD, rows))
    else:
        head, rows = category_rows(data["by_category"])
        parts += [_html_table(head, rows)] if rows else []
    if data.get("truncation"):
        head, rows = truncation_rows(data["truncation"])
        sentences = " ".join(truncation_sentences(data["truncation"]))
        parts += [f"<h3>{TRUNCATION_TITLE}</h3>", f'<p class="unsure">{escape(sentences)}</p>', _html_table(head, rows)]
    return parts


def render_html(data: dict[str, Any], loss_png_base64: str | None, rl_png_base64: str | None = None) -> str:
    parts = [f"<h1>Run report: {escape(data['name'])}</h1>", _html_key_values(summary_rows(data))]
    if data.get("audit"):
        rows = audit_rows(data["audit"])
        parts += ["<h2>Data audit</h2>", _html_table(("check", "count"), rows)]
    if loss_png_base64:
        parts += ["<h2>Loss</h2>", f'<img alt="loss curves" src="data:image/png;base64,{loss_png_base64}">']
    parts += _html_rl(data, rl_png_base64)
    if data["metrics"]:
        parts += _html_held_out(data)
    parts += _html_baselines_and_forgetting(data)
    if data["judge"]:
        parts += ["<h2>Pairwise A/B (judged in both orders)</h2>", _html_table(JUDGE_HEAD, judge_rows(data["judge"]))]
    for kind, title in (("best", "Best tuned answers"), ("worst", "Worst tuned answers")):
        if data["examples"][kind]:
            parts.append(f"<h2>{title}</h2>")
            for example in data["examples"][kind]:
                parts.append(f"<p><b>{escape(example['id'])}</b> (tuned {example['tuned_score']:.2f}, base "
                             f"{_score(example['base_score'])}): {escape(example['prompt'])}</p>")  # fmt: skip
                cells = "".join(f"<td><pre>{escape(text or '—')}</pre></td>"
                                for text in (example["reference"], example["base"], example["tuned"]))  # fmt: skip
                parts.append('<table class="examples"><tr><th>reference</th><th>base</th><th>tuned</th></tr>'
                             f"<tr>{cells}</tr></table>")  # fmt: skip
    body = "\n".join(parts)
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{escape(data["name"])} — tunelab'
            f"</title><style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")  # fmt: skip


RL_TITLE = "Reward, KL, entropy, clipping, length"


def _md_rl(data: dict[str, Any]) -> list[str]:
    """An RL run's curves and its latest sampled answers."""
    lines = []
    if data.get("rl_plot") and data["rl_plot"].is_file():
        lines += [f"## {RL_TITLE}", "", "![RL curves](../plots/rl.png)", ""]
    if data.get("samples"):
        lines += [f"## {_samples_title(data['samples'])}", ""] + _md_table(SAMPLE_HEAD, sample_rows(data["samples"]))
        lines += [""]
    return lines


def _html_rl(data: dict[str, Any], rl_png_base64: str | None) -> list[str]:
    parts = []
    if rl_png_base64:
        parts += [f"<h2>{RL_TITLE}</h2>", f'<img alt="RL curves" src="data:image/png;base64,{rl_png_base64}">']
    if data.get("samples"):
        parts += [f"<h2>{escape(_samples_title(data['samples']))}</h2>",
                  _html_table(SAMPLE_HEAD, sample_rows(data["samples"]), "samples")]  # fmt: skip
    return parts


def _samples_title(samples: list[dict[str, Any]]) -> str:
    return f"Sampled answers at step {samples[0].get('step', '?')} (samples.jsonl: where reward hacking shows first)"


def escape(text: Any) -> str:
    return html.escape(str(text), quote=True)
