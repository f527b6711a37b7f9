"""A Llama-family decoder's forward pass for decoding, on fused weights packed for oneDNN (the server's hot loop).

Measured on the built-in model (8 rows, 4 stacked LoRA adapters, AVX512-BF16 EPYC, 2 cores): a decoding step through
transformers' modules took 42.7 ms, 31.0 without the adapters, while the base model's matrix products alone take
~17 ms. A step ran 631 products (7 per layer, and 2 more per adapted layer for the stacked adapters, each a thin
product whose fixed cost is most of it) and ~14 ms of module calls, mask building and hooks around them. Here a layer
is 4 products on fused matrices plus at most 4 thin ones: q, k and v with every adapter's down-projection for them
in one matrix (the same input), then one product for all three adapters' up-projections (block-diagonal); the same
for o, for gate and up, and for down. Everything else is the plain arithmetic of transformers' modules, the same
operations in the same order (RMS norm in float32, rotary embedding by `rotate_half`, SDPA with the same mask, GQA
handling and kernel choice), so outputs equal the modules' to float rounding of the fused products.

`supports(model)` says where this applies: the causal LMs whose layers are exactly Llama's (Llama, Mistral without a
sliding window, Qwen2 with its q/k/v biases), float32 on a CPU with oneDNN. Everything else decodes through
transformers' modules. Written by hand because neither transformers nor PyTorch fuses these products for a CPU
without `torch.compile`, whose cold start (minutes here) and recompiles as the batch changes do not suit a server.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tunelab.model.fast_linear import available, pack, plain_float_weight

NORMS = {"LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm"}  # weight * (x·rsqrt(mean(x²) + eps)) in float32
MODEL_TYPES = {"llama", "mistral", "qwen2"}
GROUPS = (("self_attn", ("q_proj", "k_proj", "v_proj")), ("self_attn", ("o_proj",)),
          ("mlp", ("gate_proj", "up_proj")), ("mlp", ("down_proj",)))  # fmt: skip


def _causal_lm(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _base_linear(module) -> torch.nn.Linear:
    return getattr(module, "base_layer", module)


def supports(model, merged: bool = False) -> bool:
    """True when `model` (or the model under a PEFT wrapper) has Llama's layers exactly, float32 on a CPU; with
    `merged`, also when every LoRA layer's active adapters can be added into its weight (plain LoRA, dropout off)."""
    lm = _causal_lm(model)
    config, inner = getattr(lm, "config", None), getattr(lm, "model", None)
    if not available() or getattr(config, "model_type", None) not in MODEL_TYPES or inner is None:
        return False
    if any(config.peft_type != "LORA" for config in getattr(model, "peft_config", {}).values()):
        return False  # prompt learning (virtual tokens) or another tuner: PEFT's own forward
    if merged and not all(_mergeable(module) for module in lm.modules() if hasattr(module, "lora_A")):
        return False
    plain = (
        getattr(config, "hidden_act", None) == "silu"
        and getattr(config, "pretraining_tp", 1) == 1
        and not (getattr(config, "use_sliding_window", True) and getattr(config, "sliding_window", None))
        and set(getattr(config, "layer_types", None) or ["full_attention"]) == {"full_attention"}
        and getattr(config, "final_logit_softcapping", None) is None
        and type(lm.lm_head) is torch.nn.Linear
        and type(inner.norm).__name__ in NORMS
    )
    return plain and all(_plain_layer(layer) for layer in inner.layers)


def _plain_layer(layer) -> bool:
    attention, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
    if attention is None or mlp is None or hasattr(attention, "q_norm"):
        return False
    norms = (getattr(layer, "input_layernorm", None), getattr(layer, "post_attention_layernorm", None))
    if any(type(norm).__name__ not in NORMS for norm in norms):
        return False
    for owner, names in GROUPS:
        for name in names:
            module = getattr(getattr(layer, owner), name, None)
            if hasattr(module, "base_layer") and not hasattr(module, "lora_A"):
                return False  # a PEFT layer of another kind (IA³, LoHa, …): its own forward must run
            linear = _base_linear(module)
            if type(linear) is not torch.nn.Linear or not plain_float_weight(linear.weight):
                return False
    return True


