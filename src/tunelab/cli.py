"""The command line: a table of verbs, each a few lines that call the library.

Imports are lazy so that `tunelab --help` answers at once. A `TunelabError` is printed without a traceback and the
process exits non-zero (2 for recipe problems, 1 for the rest).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable


def _recipe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="the recipe YAML file")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. train.max_steps=20")


def run_command(args: argparse.Namespace) -> int:
    from tunelab.config.load import load_recipe
    from tunelab.report import print_outcome
    from tunelab.workflow import run_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    outcome = run_recipe(recipe, resume=args.resume, overwrite=args.overwrite)
    print_outcome(outcome)
    return 0 if outcome.state == "completed" else 130


def validate_command(args: argparse.Namespace) -> int:
    from tunelab.config.load import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    print(f"{args.recipe}: valid (run {recipe.name!r}, method {recipe.method.type}, model {recipe.model.name})")
    return 0


def chat_command(args: argparse.Namespace) -> int:
    from tunelab.chat import chat_loop, load_chat_model, one_answer

    session = load_chat_model(args.target, system=args.system, max_new_tokens=args.max_new_tokens)
    if args.prompt is not None:
        print(one_answer(session, args.prompt))
        return 0
    chat_loop(session)
    return 0


def data_preview_command(args: argparse.Namespace) -> int:
    from tunelab.config.load import load_recipe
    from tunelab.preview import preview_recipe

    preview_recipe(load_recipe(args.recipe, args.overrides), index=args.index)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tunelab", description="Fine-tune, evaluate and export language models.")
    parser.add_argument("--version", action="version", version=_version())
    verbs = parser.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True

    run = verbs.add_parser("run", help="data → baseline eval → fine-tune → eval → merged export")
    _recipe_arguments(run)
    run.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    run.add_argument("--overwrite", action="store_true", help="delete an existing run of the same name first")
    run.set_defaults(func=run_command)

    validate = verbs.add_parser("validate", help="check a recipe without training")
    _recipe_arguments(validate)
    validate.set_defaults(func=validate_command)

    chat = verbs.add_parser("chat", help="talk to a run's model or any model")
    chat.add_argument("target", help="a run directory, a model folder, a .gguf file or a built-in alias")
    chat.add_argument("--prompt", help="answer this one prompt and exit")
    chat.add_argument("--system", help="a system prompt (default for a run: the one all its training records share)")
    chat.add_argument("--max-new-tokens", type=int, default=256)
    chat.set_defaults(func=chat_command)

    data = verbs.add_parser("data", help="data tools")
    data_verbs = data.add_subparsers(dest="data_verb", metavar="DATA_VERB")
    data_verbs.required = True
    preview = data_verbs.add_parser("preview", help="print one tokenized example with the trained spans marked")
    _recipe_arguments(preview)
    preview.add_argument("--index", type=int, default=0, help="which training example to show")
    preview.set_defaults(func=data_preview_command)
    return parser


def _version() -> str:
    from tunelab import __version__

    return f"tunelab {__version__}"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Deprecation notices from upstream libraries are for library authors, not for tunelab's users.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    parser = build_parser()
    # Overrides may come before or after flags (`run r.yaml --resume train.max_steps=8`): argparse stops collecting
    # a `nargs="*"` positional at the first flag, so the rest is gathered here.
    args, extra = parser.parse_known_args(argv)
    stray = [item for item in extra if item.startswith("-") or "=" not in item or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    func: Callable[[argparse.Namespace], int] = args.func
    from tunelab.errors import TunelabError

    try:
        return func(args)
    except TunelabError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
