"""Continual training's data: the previous generation's records beside the new ones (`continue_from`, `data.replay`).

A run that continues another (`tunelab run recipe.yaml --continue-from runs/orders-v1`) starts from that run's trained
model and reads that run's data again, from the files its saved recipe names and the ids its `data/splits.json`
lists:

- `data.replay: r` mixes in a seeded sample of the previous training split, so that it makes up the share r of the
  new training set (r·n/(1−r) records for n new ones, at most all of them); each keeps its text, with its id
  prefixed by the previous run's name.
- The audit sees both generations: the previous training split (not replayed: "previous_train", a training role, as
  the starting model learnt it) and the previous test split ("previous_test", an evaluation role). A new test record
  that the previous model was trained on is leakage, and so is a previous test record in the new training data.
- The previous test records the audit keeps are evaluated after training (eval/previous/), paired with the previous
  run's own predictions for them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunelab.errors import DataError

PREVIOUS_TRAIN = "previous_train"
PREVIOUS_TEST = "previous_test"


@dataclass
class PreviousGeneration:
    run: Path
    recipe: Any  # the previous run's Recipe, as it was run (its eval settings score its test set)
    train: list[dict] = field(default_factory=list)  # its training split, as trained
    test: list[dict] = field(default_factory=list)  # its test split, as evaluated
    replayed: list[str] = field(default_factory=list)  # ids (as in the previous run) mixed into the new training set

    @property
    def name(self) -> str:
        return self.run.name

    def tagged(self, record: dict) -> dict:
        return {**record, "id": f"{self.name}:{record.get('id')}", "generation": self.name}

    def kept_test(self, audited: list[dict]) -> list[dict]:
        """The previous test records still in the audited set (`data.leakage: drop` may have left some out)."""
        kept = {record["id"] for record in audited}
        return [record for record in self.test if self.tagged(record)["id"] in kept]


def _by_ids(records: list[dict], ids: list[Any]) -> list[dict]:
    by_id = {str(record.get("id")): record for record in records}
    return [by_id[str(i)] for i in ids if str(i) in by_id]


def read_previous(run_path: str | Path) -> PreviousGeneration:
    """The previous run's recipe, training split and test split, read again from the files it names."""
    from tunelab.config.load import load_recipe
    from tunelab.data.pipeline import load_recipe_sets
    from tunelab.runs import read_json

    run = Path(run_path)
    recipe = load_recipe(run / "recipe.yaml")
    ids = read_json(run / "data" / "splits.json")
    if not isinstance(ids, dict):
        raise DataError(f"continue_from {run}", "the run has no data/splits.json (it stopped before its data was "
                        "split)", "continue from a finished run")  # fmt: skip
    data = load_recipe_sets(recipe.data, recipe.seed, recipe.stage)
    train = _by_ids(data.train, ids.get("train", []) + ids.get("validation", []))
    test = _by_ids(data.sets.get("test", []), ids.get("test", []))
    if len(train) < len(ids.get("train", [])):
        raise DataError(f"continue_from {run}", f"only {len(train)} of its {len(ids['train'])} training records are in "
                        "the files its recipe names now (were they edited or moved?)",
                        "restore the previous generation's data files, or set data.replay: 0")  # fmt: skip
    return PreviousGeneration(run, recipe, train, test)


def replay_count(new: int, available: int, share: float) -> int:
    """How many previous records make up `share` of a training set with `new` new records (at most `available`)."""
    if share <= 0:
        return 0
    return min(available, round(share * new / (1 - share)))


def add_previous_generation(recipe_data, previous: PreviousGeneration, share: float, seed: int) -> dict[str, Any]:
    """Mix the replayed records into the training set and add both previous splits for the audit; returns (and
    keeps in `recipe_data.continual`) the summary that data/summary.json shows."""
    count = replay_count(len(recipe_data.train), len(previous.train), share)
    chosen = random.Random(seed).sample(range(len(previous.train)), count)
    replayed = [previous.train[i] for i in sorted(chosen)]
    previous.replayed = [str(r.get("id")) for r in replayed]
    replayed_ids = set(previous.replayed)
    recipe_data.sets["train"] = recipe_data.train + [previous.tagged(r) for r in replayed]
    rest = [previous.tagged(r) for r in previous.train if str(r.get("id")) not in replayed_ids]
    recipe_data.sets[PREVIOUS_TRAIN] = rest
    recipe_data.roles[PREVIOUS_TRAIN] = "train"
    if previous.test:
        recipe_data.sets[PREVIOUS_TEST] = [previous.tagged(r) for r in previous.test]
        recipe_data.roles[PREVIOUS_TEST] = "eval"
    recipe_data.previous = previous
    total = len(recipe_data.train)
    recipe_data.continual = {"run": str(previous.run), "replay": share, "replayed": count, "new": total - count,
            "share": round(count / total, 4) if total else 0.0, "previous_test": len(previous.test)}  # fmt: skip
    return recipe_data.continual


def with_previous_generation(recipe, recipe_data) -> None:
    """A recipe with `continue_from`: its previous generation added to `recipe_data` (the audit sees both)."""
    if recipe.continue_from:
        add_previous_generation(recipe_data, read_previous(recipe.continue_from), recipe.data.replay, recipe.seed)
