"""`tunelab data preview`: one training example as the model sees it, with the trained spans marked."""

from __future__ import annotations

from tunelab.config.schema import Recipe
from tunelab.errors import DataError


def preview_recipe(recipe: Recipe, index: int = 0) -> None:
    from rich.console import Console

    from tunelab.data.pipeline import load_recipe_sets
    from tunelab.data.tokenize import ensure_chat_template, render_preview_rich, tokenize_examples
    from tunelab.model.load import load_tokenizer

    loaded = load_recipe_sets(recipe.data, recipe.seed, recipe.stage)
    if loaded.invalid:
        first = loaded.invalid[0]
        console_note = f"{len(loaded.invalid)} invalid records are left out (first: {first.where}: {first.problem})"
        print(console_note)
    records = loaded.train
    if not 0 <= index < len(records):
        raise DataError("--index", f"{index} is out of range: there are {len(records)} training records")
    tokenizer = load_tokenizer(recipe.model.name)
    fallback = ensure_chat_template(tokenizer)
    rows, stats = tokenize_examples([records[index]], tokenizer, recipe.data.max_length)
    console = Console()
    console.print(f"record {records[index]['id']} ({records[index].get('source', '')})", style="bold")
    if fallback:
        console.print("(the model has no chat template; tunelab's ChatML fallback is used)", style="yellow")
    if not rows:
        console.print(f"this record has no trainable token within max_length={recipe.data.max_length}", style="red")
        return
    row = rows[0]
    trained = sum(1 for label in row["labels"] if label != -100)
    console.print(f"{len(row['input_ids'])} tokens, {trained} trained (highlighted):", style="dim")
    console.print(render_preview_rich(tokenizer, row["input_ids"], row["labels"]))
    if stats.get("truncated"):
        console.print(f"truncated to max_length={recipe.data.max_length}", style="yellow")
