"""How each method is applied: a PEFT LoRA adapter, the whole model, or only the last layers (model/methods.py holds
the table that names them)."""

from __future__ import annotations

from typing import Any

from tunelab.config.schema import FreezeMethod, LoraMethod
from tunelab.errors import RecipeError


def lora_config(method: LoraMethod, task_type: str = "CAUSAL_LM"):
    from peft import LoraConfig

    return LoraConfig(
        task_type=task_type,  # SEQ_CLS (a reward model) also trains and saves the new score head
        r=method.r,
        lora_alpha=method.alpha,
        lora_dropout=method.dropout,
        target_modules=method.target_modules,
        use_dora=method.use_dora,
        use_rslora=method.use_rslora,
    )


def wrap_with_lora(model, method: LoraMethod) -> Any:
    """The model wrapped with a trainable PEFT LoRA adapter; the base weights stay frozen."""
    from peft import get_peft_model

    try:
        return get_peft_model(model, lora_config(method, _task_type(model)))
    except ValueError as error:  # e.g. target modules that do not exist in this model
        raise RecipeError("recipe", [("method.target_modules", str(error))]) from None


def _task_type(model) -> str:
    return "SEQ_CLS" if type(model).__name__.endswith("ForSequenceClassification") else "CAUSAL_LM"


def train_everything(model, method) -> Any:
    """Full fine-tuning: every parameter stays trainable."""
    return model


def freeze_all_but_last_layers(model, method: FreezeMethod) -> Any:
    layers = decoder_layers(model)
    if method.trainable_layers > len(layers):
        raise RecipeError(
            "recipe",
            [("method.trainable_layers", f"the model has {len(layers)} layers; choose at most {len(layers)}")],
        )
    for parameter in model.parameters():
        parameter.requires_grad = False
    for layer in layers[-method.trainable_layers :]:
        for parameter in layer.parameters():
            parameter.requires_grad = True
    if method.train_embeddings:
        model.get_input_embeddings().weight.requires_grad = True
    if method.train_head:
        model.get_output_embeddings().weight.requires_grad = True
    return model


def decoder_layers(model) -> list:
    """The decoder blocks of a causal LM (`model.model.layers` in llama-like models)."""
    base = getattr(model, "model", model)
    layers = getattr(base, "layers", None) or getattr(getattr(base, "decoder", None), "layers", None)
    if layers is None:
        raise RecipeError("recipe", [("method.type", "freeze: cannot find this model's decoder layers; use lora")])
    return list(layers)


def count_parameters(model) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}
