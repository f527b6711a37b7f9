"""QLoRA's frozen base: the model's linear layers quantised in place to 4-bit (NF4/FP4, optionally with quantised
scales) or 8-bit with bitsandbytes, which runs on CPUs from 0.46 on.

The model arrives loaded in full precision (the run scored it as the base model first), so its layers are swapped
one at a time for bitsandbytes' own `Linear4bit`/`Linear8bitLt` modules: each full-precision weight is freed as soon as
its quantised copy exists, so the process never holds two copies. transformers' `quantization_config` does the same
only while loading from disk. The output head stays as it is (tied to the input embeddings in most small models, and
the layer most sensitive to quantisation); transformers leaves it unquantised too.
"""

from __future__ import annotations

from typing import Any

import torch

from tunelab.errors import RecipeError


def bitsandbytes_problem() -> str | None:
    """Why bitsandbytes cannot quantise here (None when it can)."""
    try:
        import bitsandbytes  # noqa: F401
    except Exception as error:  # ImportError, or a library that fails to load on this CPU
        return f"bitsandbytes cannot be imported ({type(error).__name__}: {error})"
    return None


def loading_options(bits: int, quant_type: str = "nf4", double_quant: bool = True) -> dict[str, Any]:
    """`from_pretrained` arguments that load the model quantised, one tensor at a time (the process never holds the
    full-precision model); the output head stays full precision, as in `quantize_linear_layers`."""
    import torch
    from transformers import BitsAndBytesConfig

    _require_bitsandbytes()
    if bits == 8:
        return {"quantization_config": BitsAndBytesConfig(load_in_8bit=True)}
    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=quant_type,
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=torch.float32,
    )
    return {"quantization_config": config}


def _require_bitsandbytes() -> None:
    problem = bitsandbytes_problem()
    if problem:
        raise RecipeError("recipe", [("method.type", f"qlora needs bitsandbytes: {problem}; use method.type: lora")])


def is_quantized(model) -> bool:
    return any(type(m).__name__ in ("Linear4bit", "Linear8bitLt") for m in model.modules())


def keep_weights_in_place(model) -> None:
    """bitsandbytes' AVX512-BF16 inference path repacks a 4-bit weight in place on its first no-grad forward and
    packs it back on state_dict(), re-quantising double-quantised scales on the way: the frozen base would drift
    (measured: scales off by one step) each time an evaluation and a save alternate. The plain path dequantises per
    call and leaves the weight alone."""
    for module in model.modules():
        if hasattr(module, "support_avx512bf16_for_cpu"):
            module.support_avx512bf16_for_cpu = False


def quantize_linear_layers(model, bits: int, quant_type: str = "nf4", double_quant: bool = True) -> int:
    """Replace the model's linear layers (not the output head) by bitsandbytes' quantised ones; returns how many.
    A model loaded quantised already (`loading_options`) or without weights (the `meta` device: a model built to
    count its parameters) is left as it is."""
    _require_bitsandbytes()
    if is_quantized(model) or next(model.parameters()).device.type == "meta":
        keep_weights_in_place(model)
        return 0
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    targets = [(name, module) for name, module in model.named_modules()
               if type(module) is torch.nn.Linear and module is not head]  # fmt: skip
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, _quantized(linear, bits, quant_type, double_quant))
    model.config.tunelab_quantized = {"bits": bits, "quant_type": quant_type, "double_quant": double_quant}
    return len(targets)


def _quantized(linear: torch.nn.Linear, bits: int, quant_type: str, double_quant: bool) -> Any:
    import bitsandbytes as bnb

    has_bias = linear.bias is not None
    with torch.no_grad():
        if bits == 4:
            module = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=has_bias,
                                       compute_dtype=linear.weight.dtype, compress_statistics=double_quant,
                                       quant_type=quant_type, device="meta")  # fmt: skip
            module.weight = bnb.nn.Params4bit(linear.weight.data, requires_grad=False,
                                              compress_statistics=double_quant, quant_type=quant_type)  # fmt: skip
            module.support_avx512bf16_for_cpu = False  # see keep_weights_in_place
        else:
            module = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=has_bias,
                                         has_fp16_weights=False, threshold=6.0, device="meta")  # fmt: skip
            module.weight = bnb.nn.Int8Params(linear.weight.data, requires_grad=False, has_fp16_weights=False)
        if has_bias:
            module.bias = torch.nn.Parameter(linear.bias.data, requires_grad=False)
        return module.to(linear.weight.device)  # bitsandbytes quantises when the weight is moved to its device


def weight_bytes(model) -> int:
    """Bytes the model's parameters and buffers occupy (quantised weights at their packed size)."""
    tensors = list(model.parameters()) + list(model.buffers())
    seen: set[int] = set()
    total = 0
    for tensor in tensors:
        if tensor.data_ptr() in seen:
            continue
        seen.add(tensor.data_ptr())
        total += tensor.numel() * tensor.element_size()
        state = getattr(tensor, "quant_state", None)  # 4-bit: the scales (and their own scales) live beside it
        scales = _state_tensors(state) if state is not None else [getattr(tensor, "SCB", None)]  # 8-bit: SCB
        total += sum(t.numel() * t.element_size() for t in scales if t is not None)
    return total


def _state_tensors(state) -> list[torch.Tensor]:
    found = [t for t in (getattr(state, "absmax", None), getattr(state, "code", None)) if t is not None]
    nested = getattr(state, "state2", None)
    return found + (_state_tensors(nested) if nested is not None else [])


def loftq_initialise(peft_model, source, adapter: str = "default") -> int:
    """LoftQ's initialisation (one alternating step, as PEFT's `replace_lora_weights_loftq`): each LoRA pair on a
    4-bit layer starts at the best rank-r approximation of what quantisation lost, W − dequant(Q(W)), read from the
    original weights in `source`. Written here because PEFT's version computes on a CUDA/XPU device only; it also
    divides by the adapter's scaling, so that s·B·A (what the layer adds) is that approximation. Returns how many
    layers it set."""
    import bitsandbytes as bnb
    from safetensors import safe_open

    count = 0
    with torch.no_grad(), safe_open(str(source), framework="pt") as weights:
        for name, module in peft_model.named_modules():
            base = getattr(module, "base_layer", None)
            if type(base).__name__ != "Linear4bit" or adapter not in getattr(module, "lora_A", {}):
                continue
            original = weights.get_tensor(name.removeprefix("base_model.model.") + ".weight").float()
            lost = original - bnb.functional.dequantize_4bit(base.weight.data, base.weight.quant_state).float()
            u, singular, vh = torch.linalg.svd(lost, full_matrices=False)
            rank, scale = module.r[adapter], module.scaling[adapter]
            root = (singular[:rank] / scale).sqrt()
            module.lora_B[adapter].weight.copy_(u[:, :rank] * root)
            module.lora_A[adapter].weight.copy_(root[:, None] * vh[:rank])
            count += 1
    return count
