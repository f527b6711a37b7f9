"""Linear layers with weights pre-packed for oneDNN, for decoding on a CPU.

A decoding step multiplies a handful of rows by every weight matrix of the model. PyTorch's default CPU path
(MKL `sgemm`) re-packs each weight matrix on every call, which costs more than the product itself at that size:
measured here for a 1536×576 matrix not in cache, 1.14 ms for 8 rows and 0.64 ms for one, against 0.55 and 0.40 ms
with the weight packed once for oneDNN (the kernel `torch.compile`/Inductor uses for frozen CPU linears). For a
single row MKL's matrix-vector path stays faster, so one row takes the plain layer. Packing is done once when the
server loads the model; outputs equal the plain layer's to float rounding (~1e-6 relative).

Only float32 `nn.Linear` layers on the CPU are packed, and only when PyTorch has oneDNN; the packed copy is kept
next to the original weight (adapters, merging and saving still see the ordinary module).
"""

from __future__ import annotations

import types

import torch

BATCH_HINT = 8  # the row count oneDNN is told to expect; any other count works, this one is fastest


def available() -> bool:
    return bool(torch.backends.mkldnn.is_available()) and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


def _packed_forward(self, x: torch.Tensor) -> torch.Tensor:
    shape = x.shape
    # a single row: MKL's matrix-vector path is faster (181 vs 149 ms a step here); an input in another precision
    # (a bf16 autocast region, as accelerate wraps a trainer's model in for mixed precision) takes the plain layer too
    if x.numel() == shape[-1] or x.dtype != self.weight.dtype or torch.is_autocast_enabled("cpu"):
        return torch.nn.functional.linear(x, self.weight, self.bias)
    out = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, shape[-1]), self.packed_weight, self.bias, "none", [], "")
    return out.reshape(*shape[:-1], out.shape[-1])


def prepack_linears(model) -> int:
    """Pack every eligible linear layer of `model` in place; returns how many were packed."""
    if not available():
        return 0
    count = 0
    with torch.no_grad():
        for module in model.modules():
            weight = getattr(module, "weight", None)
            if type(module) is not torch.nn.Linear or weight.dtype != torch.float32 or weight.device.type != "cpu":
                continue
            module.packed_weight = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), BATCH_HINT)
            module.forward = types.MethodType(_packed_forward, module)
            count += 1
    return count
