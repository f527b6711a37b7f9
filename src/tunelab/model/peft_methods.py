"""The recipe's PEFT methods as PEFT configs: LoRA (and its initialisations), QLoRA's LoRA, VeRA, LoHa, LoKr, IA³,
prefix tuning, prompt tuning, P-tuning, LLaMA-Adapter (PEFT's adaption prompt) and bottleneck adapters (a PEFT tuner
of ours: model/bottleneck.py). One builder per method type; the knobs are the recipe's (config/method_schema.py), the
meaning PEFT's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tunelab.errors import RecipeError

LORA_INIT = {"default": True, "gaussian": "gaussian", "pissa": "pissa", "olora": "olora", "loftq": True}
CONVERTED_INITS = ("pissa", "olora")  # they change the base weights: saved adapters are converted to plain LoRA


def _renamed(method, names: dict[str, str]) -> dict[str, Any]:
    """PEFT's argument names → the recipe's field names, read from the method section."""
    return {peft_name: getattr(method, ours) for peft_name, ours in names.items()}


LORA_FIELDS = {"r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout", "target_modules": "target_modules",
               "use_dora": "use_dora", "use_rslora": "use_rslora"}  # fmt: skip
LYCORIS_FIELDS = {"r": "r", "alpha": "alpha", "rank_dropout": "rank_dropout", "module_dropout": "module_dropout",
                  "target_modules": "target_modules"}  # fmt: skip


def _lora(method, model) -> tuple[str, dict[str, Any]]:
    init = LORA_INIT[getattr(method, "init", "default")]  # loftq: replaced after wrapping
    return "LoraConfig", _renamed(method, LORA_FIELDS) | {"init_lora_weights": init}


def _vera(method, model) -> tuple[str, dict[str, Any]]:
    names = {"r": "r", "target_modules": "target_modules", "vera_dropout": "dropout", "d_initial": "d_initial"}
    return "VeraConfig", _renamed(method, names)


def _lycoris(config_class: str) -> Callable:
    return lambda method, model: (config_class, _renamed(method, LYCORIS_FIELDS))


def _ia3(method, model) -> tuple[str, dict[str, Any]]:
    feedforward = method.feedforward_modules
    if method.target_modules is not None and feedforward is None:
        feedforward = []  # PEFT's default feedforward list names modules that may not be among the user's targets
    return "IA3Config", {"target_modules": method.target_modules, "feedforward_modules": feedforward}


def _prefix(method, model) -> tuple[str, dict[str, Any]]:
    names = {"num_virtual_tokens": "virtual_tokens", "prefix_projection": "projection",
             "encoder_hidden_size": "projection_size"}  # fmt: skip
    return "PrefixTuningConfig", _renamed(method, names)


def _prompt(method, model) -> tuple[str, dict[str, Any]]:
    text = method.init == "text"
    return "PromptTuningConfig", {"num_virtual_tokens": method.virtual_tokens,
                                  "prompt_tuning_init": "TEXT" if text else "RANDOM",
                                  "prompt_tuning_init_text": method.init_text if text else None,
                                  "tokenizer_name_or_path": model.config.name_or_path if text else None}  # fmt: skip


def _ptuning(method, model) -> tuple[str, dict[str, Any]]:
    names = {"num_virtual_tokens": "virtual_tokens", "encoder_hidden_size": "encoder_hidden_size",
             "encoder_num_layers": "encoder_layers", "encoder_dropout": "encoder_dropout"}  # fmt: skip
    return "PromptEncoderConfig", _renamed(method, names) | {"encoder_reparameterization_type": method.encoder.upper()}


def _llama_adapter(method, model) -> tuple[str, dict[str, Any]]:
    layers = model.config.get_text_config().num_hidden_layers
    if (method.adapter_layers or 0) > layers:
        problem = f"the model has {layers} layers; choose at most {layers}"
        raise RecipeError("recipe", [("method.adapter_layers", problem)])
    return "AdaptionPromptConfig", {
        "adapter_len": method.adapter_len,
        "adapter_layers": method.adapter_layers or layers,
    }


def _bottleneck(method, model) -> tuple[str, dict[str, Any]]:
    names = {"size": "size", "placement": "placement", "activation": "activation", "dropout": "dropout",
             "scaling": "scaling", "target_modules": "target_modules"}  # fmt: skip
    return "BottleneckConfig", _renamed(method, names)


# method type → (PEFT config class name, its arguments) for a method section on a model
PEFT_CONFIGS: dict[str, Callable[[Any, Any], tuple[str, dict[str, Any]]]] = {
    "lora": _lora,
    "qlora": _lora,
    "vera": _vera,
    "loha": _lycoris("LoHaConfig"),
    "lokr": _lycoris("LoKrConfig"),
    "ia3": _ia3,
    "prefix": _prefix,
    "prompt": _prompt,
    "ptuning": _ptuning,
    "llama_adapter": _llama_adapter,
    "bottleneck": _bottleneck,
}


def peft_config(method, model, task_type: str = "CAUSAL_LM"):
    """The PEFT config for a recipe's method section on this model."""
    import peft

    from tunelab.model import bottleneck  # its config registers the method with PEFT when made

    class_name, arguments = PEFT_CONFIGS[method.type](method, model)
    config_class = getattr(peft, class_name, None) or getattr(bottleneck, class_name)
    return config_class(task_type=task_type, **arguments)


def register_own_methods() -> None:
    """Make PEFT know tunelab's own PEFT method (bottleneck adapters), to read or load such an adapter folder."""
    from tunelab.model.bottleneck import register

    register()


def load_adapter(model, folder, **kwargs: Any):
    """`PeftModel.from_pretrained` for any adapter a tunelab method saves."""
    from peft import PeftModel

    register_own_methods()
    return PeftModel.from_pretrained(model, str(folder), **kwargs)


def task_type_of(model) -> str:
    return "SEQ_CLS" if type(model).__name__.endswith("ForSequenceClassification") else "CAUSAL_LM"


def wrap_with_peft(model, method) -> Any:
    """The model wrapped with the method's trainable PEFT adapter; the base weights stay frozen (PiSSA and OLoRA move
    the adapter's principal part out of them: the initial adapter is kept so the saved one applies to the original)."""
    from peft import get_peft_model

    config = peft_config(method, model, task_type_of(model))
    try:
        wrapped = get_peft_model(model, config)
    except (ValueError, TypeError, NotImplementedError) as error:  # e.g. target modules this model does not have
        field = "method.target_modules" if "target" in str(error).lower() else "method.type"
        raise RecipeError("recipe", [(field, f"{method.type}: {error}")]) from None
    if getattr(method, "init", None) in CONVERTED_INITS:
        keep_initial_adapter(wrapped)
    return wrapped


def keep_initial_adapter(model) -> None:
    """Save the adapter as initialised (PiSSA/OLoRA): `save_trained` converts the trained one against it."""
    import tempfile

    folder = tempfile.mkdtemp(prefix="tunelab-initial-adapter-")
    model.save_pretrained(folder)
    model.tunelab_initial_adapter = folder


def forget_initial_adapter(model) -> None:
    """Remove the initial adapter kept for the conversion, once the converted adapter is saved."""
    import shutil

    folder = model.__dict__.pop("tunelab_initial_adapter", None)
    if folder:
        shutil.rmtree(folder, ignore_errors=True)


def save_kwargs(model) -> dict[str, Any]:
    """What `save_pretrained` needs for this model's adapter to load onto the original base model."""
    initial = getattr(model, "tunelab_initial_adapter", None)
    return {"path_initial_model_for_weight_conversion": initial} if initial else {}
