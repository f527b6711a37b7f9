"""PPO's value model: a second LoRA adapter ("value") on the policy's base with a linear head on the last hidden
state (PEFT's modules_to_save keeps the head with that adapter, in checkpoints too), dropped before the policy is
saved and merged."""

from __future__ import annotations

import torch

from tunelab.config.schema import Recipe

VALUE_ADAPTER = "value"
VALUE_HEAD = "value_head"


def add_value_head(model):
    """The causal LM with a linear value head beside its LM head (trained with the value adapter only). It starts
    at zero: a randomly initialised head on this model's normalised hidden states estimated values of ±4 for scores
    between 0 and 1.5 (value loss 8.7 on the first batch), and the clipped value loss lets an estimate move only
    `cliprange_value` from its rollout value per batch, so the value model was still off by ~0.7 after 25 rollout
    batches, four times the reward one wrong field costs; its bias is set to the first batch's mean score
    (centre_value_head)."""
    hidden = model.config.hidden_size
    head = torch.nn.Linear(hidden, 1)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    setattr(model, VALUE_HEAD, head.to(next(model.parameters()).dtype))
    return model


def add_value_adapter(model, recipe: Recipe) -> None:
    """A second LoRA adapter for the value model, shaped like the policy's, owning the value head."""
    from peft import LoraConfig

    method = recipe.method
    config = LoraConfig(r=method.r, lora_alpha=method.alpha, lora_dropout=method.dropout, task_type="CAUSAL_LM",
                        target_modules=method.target_modules, exclude_modules=[VALUE_HEAD],
                        modules_to_save=[VALUE_HEAD])  # fmt: skip
    model.add_adapter(VALUE_ADAPTER, config)
    model.set_adapter("default")
    trainable_again(model)


def trainable_again(model) -> None:
    """PEFT's set_adapter freezes the adapters that are not active; PPO trains the policy and the value adapter."""
    for name, parameter in model.named_parameters():
        if _in_adapter(name, "default") or _in_adapter(name, VALUE_ADAPTER):
            if "lora_" in name or "modules_to_save" in name:
                parameter.requires_grad_(True)


def is_value_parameter(name: str) -> bool:
    """Whether a parameter (by its name in the PEFT model) belongs to the value model: its adapter or its head."""
    return _in_adapter(name, VALUE_ADAPTER)


def _in_adapter(name: str, adapter: str) -> bool:
    return f".{adapter}." in name or name.endswith(f".{adapter}")


def drop_value_model(model) -> None:
    """The policy alone again: the value adapter deleted and the head removed, so the saved and merged model is a
    plain causal LM."""
    if VALUE_ADAPTER in getattr(model, "peft_config", {}):
        model.delete_adapter(VALUE_ADAPTER)
        model.set_adapter("default")
    base = model.get_base_model()
    if hasattr(base, VALUE_HEAD):
        delattr(base, VALUE_HEAD)
    trainable_again(model)


def centre_value_head(model, mean_score: float) -> None:
    """The value head's bias at the first rollout batch's mean score: its first estimates are the average return
    instead of 0, so the value model learns differences between states from the start."""
    head = getattr(model.get_base_model(), VALUE_HEAD)
    trained = head.modules_to_save[VALUE_ADAPTER] if hasattr(head, "modules_to_save") else head
    trained.bias.data.fill_(mean_score)
