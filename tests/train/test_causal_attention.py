"""Packed causal attention with its own backward: SDPA's outputs exactly, gradients as close to fp64 as SDPA's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tunelab.train.causal_attention import applies, causal_attention


def _inputs(dtype, heads=6, kv_heads=2, length=37, dim=16):
    generator = torch.Generator().manual_seed(0)
    shapes = ((1, heads, length, dim), (1, kv_heads, length, dim), (1, kv_heads, length, dim))
    return [torch.randn(*shape, generator=generator).to(dtype).requires_grad_() for shape in shapes]


def _attend(function, tensors, grad):
    output = function(*tensors)
    return [output.detach(), *torch.autograd.grad(output, tensors, grad.to(output.dtype))]


def _sdpa(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=q.shape[1] != k.shape[1])


def _ours(q, k, v):
    return causal_attention(q, k, v, None)


@pytest.mark.parametrize("kv_heads", [2, 6])
def test_fp32_outputs_equal_and_gradients_match_sdpa(kv_heads):
    tensors = _inputs(torch.float32, kv_heads=kv_heads)
    grad = torch.randn(1, 6, 37, 16, generator=torch.Generator().manual_seed(1))
    expected, ours = _attend(_sdpa, tensors, grad), _attend(_ours, tensors, grad)
    assert torch.equal(ours[0], expected[0])
    for got, want in zip(ours[1:], expected[1:], strict=True):
        assert torch.allclose(got, want, atol=1e-5, rtol=1e-4)


def test_bf16_gradients_are_as_close_to_fp64_as_sdpas_own():
    grad = torch.randn(1, 6, 37, 16, generator=torch.Generator().manual_seed(1))
    exact = _attend(_sdpa, _inputs(torch.float64), grad)
    sdpa, ours = _attend(_sdpa, _inputs(torch.bfloat16), grad), _attend(_ours, _inputs(torch.bfloat16), grad)
    assert torch.equal(ours[0], sdpa[0])  # the same forward kernel

    def error(got, want):
        return float((got.double() - want).abs().max() / want.abs().max())

    for got, theirs, want in zip(ours[1:], sdpa[1:], exact[1:], strict=True):
        assert error(got, want) <= 1.5 * error(theirs, want) + 1e-3


def test_autocast_precision_as_sdpa_under_autocast():
    q, k, v = _inputs(torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = _sdpa(q, k, v.to(torch.bfloat16))
        ours = causal_attention(q, k, v.to(torch.bfloat16), None)
    assert ours.dtype == torch.bfloat16 and torch.equal(ours, expected)


def test_only_for_what_it_computes():
    query = torch.zeros(1, 2, 8, 4)
    assert applies(query, 0.0) and not applies(query, 0.1) and not applies(torch.zeros(2, 2, 8, 4), 0.0)
    assert not applies(query.half(), 0.0)  # a precision the CPU flash kernel may not take: SDPA decides