@dataclass
class FusedProduct:
    """x ↦ the outputs of several linear layers (and each row's adapter on them), from one product (and one more)."""

    packed: torch.Tensor  # [outputs of every layer; every adapter's down-projection for each], oneDNN layout
    bias: torch.Tensor | None
    outputs: int  # columns that are layer outputs; the rest are the adapters' low-rank hidden units
    up: torch.Tensor | None  # block-diagonal up-projections (scaling folded in), packed
    ranks: tuple[int, ...]  # the stacked rank of each adapted layer, in order (for the row masks)

    def __call__(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        rows, tokens = x.shape[0], x.shape[1]
        y = torch.ops.mkldnn._linear_pointwise(x.reshape(rows * tokens, -1), self.packed, self.bias, "none", [], "")
        if self.up is not None:
            low = y[:, self.outputs :]
            y = y[:, : self.outputs]
            if mask is not None:  # rows of the base model alone (mask None) add nothing
                low = (low.reshape(rows, tokens, -1) * mask).reshape(rows * tokens, -1)
                y = y + torch.ops.mkldnn._linear_pointwise(low, self.up, None, "none", [], "")
        return y.reshape(rows, tokens, -1)


def _mergeable(module) -> bool:
    """A PEFT LoRA layer whose active adapters (if on) are plain LoRA (no DoRA or other variant, no bias of their
    own, which `get_delta_weight` leaves out), not merged into it, dropout off."""
    if module.disable_adapters or not module.active_adapters:
        return True
    lora = [a for a in module.active_adapters if a in module.lora_A]
    special = (getattr(module, "lora_variant", {}), getattr(module, "lora_bias", {}), getattr(module, "use_dora", {}))
    return not module.merged and not module.training and not any(kind.get(a) for kind in special for a in lora)


def _adapters_state(lm) -> tuple | None:
    """(active adapters, disabled) of the first LoRA layer (PEFT switches them for all layers at once)."""
    layer = next((m for m in lm.modules() if hasattr(m, "lora_A")), None)
    return None if layer is None else (tuple(layer.active_adapters), bool(layer.disable_adapters))


def _weight(module, merged: bool) -> torch.Tensor:
    """The layer's weight; with `merged`, a PEFT LoRA layer's base weight plus its active adapters' deltas (a new
    tensor: the layer is not touched, as fast_linear's merged packing)."""
    weight = _base_linear(module).weight.detach()
    if not (merged and hasattr(module, "lora_A")) or module.disable_adapters:
        return weight
    active = [a for a in module.active_adapters if a in module.lora_A]
    return weight + sum(module.get_delta_weight(a) for a in active) if active else weight


def _fused(modules: list, stacked, merged: bool = False) -> FusedProduct:
    linears = [_base_linear(m) for m in modules]
    stacks = [stacked.stacks.get(id(m)) if stacked is not None else None for m in modules]
    adapted = [stack for stack in stacks if stack is not None]
    weight = torch.cat([_weight(m, merged) for m in modules] + [down for down, _, _ in adapted])
    bias = None
    if any(lin.bias is not None for lin in linears):
        parts = [lin.bias.detach() if lin.bias is not None else torch.zeros(lin.out_features) for lin in linears]
        bias = torch.cat(parts + [torch.zeros(down.shape[0]) for down, _, _ in adapted])
    up = None
    if adapted:  # a layer no adapter touches gets a block with no columns
        blocks = [
            s[1] if s is not None else torch.zeros(lin.out_features, 0) for lin, s in zip(linears, stacks, strict=True)
        ]
        up = pack(torch.block_diag(*blocks))
    outputs = sum(lin.out_features for lin in linears)
    return FusedProduct(pack(weight), bias, outputs, up, tuple(rank for _, _, rank in adapted))


@dataclass
class FusedLayer:
    norms: tuple[tuple[torch.Tensor, float], tuple[torch.Tensor, float]]
    products: tuple[FusedProduct, FusedProduct, FusedProduct, FusedProduct]  # qkv, o, gate+up, down


class FusedDecoder:
    """`forward(ids, mask, positions, cache, keep)` → float32 logits of the last `keep` positions, as the model's
    own forward with `logits_to_keep=keep` gives them; `stacked` (serve/multi_lora.StackedLora built without hooks)
    adds each row's adapter."""

    def __init__(self, model, stacked=None, merged: bool = False):
        lm = _causal_lm(model)
        inner, config = lm.model, lm.config
        self.stacked, self.merged = stacked, merged
        self.adapters_state = _adapters_state(lm)  # `current()` compares: PEFT's adapters switched since?
        self.embed, self.rotary = inner.embed_tokens, inner.rotary_emb
        self.final_norm = _norm(inner.norm)
        self.head = _fused([lm.lm_head], None)
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        with torch.no_grad():
            self.layers = [self._layer(layer) for layer in inner.layers]
        self._rows_seen: list[int] | None = None
        self._masks: dict[tuple[int, ...], torch.Tensor] = {}

    def _layer(self, layer) -> FusedLayer:
        products = tuple(
            _fused([getattr(getattr(layer, owner), name) for name in names], self.stacked, self.merged)
            for owner, names in GROUPS
        )
        return FusedLayer((_norm(layer.input_layernorm), _norm(layer.post_attention_layernorm)), products)

    @property
    def products(self) -> int:
        """Packed products it holds: four a layer and the head."""
        return 4 * len(self.layers) + 1

    def current(self, model) -> bool:
        """Whether the model's adapters are still those it was built with (with `merged`: else the model's own
        forward must run, e.g. inside PEFT's `disable_adapter()`)."""
        return not self.merged or _adapters_state(_causal_lm(model)) == self.adapters_state

    @torch.inference_mode()
    @torch.autocast("cpu", enabled=False)
    def forward(self, ids, mask, positions, cache, keep: int = 1) -> torch.Tensor:
        rows, tokens = ids.shape
        if mask is None:
            mask = torch.ones(rows, cache.get_seq_length() + tokens, dtype=torch.long)
        x = self.embed(ids)
        cos, sin = self.rotary(x, positions)
        attention_mask, masks = _attention_mask(mask, tokens), self._row_masks()
        for index, layer in enumerate(self.layers):
            qkv, o, gate_up, down = layer.products
            h = _rms_norm(x, *layer.norms[0])
            h = self._attention(qkv(h, masks.get(qkv.ranks)), cos, sin, cache, index, attention_mask)
            x = x + o(h, masks.get(o.ranks))
            gate, up = gate_up(_rms_norm(x, *layer.norms[1]), masks.get(gate_up.ranks)).chunk(2, dim=-1)
            x = x + down(torch.nn.functional.silu(gate) * up, masks.get(down.ranks))
        return self.head(_rms_norm(x[:, -keep:], *self.final_norm), None).float()

    def _attention(self, qkv, cos, sin, cache, index: int, attention_mask):
        """transformers' LlamaAttention with its sdpa_attention_forward, step for step."""
        rows, tokens, _ = qkv.shape
        sizes = (self.heads * self.head_dim, self.kv_heads * self.head_dim, self.kv_heads * self.head_dim)
        q, k, v = (t.reshape(rows, tokens, -1, self.head_dim).transpose(1, 2) for t in qkv.split(sizes, dim=-1))
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
        k, v = _cached(cache, index, k, v)
        groups = self.heads // self.kv_heads
        options, is_causal = {}, tokens > 1 and attention_mask is None
        if groups > 1 and attention_mask is None:
            options["enable_gqa"] = True
        elif groups > 1 and tokens == 1:
            q = q.reshape(rows, self.kv_heads, groups, self.head_dim)
        elif groups > 1:
            k, v = (t.repeat_interleave(groups, dim=1) for t in (k, v))
        out = torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=attention_mask, scale=self.scaling, is_causal=is_causal, **options
        )
        return out.reshape(rows, -1, tokens, self.head_dim).transpose(1, 2).reshape(rows, tokens, -1)

    def _row_masks(self) -> dict[tuple[int, ...], torch.Tensor]:
        """For each adapted product's ranks, (rows, 1, adapters' hidden units): the columns of each row's own adapter
        kept, the others zero; empty when no row has an adapter."""
        rows = None if self.stacked is None else self.stacked.rows
        if rows is None or all(row < 0 for row in rows):
            return {}
        if rows != self._rows_seen:
            self._rows_seen = list(rows)
            wanted = {layer.products[i].ranks for layer in self.layers for i in range(4)} - {()}
            self._masks = {ranks: torch.cat([self.stacked.mask(r) for r in ranks], dim=-1) for ranks in wanted}
        return self._masks


