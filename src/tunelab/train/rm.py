"""Reward model: preference pairs → the starting model with a scalar head (`num_labels=1`) → TRL's RewardTrainer
(Bradley–Terry loss: the chosen conversation should score higher). Evaluated on held-out pairs: the reward model's
pair accuracy against the starting model's own log-likelihood preference and the "longer answer wins" rule."""

from __future__ import annotations

from pathlib import Path

from tunelab.config.schema import Recipe
from tunelab.train.preference import policy_stage


def rm_classes() -> tuple[type, type]:
    from trl import RewardConfig, RewardTrainer

    return RewardTrainer, RewardConfig


def is_reward_model(model) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return type(base).__name__.endswith("ForSequenceClassification")


def with_score_head(model):
    """The loaded causal LM as a sequence classifier with one output: its weights, plus a new scalar head."""
    from tunelab.model.reward import reward_model_from_folder

    reward_model, _ = reward_model_from_folder(model.name_or_path)
    return reward_model.to(model.dtype).train()


def evaluate(model, tokenizer, records: list[dict], recipe: Recipe, eval_dir: Path, label: str) -> dict[str, float]:
    """Pair accuracy on held-out pairs: the reward model's score, or (for the starting causal LM) its log-likelihood."""
    from tunelab.eval.preference import evaluate_pairs, log_likelihood_scorer, reward_model_scorer
    from tunelab.runs import write_json

    model.eval()
    if is_reward_model(model):
        scorer, name = reward_model_scorer(model, tokenizer), "reward model score"
    else:
        scorer, name = log_likelihood_scorer(model, tokenizer), "log-likelihood of the answer (the starting model)"
    report = evaluate_pairs(records, scorer, name, eval_dir / f"predictions_{label}.jsonl", label)
    write_json(eval_dir / f"report_{label}.json", report)
    return report["metrics"]


RM = policy_stage(
    "rm", "a reward model: a scalar score trained so the chosen answer scores above the rejected one", rm_classes,
    describe=lambda recipe, model: {}, produces="reward_model", evaluate=evaluate, prepare_model=with_score_head,
    test_warnings=lambda records, tokenizer, recipe: [],
)  # fmt: skip
