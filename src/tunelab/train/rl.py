"""What the RL stages (grpo, rloo, ppo) share: prompt datasets, rollouts with tunelab's decoder, the rewards, and
evaluation (generation metrics on the held-out conversations, as for SFT).

An RL stage trains on prompts. Each training record gives one: a conversation (`messages`; its last assistant answer
becomes the record's `reference`, which field_accuracy and exact_match compare with), or a preference pair (its
prompt, with the chosen answer as the reference) — so the quickstart's SFT data and the preference pairs both serve.
"""

from __future__ import annotations

from typing import Any

from tunelab.config.schema import Recipe
from tunelab.data.pipeline import RecipeData, Splits, split_validation
from tunelab.errors import DataError

PROMPT_COLUMNS = ("id", "prompt", "reference")


def prompt_record(record: dict, position: int, role: str) -> dict[str, Any]:
    """{"id", "prompt", "reference"} from a conversation (an RL run reads its pairs as conversations:
    `load_recipe_sets`); a DataError naming the record else."""
    record_id = str(record.get("id", position))
    if "messages" in record:
        messages = record["messages"]
        if len(messages) < 2 or messages[-1].get("role") != "assistant":
            raise DataError(f"{role} record {record_id}", "an RL prompt is the conversation before its last assistant "
                            "answer, and this one does not end with an assistant answer",
                            fix="end each conversation with the answer to compare with (the reference)")  # fmt: skip
        return {"id": record_id, "prompt": messages[:-1], "reference": str(messages[-1].get("content") or "")}
    raise DataError(f"{role} record {record_id}", "an RL stage reads prompts: conversations (messages) or preference "
                    "pairs (prompt + chosen)", fix="unpaired feedback (prompt, completion, label) is KTO's data: "
                    "use stage: kto")  # fmt: skip


def as_test_conversations(records: list[dict]) -> list[dict]:
    """Held-out records as SFT test records (the generation metrics): conversations as they are, pairs by prompt."""
    from tunelab.data.kinds import as_conversations

    if records and "messages" not in records[0]:
        return as_conversations(records)
    return records


def build_prompt_splits(recipe_data: RecipeData, recipe: Recipe, tokenizer, clusters) -> Splits:
    """Prompt datasets for TRL's online trainers: `prompt` (conversational), `reference` and `id` columns (TRL hands
    the extra columns to the reward functions)."""
    from datasets import Dataset

    train, validation = recipe_data.train, recipe_data.sets.get("validation", [])
    test = recipe_data.sets.get("test", [])[: recipe.eval.limit or None]
    if isinstance(recipe.data.validation, float):
        train, validation = split_validation(train, recipe.data, clusters, recipe.seed)
    train_prompts = [prompt_record(r, i, "training") for i, r in enumerate(train)]
    validation_prompts = [prompt_record(r, i, "validation") for i, r in enumerate(validation)]
    summary: dict[str, Any] = {
        "train": {"kept": len(train_prompts), "truncated": 0, "dropped_no_target": 0},
        "validation": {"kept": len(validation_prompts)},
        "test": {"total": len(test)},
        "ids": {"train": [p["id"] for p in train_prompts], "validation": [p["id"] for p in validation_prompts],
                "test": [str(r.get("id", i)) for i, r in enumerate(test)]},
    }  # fmt: skip
    if recipe.data.leakage == "drop":
        summary["dropped_leaked"] = recipe_data.dropped_leaked
    return Splits(
        train=Dataset.from_list(train_prompts),
        validation=Dataset.from_list(validation_prompts) if validation_prompts else None,
        test_records=as_test_conversations(test),
        summary=summary,
    )


def rl_test_warnings(records: list[dict], tokenizer, recipe: Recipe) -> list[str]:
    from tunelab.train.sft import test_warnings

    return test_warnings(as_test_conversations(records), tokenizer, recipe)


def rl_evaluate(model, tokenizer, records: list[dict], recipe: Recipe, eval_dir, label: str) -> dict[str, float]:
    """Greedy answers on the held-out prompts, scored with the recipe's metrics, as for SFT, and with the recipe's
    rewards: the `reward` metric, base vs tuned with a paired interval in the report. The reward of the rollout
    batches moves with which prompts a batch drew; on the same held-out prompts, answered greedily before and after
    training, it shows whether the policy learnt what it was rewarded for."""
    from tunelab.train.sft import evaluate

    conversations = as_test_conversations(records)
    return evaluate(model, tokenizer, conversations, recipe, eval_dir, label,
                    extra_scores=held_out_rewards(recipe, conversations, tokenizer))  # fmt: skip


def held_out_rewards(recipe: Recipe, conversations: list[dict], tokenizer):
    """rows → [{"reward": Σ weight · value}] for prediction rows (eval/heldout.py), each reward called as TRL calls
    it: the conversation before the answer, the answer as an assistant message and its token ids, the reference and
    the id."""
    from tunelab.train.rewards import build_rewards, weighted_total

    prompts = {str(r.get("id", i)): r["messages"][:-1] for i, r in enumerate(conversations)}

    def score(rows: list[dict]) -> list[dict]:
        if not rows:
            return []
        rewards = build_rewards(recipe.reward)
        columns = {
            "prompts": [prompts[str(row["id"])] for row in rows],
            "completions": [[{"role": "assistant", "content": row["prediction"]}] for row in rows],
            "completion_ids": [tokenizer(row["prediction"], add_special_tokens=False)["input_ids"] for row in rows],
            "reference": [row["reference"] for row in rows],
            "id": [row["id"] for row in rows],
        }
        values = [reward.fn(**columns) for reward in rewards]
        return [{"reward": round(total, 6)} for total in weighted_total(rewards, values)]

    return score
