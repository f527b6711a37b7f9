"""Many LoRA adapters in one batch with two batched matrix products per layer (the Punica / S-LoRA idea).

PEFT's mixed-adapter batches (`adapter_names=`) loop over the adapters present in a batch at every LoRA layer:
select the rows, two small products, scatter the result back. With four adapters that is ~25 small operations per
layer per decoding step, and on a CPU their fixed cost dominates (measured here: 0.68 s per step for 8 rows on
SmolLM2-135M, most of it that loop). Here each LoRA layer's adapters are laid side by side once, `down`
(adapters·r × in) and `up` (out × adapters·r, scaling folded in, ranks padded with zeros), and a forward hook adds
`(x @ down.T ⊙ mask) @ up.T` to the base layer's output, where the mask keeps, for each row, only the r columns of
that row's adapter (none for the base model): two products and a multiply for all rows whatever their adapters.
The low-rank products are computed for every adapter, which costs adapters·r columns: small next to the base layer
for the handful of adapters a server holds.

PEFT still loads, validates and stores the adapters; during generation its own LoRA path is switched off in every
layer (`set_peft_lora(model, False)`), so the base layers compute the base model and the hooks add each row's
adapter. Adapters this path cannot express (DoRA, LoRA with a bias, on embeddings or convolutions, other variants)
make `supports()` false and the engine falls back to PEFT's mixed batches.
"""

from __future__ import annotations

from typing import Any

import torch


def _lora_linears(model) -> list[tuple[str, Any]]:
    from peft.tuners.lora import Linear as LoraLinear

    return [(name, module) for name, module in model.named_modules() if isinstance(module, LoraLinear)]


def supports(model, adapters: list[str]) -> bool:
    """True when every adapter is plain LoRA on linear layers (what the stacked path computes exactly); an adapter of
    another kind (IA³, LoHa, prompt tuning…) has no LoRA layers to stack and would otherwise be served as the base
    model."""
    from peft.tuners.lora import Linear as LoraLinear
    from peft.tuners.lora import LoraLayer
    from peft.utils import PeftType

    configs = getattr(model, "peft_config", {})
    if any(name not in configs or configs[name].peft_type != PeftType.LORA for name in adapters):
        return False
    for _, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        for name in adapters:
            on_other_layer = name in module.lora_A and not isinstance(module, LoraLinear)
            if on_other_layer or name in getattr(module, "lora_embedding_A", {}):
                return False
            if module.use_dora.get(name, False) or name in getattr(module, "lora_variant", {}):
                return False
            if getattr(module, "lora_bias", {}).get(name, False):
                return False
            if getattr(module, "fan_in_fan_out", False):
                return False
    return True


class StackedLora:
    """Every adapter of a LoRA layer side by side, and the hooks that apply each row's own."""

    def __init__(self, model, adapters: list[str], hooks: bool = True):
        self.adapters = list(adapters)
        self.rows: list[int] | None = None  # the adapter index of each batch row (-1: the base model)
        self._masks: dict[int, torch.Tensor] = {}
        self.stacks: dict[int, tuple[torch.Tensor, torch.Tensor, int]] = {}  # id(LoRA layer) → (down, up, rank)
        self.handles = []
        with torch.no_grad():
            for _, module in _lora_linears(model):
                self._stack(module, hooks)

    def _stack(self, module, hook: bool) -> None:
        base = module.base_layer
        if not any(name in module.lora_A for name in self.adapters):
            return
        rank = max(module.lora_A[name].weight.shape[0] for name in self.adapters if name in module.lora_A)
        dtype, count = base.weight.dtype, len(self.adapters)
        down = torch.zeros(count * rank, base.in_features, dtype=dtype)  # x → every adapter's r columns
        up = torch.zeros(base.out_features, count * rank, dtype=dtype)  # back, scaling folded in
        for index, name in enumerate(self.adapters):
            if name not in module.lora_A:
                continue
            a, b = module.lora_A[name].weight, module.lora_B[name].weight
            down[index * rank : index * rank + a.shape[0]] = a.to(dtype)
            up[:, index * rank : index * rank + b.shape[1]] = (b * module.scaling[name]).to(dtype)
        self.stacks[id(module)] = (down, up, rank)
        if hook:  # without: a fused decoder (model/fused_decoder.py) reads `stacks` and applies them itself
            self.handles.append(module.register_forward_hook(self._hook(down, up, rank)))

    def mask(self, rank: int) -> torch.Tensor:
        """(rows, 1, adapters × rank): ones in the block of the row's adapter, zeros elsewhere (all zero: base)."""
        mask = self._masks.get(rank)
        if mask is None:
            mask = torch.zeros(len(self.rows), 1, len(self.adapters) * rank)
            for row, index in enumerate(self.rows):
                if index >= 0:
                    mask[row, 0, index * rank : (index + 1) * rank] = 1.0
            self._masks[rank] = mask
        return mask

    def _hook(self, down: torch.Tensor, up: torch.Tensor, rank: int):
        # the two small products on weights packed once for oneDNN, as the base layers' (fast_linear.py): MKL re-packs
        # a weight on every call, which for these thin matrices cost more than the product (measured: the stacked
        # products were a quarter of a decoding step for 8 rows)
        down_product, up_product = packed_product(down), packed_product(up)

        def add_adapters(module, inputs, output):
            if self.rows is None:
                return output
            x = inputs[0].to(down.dtype)
            hidden = down_product(x) * self.mask(rank).to(down.dtype)
            return output + up_product(hidden).to(output.dtype)

        return add_adapters

    def use_rows(self, names: list[str]) -> None:
        """Set the adapter of each row for the next forward passes (names not served: the base model)."""
        index = {name: i for i, name in enumerate(self.adapters)}
        rows = [index.get(name, -1) for name in names]
        if rows != self.rows:
            self.rows, self._masks = rows, {}

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles = []


def packed_product(weight: torch.Tensor):
    """x ↦ x @ weight.T, on a copy of the weight packed for oneDNN where that applies (float32 rows on a CPU outside
    autocast; one row where that is faster, fast_linear.single_row_packed), else the plain product."""
    from tunelab.model.fast_linear import available, pack, packed_linear, plain_float_weight

    if not (available() and plain_float_weight(weight)):
        return lambda x: torch.nn.functional.linear(x, weight)
    packed = pack(weight)
    return lambda x: packed_linear(x, weight, packed)


def set_peft_lora(model, enabled: bool) -> None:
    """Switch PEFT's own LoRA computation in every layer on or off (the stacked hooks replace it when off)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.enable_adapters(enabled)
