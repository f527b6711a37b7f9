"""Pre-packed linear layers give the plain layers' outputs, for one row, a few rows and a prefill."""

from __future__ import annotations

import pytest
import torch

from tunelab.model import fast_linear


@pytest.mark.skipif(not fast_linear.available(), reason="this PyTorch has no oneDNN")
@pytest.mark.parametrize("shape", [(1, 1, 64), (8, 1, 64), (3, 17, 64), (5, 64)])
def test_packed_linear_equals_the_plain_one(shape):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.Linear(96, 32, bias=False))
    x = torch.randn(*shape)
    with torch.no_grad():
        expected = model(x)
        assert fast_linear.prepack_linears(model) == 2
        got = model(x)
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5), (got - expected).abs().max()


def test_only_float32_linears_are_packed():
    model = torch.nn.Sequential(torch.nn.Linear(8, 8).to(torch.bfloat16), torch.nn.Embedding(4, 8))
    assert fast_linear.prepack_linears(model) == 0


@pytest.mark.skipif(not fast_linear.available(), reason="this PyTorch has no oneDNN")
def test_a_packed_layer_under_bf16_autocast_computes_like_the_plain_one():
    """A trainer's model runs under bf16 autocast (accelerate's mixed precision); RL rollouts pack its weights."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, 8)
    x = torch.randn(4, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain = layer(x)
        assert fast_linear.prepack_linears(layer) == 1
        packed = layer(x)
        packed_bf16_input = layer(x.bfloat16())
    assert packed.dtype == plain.dtype == torch.bfloat16
    assert torch.equal(packed, plain) and torch.equal(packed_bf16_input, plain)


@pytest.mark.skipif(not fast_linear.available(), reason="this PyTorch has no oneDNN")
@pytest.mark.parametrize("packed_is_faster", [True, False])
def test_one_row_takes_the_path_this_machine_measured_faster(monkeypatch, packed_is_faster):
    assert isinstance(fast_linear.single_row_packed(), bool)  # measured once, then cached
    monkeypatch.setattr(fast_linear, "single_row_packed", lambda: packed_is_faster)
    layer = torch.nn.Linear(16, 8)
    fast_linear.prepack_linears(layer)
    used = []
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", lambda *args: used.append(1) or torch.zeros(1, 8))
    with torch.no_grad():
        layer(torch.randn(1, 16))
    assert bool(used) is packed_is_faster
