"""Key/value cache surgery for continuous batching: rows join a running batch, padding nobody needs is dropped.

transformers' `DynamicCache` can drop batch rows (`batch_select_indices`) but not add rows or trim columns; these
work on its plain growing layers (`DynamicLayer`: keys/values of shape batch × heads × length × head_dim).
"""

from __future__ import annotations

import torch


def mergeable(cache) -> bool:
    """Rows can join a running batch when every cache layer is a plain growing one (not sliding, not static)."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", [])
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def merge_caches(cache, mask: torch.Tensor, new_cache, new_mask: torch.Tensor) -> torch.Tensor:
    """Append `new_cache`'s rows to `cache`, left-padding the shorter one (masked out); returns the joint mask."""
    width = max(mask.shape[1], new_mask.shape[1])
    grow, new_grow = width - mask.shape[1], width - new_mask.shape[1]
    pad = torch.nn.functional.pad
    for layer, new_layer in zip(cache.layers, new_cache.layers, strict=True):
        layer.keys = torch.cat([pad(layer.keys, (0, 0, grow, 0)), pad(new_layer.keys, (0, 0, new_grow, 0))])
        layer.values = torch.cat([pad(layer.values, (0, 0, grow, 0)), pad(new_layer.values, (0, 0, new_grow, 0))])
    return torch.cat([pad(mask, (grow, 0)), pad(new_mask, (new_grow, 0))])


def trim_padding(cache, mask: torch.Tensor) -> torch.Tensor:
    """Drop leading cache columns that are padding in every row left (a continuous batch would otherwise keep every
    column any earlier row needed, and grow for as long as it runs)."""
    start = int(mask.any(dim=0).to(torch.int8).argmax())
    if start == 0 or not mergeable(cache):
        return mask
    for layer in cache.layers:
        layer.keys, layer.values = layer.keys[:, :, start:], layer.values[:, :, start:]
    return mask[:, start:]