SPARE_POSITIONS = 64  # room left in a layer's cache buffers for the next tokens


def _cached(cache, index: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`cache.update(k, v, index)` for a plain growing layer, without its copy of the whole cache at every token:
    keys and values live in buffers with spare positions and the layer holds views of their filled part, so a step
    writes only its new positions (measured: the copies were 3.5 ms of a 27 ms step for 8 rows). Anything that
    replaces the layer's tensors (rows leaving or joining, padding trimmed, a crop) leaves views that no longer
    match the buffers, and the next step moves them into new ones."""
    from transformers.cache_utils import DynamicLayer

    layer = cache.layers[index] if index < len(cache.layers) else None
    if layer is None or type(layer) is not DynamicLayer or not layer.is_initialized:
        return cache.update(k, v, index)
    buffers = getattr(layer, "tunelab_buffers", (None, None))
    (layer.keys, key_buffer), (layer.values, value_buffer) = (
        _append(held, new, buffer) for held, new, buffer in ((layer.keys, k, buffers[0]), (layer.values, v, buffers[1]))
    )
    layer.tunelab_buffers = (key_buffer, value_buffer)
    return layer.keys, layer.values


def _append(held: torch.Tensor, new: torch.Tensor, buffer: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(held followed by new along positions, as a view of a buffer; the buffer)."""
    length, added = held.shape[2], new.shape[2]
    in_place = (
        buffer is not None
        and held.data_ptr() == buffer.data_ptr()
        and held.stride() == buffer.stride()
        and held.shape[:2] == buffer.shape[:2]
        and length + added <= buffer.shape[2]
    )
    if not in_place:
        rows, heads, _, width = held.shape
        buffer = held.new_empty(rows, heads, length + added + SPARE_POSITIONS, width)
        buffer[:, :, :length].copy_(held)
    buffer[:, :, length : length + added].copy_(new)
    return buffer[:, :, : length + added], buffer


def _norm(module) -> tuple[torch.Tensor, float]:
    return module.weight.detach(), module.variance_epsilon


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm.forward for float32 inputs."""
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def _attention_mask(mask: torch.Tensor, tokens: int) -> torch.Tensor | None:
    """The boolean (rows, 1, tokens, cached + tokens) mask transformers builds for SDPA, or None where it builds
    none (no padding, and one new token or no cached ones). A padding query row may see every earlier position, so
    it never has nothing to attend to (its output is unused; transformers does the same)."""
    if bool(mask.all()) and (tokens == 1 or mask.shape[1] == tokens):
        return None
    keys = mask.shape[1]
    causal = torch.arange(keys)[None, :] <= torch.arange(keys - tokens, keys)[:, None]
    allowed = mask.bool()[:, None, None, :] | ~mask.bool()[:, None, -tokens:, None]
    return causal[None, None] & allowed
