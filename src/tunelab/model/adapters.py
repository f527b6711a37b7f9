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
    """QLoRA: the base model's linear layers quantised (while loading, see methods.py; in place for a model loaded
    in full precision), then a LoRA adapter on them; with init: loftq, A and B start from LoftQ (the quantisation
    error's low-rank approximation) instead of B = 0."""
    source = _safetensors_file(model) if method.init == "loftq" else None
    wrapped = wrap_with_peft(quantize_base(model, method), method)
    if source is not None:
        from tunelab.model.quantized_base import loftq_initialise

        loftq_initialise(wrapped, source)
    return wrapped


def quantize_base(model, method: QloraMethod) -> Any:
    """The model with its linear layers quantised as the QLoRA section says (in place)."""
    from tunelab.model.quantized_base import quantize_linear_layers

    quantize_linear_layers(model, method.bits, method.quant_type, method.double_quant)
    return model


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
    """Only the last `trainable_layers` decoder layers train (with progressive unfreezing, all the layers it will
    reach are made trainable here, so the optimizer holds them; train/method_training.py freezes the later ones
    until their step comes)."""
    layers = decoder_layers(model)
    count = _layers_to_train(method, len(layers))
    for parameter in model.parameters():
        parameter.requires_grad = False
    for layer in layers[-count:]:
        for parameter in layer.parameters():
            parameter.requires_grad = True
    if method.train_embeddings:
        model.get_input_embeddings().weight.requires_grad = True
    if method.train_head:
        model.get_output_embeddings().weight.requires_grad = True
    return model


def _layers_to_train(method: FreezeMethod, available: int) -> int:
    """How many layers will train at most; a recipe asking for more than the model has is refused."""
    problems = [(f"method.{field}", f"the model has {available} layers; choose at most {available}")
                for field in ("trainable_layers", "max_trainable_layers")
                if (getattr(method, field) or 0) > available]  # fmt: skip
    if method.max_trainable_layers is not None and method.max_trainable_layers < method.trainable_layers:
        problems.append(("method.max_trainable_layers", "must be at least trainable_layers"))
    if problems:
        raise RecipeError("recipe", problems)
    if method.unfreeze_every is None:
        return method.trainable_layers
    return method.max_trainable_layers or available


def decoder_layers(model) -> list:
    """The decoder blocks of a causal LM (`model.model.layers` in llama-like models)."""
    base = getattr(model, "model", model)
    layers = getattr(base, "layers", None) or getattr(getattr(base, "decoder", None), "layers", None)
    if layers is None:
        raise RecipeError("recipe", [("method.type", "freeze: cannot find this model's decoder layers; use lora")])
    return list(layers)


def count_parameters(model) -> dict[str, int]:
    """Total and trainable parameters; a 4-bit weight counts the values it packs (two per byte), as PEFT counts."""
    total = sum(_values(p) for p in model.parameters())
    trainable = sum(_values(p) for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


def _values(parameter) -> int:
    packed = type(parameter).__name__ == "Params4bit"
    return parameter.numel() * (2 * parameter.element_size() if packed else 1)
