"""How a merged export is checked against the trained adapter model, by what the stage produces: a policy must give
the same greedy answers (and logits within rounding) on the run's own prompts."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MergeCheck:
    verify: Callable[..., dict[str, Any]]  # (adapter model, merged model, tokenizer, records, count) → verification
    describe: Callable[[dict[str, Any]], str]  # the verification in one line


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


# Stage.produces → how its merged model is verified
MERGE_CHECKS: dict[str, MergeCheck] = {"policy": MergeCheck(verify_policy, describe_policy)}
