"""`tunelab judge`: answers of model A and model B on the same test prompts, judged pairwise in both orders.

Answers are generated once and kept (`answers_a.jsonl`, `answers_b.jsonl`, resumable like any evaluation); a run's
own test-set predictions are reused instead of generated again. The result folder holds `verdicts.jsonl` (every
verdict with the judge's raw text) and `summary.json`.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.errors import TunelabError
from tunelab.runs import write_json


@dataclass
class JudgeSettings:
    judge: str  # a model (alias, folder, run) or an OpenAI-compatible base URL
    judge_model: str = "default"  # the model name to ask an endpoint for
    api_key_env: str | None = None
    data: str | None = None
    reference: bool = False
    prompt_file: str | None = None
    limit: int | None = None
    out: str | None = None
    max_new_tokens: int = 256
    batch_size: int = 16


def make_judge(settings: JudgeSettings):
    from tunelab.eval.judge import EndpointJudge, LocalJudge, RewardModelJudge
    from tunelab.model.reward import is_reward_model

    if settings.judge.startswith(("http://", "https://")):
        return EndpointJudge(settings.judge, settings.judge_model, settings.api_key_env)
    if is_reward_model(settings.judge):
        return RewardModelJudge(settings.judge)
    return LocalJudge(settings.judge)


def _asked(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return messages[:-1] if messages and messages[-1].get("role") == "assistant" else messages


def _question(messages: list[dict[str, Any]]) -> str:
    """The request as the judge sees it: the user's text, or the whole conversation when there is more to it."""
    asked = _asked(messages)
    if len(asked) == 1:
        return str(asked[0].get("content", ""))
    return "\n\n".join(f"{m.get('role', '').capitalize()}: {m.get('content', '')}" for m in asked)


def _records(a, b, settings: JudgeSettings) -> list[dict[str, Any]]:
    from tunelab.eval.evaluate import _test_records

    for target in (a, b):
        if settings.data is None and target.run is not None:
            recipe = target.run.read_recipe()
            path, system = recipe["data"].get("test"), recipe["data"].get("system")
            if path:
                return _test_records(path, system, settings.limit)
    if settings.data is None:
        raise TunelabError("no test prompts: pass --data test.jsonl (or judge a run that has data.test)")
    return _test_records(settings.data, None, settings.limit)


def _answers(target, records, out_path: Path, settings: JudgeSettings) -> dict[str, str]:
    """The target's answer per record id, generated (or reused from the run's own predictions)."""
    from tunelab.eval.heldout import evaluate_model, read_predictions
    from tunelab.model.targets import load_target

    own = target.run.eval_dir / "predictions_tuned.jsonl" if target.run is not None else None
    if own is not None and own.is_file() and not out_path.exists() and settings.data is None:
        shutil.copyfile(own, out_path)  # evaluate_model reuses every line that answers the same prompt
    label = "tuned" if target.run is not None else target.label
    model, tokenizer, _ = load_target(target)
    evaluate_model(model, tokenizer, records, out_path, ["exact_match"], settings.max_new_tokens,
                   settings.batch_size, label=label)  # fmt: skip
    del model
    return {str(row["id"]): row["prediction"] for row in read_predictions(out_path)}


def judge_targets(a_name: str, b_name: str, settings: JudgeSettings, log=print) -> tuple[dict[str, Any], Path]:
    from tunelab.eval.judge import describe, judge_pairs, load_prompt, summarize
    from tunelab.model.targets import resolve_target

    template = load_prompt(settings.prompt_file, settings.reference)  # a bad prompt file fails before any work
    a, b = resolve_target(a_name), resolve_target(b_name)
    records = _records(a, b, settings)
    if settings.reference and not all(r["messages"][-1].get("role") == "assistant" for r in records):
        raise TunelabError("reference-guided judging needs a reference answer (final assistant turn) in every record")
    folder = Path(settings.out) if settings.out else _default_folder(a, b)
    folder.mkdir(parents=True, exist_ok=True)
    log(f"[tunelab] answers of A ({a_name}) and B ({b_name}) on {len(records)} prompts → {folder}")
    answers_a = _answers(a, records, folder / "answers_a.jsonl", settings)
    answers_b = _answers(b, records, folder / "answers_b.jsonl", settings)
    pairs = [
        {
            "id": str(r["id"]),
            "question": _question(r["messages"]),
            "prompt_messages": _asked(r["messages"]),  # what a reward-model judge scores the answers after
            "answer_a": answers_a[str(r["id"])],
            "answer_b": answers_b[str(r["id"])],
            "reference": r["messages"][-1]["content"] if settings.reference else None,
        }
        for r in records
    ]
    judge = make_judge(settings)
    log(f"[tunelab] judging {len(pairs)} pairs in both orders with {judge.name}")
    rows = judge_pairs(pairs, judge, template, folder / "verdicts.jsonl")
    summary = summarize(rows, a_name, b_name, judge.name, settings.reference)
    write_json(folder / "summary.json", summary)
    log(f"[tunelab] {describe(summary)}")
    if a.run is not None and folder.is_relative_to(a.run.eval_dir):
        from tunelab.eval.run_report import write_report

        log(f"[tunelab] report updated: {write_report(a.run)['html']}")
    return summary, folder


def _default_folder(a, b) -> Path:
    if a.run is not None:
        return a.run.eval_dir / "judge" / b.label
    return Path("judge") / f"{a.label}-vs-{b.label}"
