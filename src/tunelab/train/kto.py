"""KTO: unpaired feedback (prompt, completion, desirable or not) → TRL's KTOTrainer, against the starting model as
reference. Preference pairs are accepted too: each becomes a desirable and an undesirable example. Evaluated on
held-out pairs as train/preference.py says (unpaired training data may be held out on pairs: `kinds.sets_kind`), or,
for unpaired test data, with the generation metrics on the desirable completions."""

from __future__ import annotations

from pathlib import Path

from tunelab.config.schema import Recipe
from tunelab.data.kinds import as_unpaired
from tunelab.data.pipeline import RecipeData
from tunelab.train.pairs import UNPAIRED_COLUMNS, build_preference_splits
from tunelab.train.preference import evaluate_preference, policy_stage, reference_description


def kto_classes() -> tuple[type, type]:
    from trl import KTOConfig, KTOTrainer

    return KTOTrainer, KTOConfig


def build_datasets(recipe_data: RecipeData, recipe: Recipe, tokenizer, clusters):
    """Split as the other stages (a pair's two examples stay on one side), then unpair."""
    return build_preference_splits(recipe_data, recipe, tokenizer, clusters, UNPAIRED_COLUMNS, transform=as_unpaired)


def evaluate(model, tokenizer, records: list[dict], recipe: Recipe, eval_dir: Path, label: str) -> dict[str, float]:
    if records and all("chosen" in record for record in records):
        return evaluate_preference(model, tokenizer, records, recipe, eval_dir, label, implicit_reward=True)
    from tunelab.train.sft import evaluate as evaluate_generation

    wanted = [{"id": r.get("id"), "category": r.get("category"), "messages": [*r["prompt"], *r["completion"]]}
              for r in records if r.get("label")]  # fmt: skip
    return evaluate_generation(model, tokenizer, wanted, recipe, eval_dir, label)


KTO = policy_stage(
    "kto", "Kahneman-Tversky optimisation on unpaired desirable / undesirable answers (pairs are split)", kto_classes,
    describe=reference_description, reads="unpaired", build_datasets=build_datasets, evaluate=evaluate,
    test_warnings=lambda records, tokenizer, recipe: [],
)  # fmt: skip
