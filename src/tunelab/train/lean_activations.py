"""Fewer copies of the same activations kept for the backward pass, with bit-identical results.

Measured on the built-in model (LoRA on every linear layer, bf16 autocast; a tally of what autograd saves per step,
`torch.autograd.graph.saved_tensors_hooks`), two things were kept more than once:

- **Casts of one input.** Under autocast every linear layer casts its fp32 input to bf16 by itself, and each layer
  that trains keeps its own copy: q, k and v's adapters keep three bf16 copies of the same normalised hidden states,
  gate's and up's two. Here a layer's input is cast once and the copy shared (`SharedCast`: its backward returns the
  fp32 gradient, as autocast's cast does, so gradients are summed in fp32 as before).
- **A gated MLP's product** `down(act(gate(x)) * up(x))`: autograd keeps gate (for act), act(gate) and up (for the
  product). `GatedProduct` keeps gate and up and recomputes act(gate) in the backward pass (one elementwise op).

Together about a third of a LoRA step's saved activations on SmolLM2 (the rest: the residual stream kept by each
norm, attention's inputs, the down projection's input). Neither has a switch in transformers or PyTorch; gradient
checkpointing (which they have) recomputes whole layers instead. An MLP class is changed only after its patched
forward gave exactly the original's output on a probe input.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager

import torch

CAST_ATTRIBUTE = "_tunelab_autocast_copy"


class SharedCast(torch.autograd.Function):
    """The autocast copy of `source` made once (`shared`), handed to each consumer as its own autograd node."""

    @staticmethod
    def forward(ctx, source, shared):
        return shared.view_as(shared)

    @staticmethod
    def backward(ctx, grad):
        return grad.float(), None


def _cast_once(module, args):
    """Forward pre-hook of a linear layer: under CPU autocast, feed it the one bf16 copy of an fp32 input."""
    source = args[0] if args else None
    if not (torch.is_tensor(source) and source.dtype == torch.float32 and torch.is_autocast_enabled("cpu")):
        return None
    dtype = torch.get_autocast_dtype("cpu")
    cached = source.__dict__.get(CAST_ATTRIBUTE)
    if cached is None or cached[0] != source._version or cached[1].dtype != dtype:  # changed in place: cast again
        with torch.no_grad():
            cached = (source._version, source.to(dtype))
        setattr(source, CAST_ATTRIBUTE, cached)
    shared = cached[1]
    if source.requires_grad and torch.is_grad_enabled():
        shared = SharedCast.apply(source, shared)
    return (shared, *args[1:])


class GatedProduct(torch.autograd.Function):
    """act(gate) * up, keeping gate and up for the backward pass (not act(gate) as well)."""

    @staticmethod
    def forward(ctx, gate, up, act):
        ctx.act = act
        ctx.save_for_backward(gate, up)
        return act(gate) * up

    @staticmethod
    def backward(ctx, grad):
        gate, up = ctx.saved_tensors
        with torch.enable_grad():
            gate = gate.detach().requires_grad_(ctx.needs_input_grad[0])
            activated = ctx.act(gate)
        grad_gate = None
        if ctx.needs_input_grad[0]:
            (grad_gate,) = torch.autograd.grad(activated, gate, grad * up)
        grad_up = grad * activated.detach() if ctx.needs_input_grad[1] else None
        return grad_gate, grad_up, None


def gated_mlp_forward(self, x):
    product = GatedProduct.apply(self.gate_proj(x), self.up_proj(x), self.act_fn)
    return self.down_proj(product)


def _is_gated_mlp(module) -> bool:
    parts = ("gate_proj", "up_proj", "down_proj")
    return all(isinstance(getattr(module, name, None), torch.nn.Module) for name in parts) and callable(
        getattr(module, "act_fn", None)
    )


def _same_output(module) -> bool:
    """The patched forward gives exactly the module's own output on a probe input, with the same random state (else
    the class computes something else, e.g. its own dropout or another gating, and is left alone)."""
    width = getattr(module.gate_proj, "in_features", None)
    if not isinstance(width, int):
        return False
    weight = next(module.parameters())
    probe = torch.randn(2, 3, width, generator=torch.Generator().manual_seed(0)).to(weight.device, weight.dtype)
    outputs = []
    try:
        for forward in (module, types.MethodType(gated_mlp_forward, module)):
            with torch.no_grad(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                outputs.append(forward(probe))
    except Exception:  # noqa: BLE001 - a module this forward cannot call is simply not changed
        return False
    return torch.equal(*outputs)


def _gated_mlps(model) -> list[torch.nn.Module]:
    verdicts: dict[type, bool] = {}
    found = []
    for module in model.modules():
        if _is_gated_mlp(module) and "forward" not in module.__dict__:
            if type(module) not in verdicts:
                verdicts[type(module)] = _same_output(module)
            if verdicts[type(module)]:
                found.append(module)
    return found


@contextmanager
def lean_activations(model) -> Iterator[dict[str, int]]:
    """Inside the block, linear inputs are cast once and gated MLPs keep less; yields how many of each were changed."""
    hooks = [m.register_forward_pre_hook(_cast_once) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    mlps = _gated_mlps(model)
    for module in mlps:
        module.forward = types.MethodType(gated_mlp_forward, module)
    try:
        yield {"shared_casts": len(hooks), "gated_mlps": len(mlps)}
    finally:
        for hook in hooks:
            hook.remove()
        for module in mlps:
            del module.forward
