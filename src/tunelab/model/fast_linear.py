"""Linear layers with weights pre-packed for oneDNN, for decoding on a CPU.

A decoding step multiplies a handful of rows by every weight matrix of the model. PyTorch's default CPU path
(MKL `sgemm`) re-packs each weight matrix on every call, which costs more than the product itself at that size:
measured here for a 1536×576 matrix not in cache, 1.14 ms for 8 rows and 0.64 ms for one, against 0.55 and 0.40 ms
with the weight packed once for oneDNN (the kernel `torch.compile`/Inductor uses for frozen CPU linears). For a
single row it depends on the machine (`single_row_packed` measures it once). Packing is done once when the server
loads the model; outputs equal the plain layer's to float rounding (~1e-6 relative).

Only float32 `nn.Linear` layers on the CPU are packed, and only when PyTorch has oneDNN; the packed copy is kept
next to the original weight (adapters, merging and saving still see the ordinary module).

With `merge_lora=True` (RL rollouts: one adapter samples thousands of tokens), a PEFT LoRA layer is packed as one
matrix, its base weight plus the adapter's delta, so each decoding step runs one product per layer instead of three
and none of PEFT's per-call Python. PEFT's own `merge_adapter()` would do the sum but writes it into the base weight
and subtracts it again afterwards, which leaves rounding drift in the frozen weights every rollout; the sum here is a
separate tensor, and the module's weights are never touched. `unpack_linears` removes what packing added.
"""

from __future__ import annotations

import functools
import time
import types

import torch

BATCH_HINT = 8  # the row count oneDNN is told to expect; any other count works, this one is fastest


def available() -> bool:
    return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


def pack(weight: torch.Tensor) -> torch.Tensor:
    """A copy of a float32 (out × in) weight in oneDNN's layout, for `packed_linear`."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), BATCH_HINT)


def packed_linear(x: torch.Tensor, weight: torch.Tensor, packed: torch.Tensor, bias=None) -> torch.Tensor:
    """x @ weight.T + bias on the packed copy, or on `weight` itself where the plain product is the right one."""
    if use_plain_product(x, weight):
        return torch.nn.functional.linear(x, weight, bias)
    shape = x.shape
    out = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, shape[-1]), packed, bias, "none", [], "")
    return out.reshape(*shape[:-1], out.shape[-1])


@functools.cache
def single_row_packed() -> bool:
    """Whether one row goes faster through the packed weight than through MKL's matrix-vector path on this machine.
    It differs between machines (measured: MKL 181 against packed 149 ms a decoding step on one; packed 10.8 against
    MKL 29.7 ms for the built-in model's layers on an AVX512-BF16 EPYC), so it is measured once per process: a row
    through 64 MiB of weights (more than a cache holds), both ways, best of three."""
    if not available():
        return False
    weights = [torch.full((2048, 1024), 0.5) for _ in range(8)]  # the values do not matter to the timing
    packed = [pack(w) for w in weights]
    row = torch.full((1, 1024), 0.25)

    def best(product) -> float:
        times = []
        for _ in range(3):
            started = time.perf_counter()
            for index in range(len(weights)):
                product(index)
            times.append(time.perf_counter() - started)
        return min(times)

    with torch.inference_mode():
        plain = best(lambda i: torch.nn.functional.linear(row, weights[i]))
        onednn = best(lambda i: torch.ops.mkldnn._linear_pointwise(row, packed[i], None, "none", [], ""))
    return onednn < plain


def use_plain_product(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """One row where MKL's matrix-vector path is faster, or an input in another precision (a bf16 autocast region, as
    accelerate wraps a trainer's model in for mixed precision): the plain product."""
    single_row = x.numel() == x.shape[-1]
    return (single_row and not single_row_packed()) or x.dtype != weight.dtype or torch.is_autocast_enabled("cpu")


def _packed_forward(self, x: torch.Tensor) -> torch.Tensor:
    return packed_linear(x, self.weight, self.packed_weight, self.bias)


def _merged_lora_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """A LoRA layer on its packed merged weight while the adapters it was packed with are the active ones (and the
    input is float32 outside autocast); PEFT's own forward otherwise."""
    unchanged = not self.disable_adapters and tuple(self.active_adapters) == self.packed_adapters
    if args or kwargs or not unchanged or x.dtype != self.merged_weight.dtype or torch.is_autocast_enabled("cpu"):
        return type(self).forward(self, x, *args, **kwargs)
    return packed_linear(x, self.merged_weight, self.packed_weight, self.base_layer.bias)


def plain_float_weight(weight) -> bool:
    """A dense fp32 tensor on the CPU: not a quantised tensor subclass (torchao's int8 weights report fp32 too)."""
    return type(weight.data) is torch.Tensor and weight.dtype == torch.float32 and weight.device.type == "cpu"


def _plain_float_linear(module) -> bool:
    return type(module) is torch.nn.Linear and plain_float_weight(module.weight)


def _mergeable_lora(module) -> bool:
    """A PEFT LoRA linear layer whose active adapters are plain LoRA (no DoRA or other variant), not merged, with
    dropout off (eval mode), over a float32 CPU linear layer."""
    if not (hasattr(module, "lora_A") and hasattr(module, "get_delta_weight") and hasattr(module, "base_layer")):
        return False
    active = [a for a in module.active_adapters if a in module.lora_A]
    return (
        bool(active)
        and not module.merged
        and not module.disable_adapters
        and not module.training
        and not any(a in getattr(module, "lora_variant", {}) for a in active)
        and _plain_float_linear(module.base_layer)
    )


def prepack_linears(model, merge_lora: bool = False) -> int:
    """Pack every eligible linear layer of `model` in place (with `merge_lora`, PEFT LoRA layers as base + delta);
    returns how many were packed."""
    if not available():
        return 0
    count, merged_parts = 0, set()
    with torch.no_grad():
        for module in model.modules() if merge_lora else ():
            if not _mergeable_lora(module):
                continue
            adapters = tuple(module.active_adapters)
            weight = module.base_layer.weight.detach().clone()
            for adapter in (a for a in adapters if a in module.lora_A):
                weight += module.get_delta_weight(adapter)
            module.merged_weight, module.packed_adapters = weight, adapters
            module.packed_weight = pack(weight)
            module.forward = types.MethodType(_merged_lora_forward, module)
            merged_parts |= {id(m) for m in module.modules() if m is not module}  # base layer, lora_A, lora_B
            count += 1
        for module in model.modules():
            if not _plain_float_linear(module) or id(module) in merged_parts:
                continue
            module.packed_weight = pack(module.weight)
            module.forward = types.MethodType(_packed_forward, module)
            count += 1
    return count


PACKING_ATTRIBUTES = ("packed_weight", "merged_weight", "packed_adapters")


def packed_modules(model) -> list[torch.nn.Module]:
    return [m for m in model.modules() if "packed_weight" in m.__dict__]


def unpack_linears(model, forwards: dict[int, object] | None = None) -> None:
    """Remove what `prepack_linears` added; `forwards` (module id → the instance forward it had before, if any) puts
    back forwards that were patched before packing."""
    forwards = forwards or {}
    for module in packed_modules(model):
        for name in PACKING_ATTRIBUTES:
            module.__dict__.pop(name, None)
        if forwards.get(id(module)) is None:
            module.__dict__.pop("forward", None)  # the class's forward again
        else:
            module.forward = forwards[id(module)]
