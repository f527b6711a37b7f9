"""Bottleneck adapters (Houlsby et al. 2019; Pfeiffer et al. 2020) as a PEFT method: a small module
down-projection → nonlinearity → up-projection, added to the output of a sub-layer — after the attention's output
projection and after the MLP (Houlsby), or after the MLP only (Pfeiffer) — before the residual connection.

Why our own: the `adapters` library (AdapterHub) has them but pins transformers 4.x, and PEFT 0.21 has no bottleneck
tuner. PEFT's tuner machinery is generic though (`BaseTuner`/`BaseTunerLayer` find the target modules, mark only the
adapter trainable, select its state dict, save, load and stack adapters), so this is a PEFT tuner written outside
PEFT: a config, a layer and a model class, registered in PEFT's method tables under its own `peft_type`
("BOTTLENECK"). The adapter folder is an ordinary PEFT adapter folder, `PeftModel.from_pretrained` loads it once
`register()` ran (model/peft_methods.py:load_adapter does), and nothing that reads it can mistake it for LoRA.
PEFT's own `register_peft_method` only accepts names of its `PeftType` enum, hence the tables are filled directly
(PEFT accepts a `peft_type` of another enum since 0.16: huggingface/peft#2634).

A bottleneck adapter is nonlinear, so it does not merge into the weights: `merge` refuses.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import torch
from peft.config import PeftConfig
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from torch import nn


class TunelabPeftType(str, enum.Enum):
    BOTTLENECK = "BOTTLENECK"


ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh}

# Where the adapters go, by the names transformers gives a decoder layer's sub-layer outputs
ATTENTION_OUTPUTS = ("self_attn.o_proj", "attn.c_proj", "self_attention.dense", "attention.dense", "attn.out_proj")
MLP_OUTPUTS = ("mlp.down_proj", "mlp.c_proj", "mlp.fc2", "mlp.dense_4h_to_h", "feed_forward.w2")
PLACEMENTS = {"houlsby": ATTENTION_OUTPUTS + MLP_OUTPUTS, "pfeiffer": MLP_OUTPUTS}

NO_MERGE = (
    "a bottleneck adapter has a nonlinearity between its projections: it is a module of its own, not a change to the "
    "weights, and cannot be merged into them"
)


@dataclass
class BottleneckConfig(PeftConfig):
    """A bottleneck adapter: `size` hidden units, `activation` between the projections, `placement` houlsby (after
    attention and MLP) or pfeiffer (after the MLP only), or explicit `target_modules` (linear layers whose outputs
    get an adapter)."""

    size: int = field(default=64, metadata={"help": "bottleneck width"})
    activation: str = field(default="relu", metadata={"help": "relu, gelu, silu or tanh"})
    placement: str = field(default="houlsby", metadata={"help": "houlsby or pfeiffer"})
    dropout: float = field(default=0.0, metadata={"help": "dropout on the adapter's input"})
    scaling: float = field(default=1.0, metadata={"help": "the adapter's output is multiplied by this"})
    target_modules: list[str] | str | None = field(default=None, metadata={"help": "overrides placement"})
    exclude_modules: list[str] | str | None = field(default=None)
    layers_to_transform: list[int] | int | None = field(default=None)
    layers_pattern: list[str] | str | None = field(default=None)
    modules_to_save: list[str] | None = field(default=None)

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = TunelabPeftType.BOTTLENECK
        register()  # `get_peft_model(model, BottleneckConfig(...))` works without another step
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, not {self.activation!r}")
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {sorted(PLACEMENTS)}, not {self.placement!r}")


class BottleneckLayer(nn.Module, BaseTunerLayer):
    """A linear layer whose output gets each active adapter added: y = W x; y + s · up(act(down(dropout(y))))."""

    adapter_layer_names = ("bottleneck_down", "bottleneck_up")
    other_param_names = ("bottleneck_activation", "bottleneck_scaling")

    def __init__(self, base_layer: nn.Module, adapter_name: str, config: BottleneckConfig) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.bottleneck_down = nn.ModuleDict()
        self.bottleneck_up = nn.ModuleDict()
        self.bottleneck_dropout = nn.ModuleDict()
        self.bottleneck_activation: dict[str, str] = {}
        self.bottleneck_scaling: dict[str, float] = {}
        self._disable_adapters = False
        self.merged_adapters: list[str] = []
        self._active_adapter = adapter_name
        self.update_layer(adapter_name, config)

    @property
    def features(self) -> int:
        base = self.get_base_layer()
        return base.out_features if hasattr(base, "out_features") else base.weight.shape[-1]  # Conv1D: (in, out)

    def update_layer(self, adapter_name: str, config: BottleneckConfig, **_kwargs: Any) -> None:
        """Add an adapter that starts as the identity (its up-projection is zero), as Houlsby et al. initialise."""
        self.bottleneck_down[adapter_name] = nn.Linear(self.features, config.size)
        self.bottleneck_up[adapter_name] = nn.Linear(config.size, self.features)
        nn.init.zeros_(self.bottleneck_up[adapter_name].weight)
        nn.init.zeros_(self.bottleneck_up[adapter_name].bias)
        self.bottleneck_dropout[adapter_name] = nn.Dropout(config.dropout) if config.dropout else nn.Identity()
        self.bottleneck_activation[adapter_name] = config.activation
        self.bottleneck_scaling[adapter_name] = config.scaling
        self._move_adapter_to_device_of_base_layer(adapter_name)
        self.set_adapter(self.active_adapters, inference_mode=config.inference_mode)

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        result = self.base_layer(x, *args, **kwargs)
        if self.disable_adapters:
            return result
        for name in self.active_adapters:
            if name in self.bottleneck_down:
                result = result + self.adapter_output(name, result).to(result.dtype)
        return result

    def adapter_output(self, name: str, hidden: torch.Tensor) -> torch.Tensor:
        down = self.bottleneck_down[name]
        hidden = self.bottleneck_dropout[name](hidden.to(down.weight.dtype))
        activation = ACTIVATIONS[self.bottleneck_activation[name]]()
        return self.bottleneck_up[name](activation(down(hidden))) * self.bottleneck_scaling[name]

    def merge(self, *_args: Any, **_kwargs: Any) -> None:
        raise ValueError(f"cannot merge: {NO_MERGE}")

    def unmerge(self) -> None:
        return None  # never merged

    def __repr__(self) -> str:
        return "bottleneck." + super().__repr__()


class BottleneckModel(BaseTuner):
    """PEFT's tuner for bottleneck adapters: wraps the target linear layers in `BottleneckLayer`."""

    prefix: str = "bottleneck_"
    tuner_layer_cls = BottleneckLayer
    target_module_mapping: dict[str, list[str]] = {}  # targets come from the placement (`prepare_targets`)

    def _prepare_adapter_config(self, peft_config: BottleneckConfig, model_config: dict) -> BottleneckConfig:
        if peft_config.target_modules is None:
            peft_config.target_modules = sorted(placement_targets(self.model, peft_config.placement))
        return peft_config

    def _create_and_replace(self, peft_config, adapter_name, target, target_name, parent, current_key) -> None:
        if isinstance(target, BottleneckLayer):
            target.update_layer(adapter_name, peft_config)
            return
        new_module = BottleneckLayer(target, adapter_name, peft_config)
        if adapter_name not in self.active_adapters:
            new_module.requires_grad_(False)  # an added adapter does not train unless made active
        self._replace_module(parent, target_name, new_module, target)

    def _check_merge_allowed(self) -> None:
        raise ValueError(f"cannot merge: {NO_MERGE}")


def placement_targets(model: nn.Module, placement: str) -> set[str]:
    """The suffixes of the model's module names a placement puts adapters after (those this model has)."""
    names = [name for name, _ in model.named_modules()]
    found = {suffix for suffix in PLACEMENTS[placement] if any(n.endswith("." + suffix) for n in names)}
    if not found:
        known = ", ".join(PLACEMENTS[placement])
        raise ValueError(f"no target modules found for {placement} placement (looked for {known}); "
                         "name the sub-layer outputs in target_modules")  # fmt: skip
    return found


def register() -> None:
    """Put the method in PEFT's tables (once): `get_peft_model` and `PeftModel.from_pretrained` then know it."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_PREFIX_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING

    kind = TunelabPeftType.BOTTLENECK
    PEFT_TYPE_TO_CONFIG_MAPPING.setdefault(kind, BottleneckConfig)
    PEFT_TYPE_TO_TUNER_MAPPING.setdefault(kind, BottleneckModel)
    PEFT_TYPE_TO_PREFIX_MAPPING.setdefault(kind, BottleneckModel.prefix)
