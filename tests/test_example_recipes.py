"""Every recipe under examples/ loads and validates as a user would run it (with the tiny model in place of the
finished run or built-in model it names), so a key renamed in the library cannot leave an example broken."""

from pathlib import Path

import pytest

from tunelab.recipe import load_recipe

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
RECIPES = sorted(EXAMPLES.glob("*/*.yaml"))


def test_the_examples_hold_recipes() -> None:
    assert {path.parent.name for path in RECIPES} >= {"quickstart", "preference", "rl", "continual"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda path: f"{path.parent.name}/{path.name}")
def test_an_example_recipe_validates(path: Path, tiny_model_dir: Path) -> None:
    continues = "continue_from:" in path.read_text()  # the run it continues is made by running another example
    recipe = load_recipe(path, [f"model.name={tiny_model_dir}", *(["continue_from=null", "data.replay=0"] * continues)])
    assert recipe.data.sources and recipe.data.test
    for source in recipe.data.sources:
        assert Path(source.path).is_file(), f"{path}: {source.path} is missing"


def test_the_ppo_example_has_the_settings_its_readme_measured(tiny_model_dir: Path) -> None:
    """examples/rl/README.md's ppo.yaml row: λ = 1, 4 answers per order, a value model that warms up first and learns
    at its own, higher rate (without which the policy drifted)."""
    recipe = load_recipe(EXAMPLES / "rl" / "ppo.yaml", [f"model.name={tiny_model_dir}"])
    assert recipe.stage == "ppo" and recipe.train["lam"] == 1.0 and recipe.train["num_generations"] == 4
    assert recipe.train["value_warmup"] == 2 and recipe.train["value_learning_rate"] == 3e-4
    assert recipe.train["max_steps"] == 100 and recipe.train["per_device_train_batch_size"] == 8
