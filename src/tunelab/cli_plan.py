"""`tunelab estimate` and `tunelab advise`: the commands that plan a run before it runs (cli.py dispatches to them)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def estimate_command(args: argparse.Namespace) -> int:
    from tunelab.estimate import describe, estimate, estimate_path
    from tunelab.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    gpus = [name.strip() for value in args.gpu or [] for name in value.split(",") if name.strip()]
    result = estimate(recipe, gpus or None, args.prices, args.mfu, None if args.no_calibrate else args.steps)
    print("\n".join(describe(result)) + f"\nwritten to {estimate_path(recipe)}")
    return 0


def advise_command(args: argparse.Namespace) -> int:
    from tunelab.advice_text import describe
    from tunelab.advise import advise

    result = advise(args.data, args.model, args.goal, args.sample, args.k, args.target)
    print("\n".join(describe(result)))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0
