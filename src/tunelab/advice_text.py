"""The written advice of `tunelab advise`: a choice among prompting, retrieval and fine-tuning, each reason citing a
figure measured on the user's data (advise.py measures them); no sentence without a number behind it."""

from __future__ import annotations

from typing import Any

from tunelab.eval.forgetting import wilson_interval

# The built-in quickstart (a 7-field extraction task, SmolLM2-135M, LoRA r 16, 608 training records): measured by
# `make demo` on this project's machines, tuned field accuracy 94.0% on 120 held-out records.
QUICKSTART_REFERENCE = "the built-in quickstart (7-field extraction, 608 training records) reached 94.0% field accuracy"
RETRIEVAL_HIT = 0.5  # retrieved records hold the answer this often or more: the facts live in the data
IN_QUESTION = 0.5  # answers copy less than this share of their words from the question: they are not in it


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.1f}%"


def _interval(part: dict[str, Any]) -> str:
    low, high = part.get("ci95") or (None, None)
    return f"{_pct(part.get('value'))} (95% CI {_pct(low)}–{_pct(high)}, {part.get('count', 0)} questions)"


def key_metric(metrics: list[str]) -> str:
    return next((m for m in ("field_accuracy", "exact_match", "rouge_l") if m in metrics), metrics[0])


def recommend(figures: dict[str, Any], target: float, goal: str | None) -> dict[str, Any]:
    data, retrieval, prompting = figures["data"], figures["retrieval"], figures["prompting"]
    key = key_metric(figures["metrics"])
    zero, shot = prompting["scores"]["zero_shot"][key], prompting["scores"]["k_shot"][key]
    hit_rate = retrieval["hits"] / max(1, retrieval["count"])
    hit_low, hit_high = wilson_interval(retrieval["hits"], retrieval["count"])
    in_question = data.get("answer_words_in_question")
    k = retrieval["k"]
    facts = [
        f"{key} of the base model on held-out questions: zero-shot {_interval(zero)}; {k}-shot {_interval(shot)}.",
        f"Answers take {_pct(in_question)} of their words from their own question"
        + (" (an extraction task: the answer is in the input)." if (in_question or 0) >= IN_QUESTION
           else " (the answer is mostly not in the input: it has to come from knowledge or retrieval)."),
        f"The {k} training records most like a held-out question contain its answer for {retrieval['hits']} of "
        f"{retrieval['count']} questions ({_pct(hit_rate)}, 95% CI {_pct(hit_low)}–{_pct(hit_high)}).",
        f"Data: {data['records']} records, {data['exact_duplicates']} exact duplicate copies, "
        f"{data['near_duplicate_pairs']} near-duplicate pairs, languages {data['languages']}, "
        f"{_pct(data['json_answers'])} of answers are JSON objects.",
    ]  # fmt: skip
    if shot["value"] is not None and shot["value"] >= target:
        choice = "prompting"
        why = [f"A {k}-shot prompt already reaches {_pct(shot['value'])} {key}, at or above the target of "
               f"{_pct(target)}: fine-tuning has little left to add. Use the data's system prompt with {k} similar "
               f"examples (≈ {prompting['prompt_tokens']['k_shot']:.0f} prompt tokens per request)."]  # fmt: skip
    elif (in_question or 0) < IN_QUESTION and hit_rate >= RETRIEVAL_HIT:
        choice = "retrieval (RAG)"
        why = [
            f"The answers are facts that are not in the questions, and retrieving similar records finds them "
            f"{_pct(hit_rate)} of the time: serve them from the data (index the table; put what is retrieved in "
            f"the prompt), so that a changed fact is one edit, not a new training run.",
            f"Retrieved examples in the prompt already lift {key} from {_pct(zero['value'])} to "
            f"{_pct(shot['value'])}; a retriever over the source table, rather than over past questions, should "
            "do better still. Fine-tuning would have to memorise every fact and be retrained when one changes.",
        ]
    else:
        choice = "fine-tuning (LoRA)"
        cost = figures["fine_tune"]
        cheapest = cost.get("cheapest")
        price = "no GPU of the table fits"
        if cheapest:
            price = (f"≈ ${cheapest['cost_usd']:.4f} on one {cheapest['gpu']} ({cheapest['seconds']:.1f} s at "
                     f"${cheapest['hourly_usd']}/h, MFU {cost['mfu']:.0%} assumed)")  # fmt: skip
        source = f"retrieving similar records finds the answer for only {_pct(hit_rate)} of questions"
        if (in_question or 0) >= IN_QUESTION:
            source = "the answers come from the input, so retrieval has nothing to add"
        why = [f"Prompting falls short: the best prompt reaches {_pct(shot['value'])} {key}, below the target of "
               f"{_pct(target)}; {source}.",
               f"LoRA (r 16, every linear layer; {cost['parameters']['trainable']:,} trained parameters) for "
               f"{cost['epochs']} epochs over {cost['tokens_per_epoch']:,} tokens: {price}. `tunelab estimate` "
               "measures this machine's time once you have a recipe.",
               f"How much data: you have {data['records']} records; {QUICKSTART_REFERENCE}. Hold out a test set "
               "and compare base, prompted and tuned in one run (`tunelab run`: eval.baselines)."]  # fmt: skip
    return {"choice": choice, "goal": goal, "key_metric": key, "reasons": why, "measured": facts}


def describe(result: dict[str, Any]) -> list[str]:
    advice = result["advice"]
    lines = [f"Advice for {result['file']} ({result['model']}): {advice['choice'].upper()}"]
    if advice.get("goal"):
        lines.append(f"goal: {advice['goal']}")
    lines += ["", "Why:", *(f"- {line}" for line in advice["reasons"])]
    return lines + ["", "Measured:", *(f"- {line}" for line in advice["measured"])]
