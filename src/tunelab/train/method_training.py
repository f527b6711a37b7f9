"""What a method changes in training beyond which weights train: per-parameter learning rates (LoRA+'s faster B
matrices, layer-wise learning-rate decay), progressive unfreezing (ULMFiT), and L2-SP, the pull toward the pretrained
weights. Installed on any stage's trainer once it is built (`install`), so every stage gets them unchanged."""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers import TrainerCallback

from tunelab.model.adapters import decoder_layers


def install(trainer, method) -> None:
    """Give the trainer the method's optimizer (when its learning rates differ per parameter) and callbacks."""
    model = trainer.model
    keep_trained_weights_fp32(model)
    scale = learning_rate_scale(model, method)
    if getattr(method, "loraplus_lr_ratio", None):
        trainer.optimizer = loraplus_optimizer(trainer, model, method.loraplus_lr_ratio)
    elif scale is not None:
        trainer.optimizer = scaled_optimizer(trainer, model, scale)
    if getattr(method, "unfreeze_every", None):
        trainer.add_callback(ProgressiveUnfreezing(model, method))
    if getattr(method, "l2sp", 0.0) > 0:
        trainer.add_callback(L2SP(model, method.l2sp))


def keep_trained_weights_fp32(model) -> int:
    """TRL's SFTTrainer stores a quantised model's adapter weights in bf16 (QLoRA's recipe on GPUs). tunelab trains
    adapters in fp32 and computes in bf16 under autocast only where the CPU is fast at it (train/speed.py): on an
    AVX2-only CPU bf16 arithmetic is emulated (~100× slower), and bf16-stored weights lose small optimizer updates.
    Casts them back before the optimizer is built; returns how many."""
    cast = [p for p in model.parameters() if p.requires_grad and p.dtype == torch.bfloat16]
    for parameter in cast:
        parameter.data = parameter.data.float()
    return len(cast)


# ---------------------------------------------------------------- per-parameter learning rates


def learning_rate_scale(model, method) -> dict[int, float] | None:
    """Layer-wise decay: parameter id → factor on the learning rate (top layer 1, each layer below × decay, the
    embeddings below the first layer); None when the method has no decay."""
    decay = getattr(method, "layer_lr_decay", 1.0)
    if decay >= 1.0:
        return None
    layers = decoder_layers(model)
    scale = {}
    for depth, layer in enumerate(reversed(layers)):
        scale |= {id(p): decay**depth for p in layer.parameters()}
    scale |= {id(p): decay ** len(layers) for p in model.get_input_embeddings().parameters()}
    return scale


def scaled_optimizer(trainer, model, scale: dict[int, float]):
    """The trainer's own optimizer class and settings, with one parameter group per (weight decay, factor): the
    trainer has no hook for per-layer learning rates."""
    optimizer_class, kwargs = trainer.get_optimizer_cls_and_kwargs(trainer.args, model)
    decayed = set(trainer.get_decay_parameter_names(model))
    groups: dict[tuple[bool, float], list] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            groups.setdefault((name in decayed, scale.get(id(parameter), 1.0)), []).append(parameter)
    base = kwargs.pop("lr", trainer.args.learning_rate)
    param_groups = [{"params": params, "lr": base * factor, "weight_decay": trainer.args.weight_decay if decay else 0.0}
                    for (decay, factor), params in groups.items()]  # fmt: skip
    return optimizer_class(param_groups, lr=base, **kwargs)


def loraplus_optimizer(trainer, model, ratio: float):
    """LoRA+ (PEFT's implementation): B matrices learn `ratio` times faster than A, with the trainer's optimizer."""
    from peft.optimizers import create_loraplus_optimizer

    optimizer_class, kwargs = trainer.get_optimizer_cls_and_kwargs(trainer.args, model)
    lr = kwargs.pop("lr", trainer.args.learning_rate)
    return create_loraplus_optimizer(model, optimizer_class, lr=lr, loraplus_lr_ratio=ratio,
                                     weight_decay=trainer.args.weight_decay, **kwargs)  # fmt: skip


# ---------------------------------------------------------------- progressive unfreezing


