"""The methods as a table: what each trains, what it saves, whether it can merge. Nothing outside this table asks
which method a recipe uses; it asks the method's entry.

Adding a method = its schema class in config/method_schema.py (the `MethodSection` union), one entry here, its test.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tunelab.model.adapters import freeze_all_but_last_layers, quantize_base, train_everything, wrap_with_qlora
from tunelab.model.peft_methods import load_adapter, wrap_with_peft
from tunelab.model.quantized_base import loading_options

VIRTUAL_TOKENS = "it adds trained virtual tokens in front of the input, not a change to the weights"


@dataclass(frozen=True)
class MethodSpec:
    name: str
    saves: Literal["adapter", "model"]  # a PEFT adapter folder beside the base model, or a complete model folder
    apply: Callable[[Any, Any], Any]  # (model, method section) → the model to train
    summary: str
    no_merge: str | None = None  # why the trained result does not merge into its base model (None: it does)
    virtual_tokens: bool = False  # tokens of its own before every sequence: no packing, PEFT's forward takes labels
    merges_full_precision: bool = False  # not merged in the run, but `tunelab export --merged` merges it (QLoRA)
    prepare_base: Callable[[Any, Any], Any] | None = None  # (base model, method section) → the base it trained on
    loading: Callable[[Any], dict[str, Any]] | None = None  # method section → `from_pretrained` arguments
    low_precision_base: bool = False  # frozen embeddings held in bf16 too while training (train/frozen_bf16.py)

    def loading_options(self, method) -> dict[str, Any]:
        """How the base model is loaded for this method (QLoRA: quantised while loading)."""
        return self.loading(method) if self.loading is not None else {}

    @property
    def can_merge(self) -> bool:
        """An adapter that merges into its base model (export.merge)."""
        return self.no_merge is None

    @property
    def exports_merged(self) -> bool:
        """`tunelab export --merged` makes a complete model folder of the run (merged, or the full model itself)."""
        return self.saves == "model" or self.can_merge or self.merges_full_precision

    def saved_folder(self, run) -> Path:
        """Where a run keeps what this method trained: adapter/ or merged/."""
        return run.adapter if self.saves == "adapter" else run.merged

    def saved_marker(self, run) -> Path:
        """The file that is there once the trained result is saved completely."""
        return self.saved_folder(run) / ("adapter_config.json" if self.saves == "adapter" else "config.json")

    def load_saved(self, run, base_model, method=None) -> Any:
        """The trained model a run saved: its adapter on `base_model` (prepared as in training when the method
        section is given: QLoRA's quantised base), or the full model folder."""
        if self.saves == "adapter":
            if self.prepare_base is not None and method is not None:
                base_model = self.prepare_base(base_model, method)
            return load_adapter(base_model, self.saved_folder(run))
        return type(base_model).from_pretrained(self.saved_folder(run), dtype=base_model.dtype)  # same head as trained


def _adapter(name: str, summary: str, no_merge: str | None = None, virtual_tokens: bool = False) -> MethodSpec:
    return MethodSpec(name, "adapter", wrap_with_peft, summary, no_merge, virtual_tokens)


FULL_MODEL = "it saves a full model; there is nothing to merge"
BOTTLENECK_NO_MERGE = (
    "a bottleneck adapter has a nonlinearity between its two projections: it is a module of its own, not a change "
    "to the weights"
)
QUANTISED = (
    "its base model was quantised while training; merging into a quantised base loses precision. Merge the adapter "
    "into the full-precision base instead: tunelab export <run> --merged (verified against the adapter)"
)

METHODS: dict[str, MethodSpec] = {
    "lora": _adapter("lora", "a LoRA adapter (DoRA, rsLoRA, PiSSA/OLoRA initialisation, LoRA+ as options)"),
    "qlora": MethodSpec("qlora", "adapter", wrap_with_qlora, "a LoRA adapter on a 4- or 8-bit quantised base",
                        no_merge=QUANTISED, merges_full_precision=True, prepare_base=quantize_base,
                        loading=lambda m: loading_options(m.bits, m.quant_type, m.double_quant),
                        low_precision_base=True),
    "full": MethodSpec("full", "model", train_everything, "every weight of the model", FULL_MODEL),
    "freeze": MethodSpec("freeze", "model", freeze_all_but_last_layers, "only the last decoder layers", FULL_MODEL),
    "vera": _adapter("vera", "VeRA: shared frozen random matrices, trained scaling vectors"),
    "loha": _adapter("loha", "LoHa: a Hadamard product of two low-rank updates"),
    "lokr": _adapter("lokr", "LoKr: a Kronecker product update"),
    "ia3": _adapter("ia3", "IA³: trained scaling of keys, values and feed-forward activations"),
    "prefix": _adapter("prefix", "prefix tuning: trained keys and values before every layer's attention",
                       no_merge=f"prefix tuning has nothing to merge: {VIRTUAL_TOKENS}", virtual_tokens=True),
    "prompt": _adapter("prompt", "prompt tuning: trained input embeddings before every input",
                       no_merge=f"prompt tuning has nothing to merge: {VIRTUAL_TOKENS}", virtual_tokens=True),
    "ptuning": _adapter("ptuning", "P-tuning: virtual tokens produced by a trained prompt encoder",
                        no_merge=f"P-tuning has nothing to merge: {VIRTUAL_TOKENS}", virtual_tokens=True),
    "llama_adapter": _adapter("llama_adapter", "LLaMA-Adapter: gated adaption prompts in the top layers",
                              no_merge="LLaMA-Adapter has nothing to merge: its gated adaption prompts are extra "
                              "attention inputs, not a change to the weights"),
    "bottleneck": _adapter("bottleneck", "bottleneck adapters after attention and MLP (Houlsby) or the MLP (Pfeiffer)",
                           no_merge=BOTTLENECK_NO_MERGE),
}  # fmt: skip


def method_spec(method: Any) -> MethodSpec:
    """The table's entry for a recipe's method section (or a method name)."""
    return METHODS[method if isinstance(method, str) else method.type]


def apply_method(model, method) -> Any:
    """The model to train, prepared as the recipe's method says."""
    return method_spec(method).apply(model, method)
