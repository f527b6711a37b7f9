"""Where an adapter given as a run directory or an adapter folder is, what it brings (its tokenizer, its run's shared
training system prompt), with every broken file refused as an `AdapterUnusable` (a `ModelError`) that names the
path."""

from __future__ import annotations

from tunelab.errors import ModelError, TunelabError
from tunelab.serve.errors import AdapterUnusable


def resolve_adapter(path: str) -> tuple[str, str | None]:
    """(adapter folder, the run's shared training system prompt or None) for a run directory or an adapter folder."""
    import yaml

    from tunelab.model.targets import resolve_target

    try:
        target = resolve_target(path)
    except TunelabError as error:
        raise AdapterUnusable(str(error)) from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError) as error:  # e.g. recipe.yaml
        raise AdapterUnusable(f"{path}: not a readable run directory or adapter folder ({error})") from None
    folder = target.adapter or path
    return folder, None if target.run is None else _shared_system_prompt(target.run)


def _shared_system_prompt(run) -> str | None:
    """The run's shared training system prompt; none when data/summary.json is missing, unreadable or odd."""
    try:
        system = run.training_system_prompt()
    except AttributeError:  # summary.json holds JSON that is not an object
        return None
    return system if isinstance(system, str) and system else None


def adapter_tokenizer(folder: str, path: str, default):
    """The adapter's own tokenizer (saved beside it) with a chat template, else the base model's."""
    from pathlib import Path

    from transformers import AutoTokenizer

    from tunelab.data.tokenize import ensure_chat_template

    if not (Path(folder) / "tokenizer_config.json").is_file():
        return default
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except Exception as error:  # any broken tokenizer file: the adapter is refused before anything is loaded
        raise AdapterUnusable(f"{path}: cannot load the tokenizer saved with the adapter ({error})") from None
    try:
        ensure_chat_template(tokenizer)
    except ModelError as error:  # no template of its own and none to borrow
        raise AdapterUnusable(str(error)) from None
    return tokenizer
