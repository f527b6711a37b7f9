"""How a merged export is made and checked against the trained adapter model, by what the stage produces: a policy
must give the same greedy answers (and logits within rounding) on the run's own prompts; a reward model the same
scores (within rounding) and so the same preference on the run's own held-out pairs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MergeCheck:
    verify: Callable[..., dict[str, Any]]  # (adapter model, merged model, tokenizer, records, count) → verification
    describe: Callable[[dict[str, Any]], str]  # the verification in one line
    load_base: Callable[[Any], Any]  # base model folder → the model the adapter was trained on, fp32
    load_merged: Callable[[Any], Any]  # merged folder → the merged model, as a user would load it


def _causal_lm(folder):
    from tunelab.export.merge import load_causal_lm

    return load_causal_lm(folder)


def _load_merged_policy(folder):
    from tunelab.export.merge import load_merged

    return load_merged(folder)


def _reward_base(folder):
    from tunelab.model.reward import reward_model_from_folder

    return reward_model_from_folder(str(folder))[0]


def verify_policy(adapter_model, merged_model, tokenizer, records: list[dict], count: int) -> dict[str, Any]:
    from tunelab.data.tokenize import prompt_ids_for_generation
    from tunelab.export.merge import verify_merge

    chosen = records[: max(1, count)]
    # a conversation's prompt is all but its last answer; a preference record carries its prompt alone
    prompts = [prompt_ids_for_generation(tokenizer, r.get("messages") or r["prompt"], r.get("tools")) for r in chosen]
    return verify_merge(adapter_model, merged_model, tokenizer, prompts)


def describe_policy(check: dict[str, Any]) -> str:
    verdict = "identical" if check["identical_outputs"] else "DIFFERENT"
    return f"merged vs adapter: {verdict} greedy outputs, max |Δlogit| {check['max_abs_logit_diff']:.2e}"


def verify_reward_model(adapter_model, merged_model, tokenizer, records: list[dict], count: int) -> dict[str, Any]:
    """Both models score both sides of the first `count` held-out pairs (or conversations): scores within rounding,
    and the same side preferred in every pair."""
    from tunelab.eval.preference import reward_model_scorer

    chosen = records[: max(1, count)]
    pairs = "chosen" in chosen[0]
    if pairs:
        texts = [(r["prompt"], r[side]) for r in chosen for side in ("chosen", "rejected")]
    else:
        texts = [(r["messages"][:-1], r["messages"][-1:]) for r in chosen]
    before = [reward_model_scorer(adapter_model, tokenizer)(prompt, answer) for prompt, answer in texts]
    after = [reward_model_scorer(merged_model, tokenizer)(prompt, answer) for prompt, answer in texts]
    worst = max(abs(a - b) for a, b in zip(before, after, strict=True))
    # for pairs, the side each model prefers; conversations have no sides, only their scores to compare
    same_order = not pairs or all(
        (before[i] > before[i + 1]) == (after[i] > after[i + 1]) for i in range(0, len(texts) - 1, 2)
    )
    return {"identical_preferences": same_order, "max_abs_score_diff": worst, "texts": len(texts),
            "identical_outputs": same_order and worst < 1e-3,
            "examples": [{"adapter": a, "merged": b} for a, b in zip(before[:4], after[:4], strict=True)]}  # fmt: skip


def describe_reward_model(check: dict[str, Any]) -> str:
    verdict = "the same" if check["identical_preferences"] else "DIFFERENT"
    return f"merged vs adapter: {verdict} preferences, max |Δscore| {check['max_abs_score_diff']:.2e}"


# Stage.produces → how its merged model is made and verified
MERGE_CHECKS: dict[str, MergeCheck] = {
    "policy": MergeCheck(verify_policy, describe_policy, _causal_lm, _load_merged_policy),
    "reward_model": MergeCheck(verify_reward_model, describe_reward_model, _reward_base, _reward_base),
}
