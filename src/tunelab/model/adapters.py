"""How the methods that are not one PEFT config are applied: QLoRA (quantise, then LoRA), the whole model, or only the
last layers (model/methods.py holds the table that names them; model/peft_methods.py the PEFT configs)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunelab.config.method_schema import QloraMethod
from tunelab.config.schema import FreezeMethod
from tunelab.errors import RecipeError
from tunelab.model.peft_methods import wrap_with_peft


def wrap_with_qlora(model, method: QloraMethod) -> Any:
    """QLoRA: the base model's linear layers quantised in place (bitsandbytes), then a LoRA adapter on them; with
    init: loftq, A and B start from LoftQ (the quantisation error's low-rank approximation) instead of B = 0."""
    from tunelab.model.quantized_base import quantize_linear_layers

    source = _safetensors_file(model) if method.init == "loftq" else None
    quantize_linear_layers(model, method.bits, method.quant_type, method.double_quant)
    wrapped = wrap_with_peft(model, method)
    if source is not None:
        from peft import replace_lora_weights_loftq

        replace_lora_weights_loftq(wrapped, model_path=str(source))
    return wrapped


def _safetensors_file(model) -> Path:
    """LoftQ reads the original weights from the model's single safetensors file."""
    source = Path(model.config.name_or_path) / "model.safetensors"
    if not source.is_file():
        why = f"loftq reads the original weights from {source}, which does not exist (a sharded or hub model)"
        raise RecipeError("recipe", [("method.init", f"{why}; use init: default")])
    return source


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
