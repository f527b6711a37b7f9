"""The methods as a table: what each trains, what it saves, whether it can merge. Nothing outside this table asks
which method a recipe uses; it asks the method's entry.

Adding a method = its schema class in config/schema.py (the `Method` union), one entry here, its test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tunelab.model.adapters import freeze_all_but_last_layers, train_everything, wrap_with_lora


@dataclass(frozen=True)
class MethodSpec:
    name: str
    saves: Literal["adapter", "model"]  # a PEFT adapter folder beside the base model, or a complete model folder
    can_merge: bool  # an adapter that merges into its base model (export.merge)
    apply: Callable[[Any, Any], Any]  # (model, method section) → the model to train
    summary: str

    def saved_folder(self, run) -> Path:
        """Where a run keeps what this method trained: adapter/ or merged/."""
        return run.adapter if self.saves == "adapter" else run.merged

    def saved_marker(self, run) -> Path:
        """The file that is there once the trained result is saved completely."""
        return self.saved_folder(run) / ("adapter_config.json" if self.saves == "adapter" else "config.json")

    def load_saved(self, run, base_model) -> Any:
        """The trained model a run saved: its adapter on `base_model`, or the full model folder."""
        if self.saves == "adapter":
            from peft import PeftModel

            return PeftModel.from_pretrained(base_model, str(self.saved_folder(run)))
        return type(base_model).from_pretrained(self.saved_folder(run), dtype=base_model.dtype)  # same head as trained


METHODS: dict[str, MethodSpec] = {
    "lora": MethodSpec("lora", "adapter", True, wrap_with_lora, "a LoRA adapter (DoRA, rsLoRA as options)"),
    "full": MethodSpec("full", "model", False, train_everything, "every weight of the model"),
    "freeze": MethodSpec("freeze", "model", False, freeze_all_but_last_layers, "only the last decoder layers"),
}


def method_spec(method: Any) -> MethodSpec:
    """The table's entry for a recipe's method section (or a method name)."""
    return METHODS[method if isinstance(method, str) else method.type]


def apply_method(model, method) -> Any:
    """The model to train, prepared as the recipe's method says."""
    return method_spec(method).apply(model, method)