class ProgressiveUnfreezing(TrainerCallback):
    """ULMFiT's gradual unfreezing: the top `trainable_layers` train first, `unfreeze_layers` more every
    `unfreeze_every` steps, up to `max_trainable_layers`. The optimizer was built over all of them (so it has their
    state once they thaw); a layer not yet unfrozen has no gradient, which the optimizer skips (no decay either)."""

    def __init__(self, model, method):
        self.layers = list(reversed(decoder_layers(model)))  # top first
        self.method = method
        self.limit = min(method.max_trainable_layers or len(self.layers), len(self.layers))

    def unfrozen_at(self, step: int) -> int:
        grown = self.method.trainable_layers + (step // self.method.unfreeze_every) * self.method.unfreeze_layers
        return min(self.limit, grown)

    def _apply(self, step: int) -> None:
        count = self.unfrozen_at(step)
        for depth, layer in enumerate(self.layers[: self.limit]):
            for parameter in layer.parameters():
                parameter.requires_grad = depth < count

    def on_train_begin(self, args, state, control, **kwargs):
        self._apply(state.global_step)  # a resumed run starts with as many layers as it had reached

    def on_step_begin(self, args, state, control, **kwargs):
        self._apply(state.global_step)


# ---------------------------------------------------------------- L2-SP


class L2SP(TrainerCallback):
    """Adds the gradient of λ·‖θ − θ₀‖² before each optimizer step (after clipping: the clip bounds the task's
    gradient; the pull stays proportional to the distance). θ₀ needs no copy for LoRA-like adapters, whose update
    starts at zero (the penalty is on the update B·A); full and freeze keep a copy of the trained weights only."""

    def __init__(self, model, strength: float):
        self.strength = strength
        self.lora = lora_modules(model)
        self.origin = {} if self.lora else {id(p): p.detach().clone() for p in model.parameters() if p.requires_grad}
        self.parameters = [p for p in model.parameters() if id(p) in self.origin]

    def distance(self) -> float:
        """‖θ − θ₀‖ of the weights it pulls."""
        with torch.no_grad():
            return math.sqrt(sum(float(((p - self.origin[id(p)]) ** 2).sum()) for p in self.parameters))

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        with torch.no_grad():
            for parameter in self.parameters:
                if parameter.grad is not None:
                    parameter.grad.add_(parameter - self.origin[id(parameter)], alpha=2 * self.strength)
            for module, adapter in self.lora:
                _lora_pull(module, adapter, self.strength)


def lora_modules(model, trained_only: bool = True) -> list[tuple[Any, str]]:
    """(PEFT LoRA layer, adapter name) for every LoRA pair in the model (that trains, unless `trained_only=False`)."""
    found = []
    for module in model.modules():
        lora_a = getattr(module, "lora_A", None)
        if isinstance(lora_a, torch.nn.ModuleDict):
            found += [(module, n) for n in lora_a if lora_a[n].weight.requires_grad or not trained_only]
    return found


def _lora_pull(module, adapter: str, strength: float) -> None:
    """∂/∂B and ∂/∂A of λ‖s·B·A‖²: 2λs·ΔW·Aᵀ and 2λs·Bᵀ·ΔW with ΔW = s·B·A."""
    a, b, s = module.lora_A[adapter].weight, module.lora_B[adapter].weight, module.scaling[adapter]
    delta = s * (b @ a)
    if b.grad is not None:
        b.grad.add_(delta @ a.T, alpha=2 * strength * s)
    if a.grad is not None:
        a.grad.add_(b.T @ delta, alpha=2 * strength * s)


def lora_update_norm(model) -> float | None:
    """‖ΔW‖ over all LoRA pairs (Frobenius, s·B·A), or None for a model without them."""
    pairs = lora_modules(model) or lora_modules(model, trained_only=False)  # after training: frozen for evaluation
    if not pairs:
        return None
    with torch.no_grad():
        total = sum(float(((m.scaling[n] * (m.lora_B[n].weight @ m.lora_A[n].weight)) ** 2).sum()) for m, n in pairs)
    return math.sqrt(total)


def distance_from_pretrained(trainer, model) -> float | None:
    """‖θ − θ₀‖ after training, where it costs nothing to know: a LoRA update's norm, or what L2-SP kept θ₀ for."""
    pulled = [c for c in trainer.callback_handler.callbacks if isinstance(c, L2SP) and c.origin]
    return pulled[0].distance() if pulled else lora_update_norm(model)
