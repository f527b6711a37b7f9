"""The training stages as one shape, and the registry that is the only dispatch on a recipe's `stage:`.

A stage differs from another in a few hooks only: the records it reads, how it builds its datasets, its TRL config
class and trainer, how its result is evaluated, and what it produces (a policy that generates, or a reward model that
scores). Everything else — the run directory, resume, graceful stop, trackers, saving — is `train/fit.py`'s, for all.

Adding a stage = one module (shaped like train/sft.py) + one line in STAGES + its name in config/schema.py's
`StageName` + its test + its example recipe; tests/train/test_stages.py checks the registry and the schema agree.
"""

from __future__ import annotations

from collections.abc import Callable

from tunelab.errors import RecipeError
from tunelab.train.stage import Stage


def _load(module: str, name: str) -> Callable[[], Stage]:
    """A stage from its module, imported when asked for (a stage's module imports its TRL trainer)."""

    def load() -> Stage:
        import importlib

        return getattr(importlib.import_module(f"tunelab.train.{module}"), name)

    return load


# name → a function returning the stage, so that listing the names imports no trainer
STAGES: dict[str, Callable[[], Stage]] = {
    "sft": _load("sft", "SFT"),
    "rm": _load("rm", "RM"),
    "dpo": _load("dpo", "DPO"),
    "kto": _load("kto", "KTO"),
    "orpo": _load("orpo", "ORPO"),
    "simpo": _load("cpo", "SIMPO"),
    "cpo": _load("cpo", "CPO"),
    "grpo": _load("grpo", "GRPO"),
    "rloo": _load("rloo", "RLOO"),
    "ppo": _load("ppo", "PPO"),
}


def get_stage(name: str) -> Stage:
    if name not in STAGES:
        raise RecipeError("recipe", [("stage", f"unknown stage {name!r}; choose from {', '.join(STAGES)}")])
    return STAGES[name]()
