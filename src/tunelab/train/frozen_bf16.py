"""Frozen base weights held in bf16 while an adapter trains in bf16 mixed precision; the fp32 originals come back after.

Under bf16 autocast every linear layer casts its fp32 weight to bf16 on every forward (and again when gradient
checkpointing recomputes a layer), and keeps that copy alive for the backward pass: for a LoRA run, whose base
weights never change, that is a copy of the whole model per step and a second copy in memory. Stored in bf16 they
are used as they are. The products are bit-identical (autocast rounds the same fp32 weight to the same bf16 value);
only the cast, its memory and its time go.

The fp32 originals are parked in a safetensors file in the run directory for the duration of training and put back
afterwards (and on any failure), so evaluation, merging and export see exactly the weights the run loaded — a bf16
round trip would change them by up to 2⁻⁹ relative. Only adapter methods qualify (their checkpoints hold the adapter
alone, never a frozen weight), and only stages that do not decode with the policy outside autocast while training
(the RL stages do: their rollouts run in fp32).

transformers/PEFT have no switch for this: loading the model in bf16 would also turn the norms, the embeddings and
the adapter's inputs to bf16 (a different, lower-precision computation), and PEFT keeps the base layer as loaded.

QLoRA goes one step further (`embeddings=True`): its method trades base precision for memory by design (the QLoRA
recipe holds everything it does not quantise in bf16), so the input embeddings — tied to the output head in most
small models, and after 4-bit linear layers the largest frozen tensor left — are held in bf16 too. Their lookups are
cast back to fp32, so the residual stream stays fp32 and the only change is the embeddings' bf16 rounding; the head's
product is the one autocast computed anyway. On the built-in model that is 113 MB → 57 MB of a QLoRA run's ~190 MB.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from tunelab.model.methods import method_spec

PARKED_FILE = "frozen-fp32.safetensors"


def frozen_linear_weights(model) -> dict[str, torch.nn.Parameter]:
    """The frozen fp32 weights and biases of the model's linear layers, by parameter name; the output head is left
    as it is (it is usually tied to the input embeddings, which are looked up, not multiplied)."""
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    skipped = {id(p) for p in output.parameters()} if output is not None else set()
    found: dict[str, torch.nn.Parameter] = {}
    for module_name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        for name, parameter in module.named_parameters(recurse=False):
            if parameter.requires_grad or parameter.dtype != torch.float32 or id(parameter) in skipped:
                continue
            found[f"{module_name}.{name}"] = parameter
    return found


def qualifies(stage, method, plan) -> bool:
    """bf16 mixed precision, an adapter method that uses the frozen weights only in products, and a stage that does
    not sample from the policy while training. DoRA does not qualify: it takes the norm of the frozen weight plus
    the update outside any product, which a bf16-stored weight would change (measured: gradients up to 5% apart)."""
    adapter = method_spec(method).saves == "adapter" and not getattr(method, "use_dora", False)
    return bool(plan.bf16) and adapter and stage.reads != "prompts"


@contextmanager
def frozen_weights_in_bf16(model, park_dir: Path, embeddings: bool = False) -> Iterator[int]:
    """Inside the block the frozen linear weights (and with `embeddings`, the frozen input embeddings) are bf16, their
    fp32 values parked in `park_dir`; afterwards they are the original fp32 tensors again. Yields how many tensors
    were converted."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    weights = frozen_linear_weights(model)
    hooks = _embeddings_in_bf16(model, weights) if embeddings else []
    if not weights:
        yield 0
        return
    parked = Path(park_dir) / PARKED_FILE
    save_file({name: p.detach().contiguous() for name, p in weights.items()}, str(parked))
    with torch.no_grad():
        for parameter in weights.values():
            parameter.data = parameter.data.to(torch.bfloat16)
    try:
        yield len(weights)
    finally:
        for hook in hooks:
            hook.remove()
        with torch.no_grad(), safe_open(str(parked), framework="pt") as originals:
            for name, parameter in weights.items():
                parameter.data = originals.get_tensor(name)
        parked.unlink(missing_ok=True)


def _embeddings_in_bf16(model, weights: dict[str, torch.nn.Parameter]) -> list:
    """Add the frozen fp32 input embeddings to `weights` (to be held in bf16) with a hook that returns their lookups
    in fp32; returns the hooks to remove afterwards."""
    embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    weight = getattr(embedding, "weight", None)
    if weight is None or weight.requires_grad or weight.dtype != torch.float32:
        return []
    weights["input_embeddings.weight"] = weight
    return [embedding.register_forward_hook(lambda _module, _inputs, output: output.float())]
