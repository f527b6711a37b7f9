"""The recipe's PEFT methods as PEFT configs: LoRA (and its initialisations), QLoRA's LoRA, VeRA, LoHa, LoKr, IA³,
prefix tuning, prompt tuning, P-tuning and LLaMA-Adapter (PEFT's adaption prompt). One builder per method type; the
knobs are the recipe's (config/method_schema.py), the meaning PEFT's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tunelab.errors import RecipeError

LORA_INIT = {"default": True, "gaussian": "gaussian", "pissa": "pissa", "olora": "olora", "loftq": True}
CONVERTED_INITS = ("pissa", "olora")  # they change the base weights: saved adapters are converted to plain LoRA


def _lora(method, task_type: str, model):
    from peft import LoraConfig

    return LoraConfig(
        task_type=task_type,  # SEQ_CLS (a reward model) also trains and saves the new score head
        r=method.r,
        lora_alpha=method.alpha,
        lora_dropout=method.dropout,
        target_modules=method.target_modules,
        use_dora=method.use_dora,
        use_rslora=method.use_rslora,
        init_lora_weights=LORA_INIT[getattr(method, "init", "default")],  # loftq: replaced after wrapping
    )


def _vera(method, task_type: str, model):
    from peft import VeraConfig

    return VeraConfig(
        task_type=task_type,
        r=method.r,
        target_modules=method.target_modules,
        vera_dropout=method.dropout,
        d_initial=method.d_initial,
    )


def _lycoris(config_class: str) -> Callable:
    def build(method, task_type: str, model):
        import peft

        return getattr(peft, config_class)(
            task_type=task_type,
            r=method.r,
            alpha=method.alpha,
            rank_dropout=method.rank_dropout,
            module_dropout=method.module_dropout,
            target_modules=method.target_modules,
        )

    return build


def _ia3(method, task_type: str, model):
    from peft import IA3Config

    feedforward = method.feedforward_modules
    if method.target_modules is not None and feedforward is None:
        feedforward = []  # PEFT's default feedforward list names modules that may not be among the user's targets
    return IA3Config(task_type=task_type, target_modules=method.target_modules, feedforward_modules=feedforward)


def _prefix(method, task_type: str, model):
    from peft import PrefixTuningConfig

    return PrefixTuningConfig(
        task_type=task_type,
        num_virtual_tokens=method.virtual_tokens,
        prefix_projection=method.projection,
        encoder_hidden_size=method.projection_size,
    )


def _prompt(method, task_type: str, model):
    from peft import PromptTuningConfig, PromptTuningInit

    text = method.init == "text"
    return PromptTuningConfig(
        task_type=task_type,
        num_virtual_tokens=method.virtual_tokens,
        prompt_tuning_init=PromptTuningInit.TEXT if text else PromptTuningInit.RANDOM,
        prompt_tuning_init_text=method.init_text if text else None,
        tokenizer_name_or_path=model.config.name_or_path if text else None,
    )


def _ptuning(method, task_type: str, model):
    from peft import PromptEncoderConfig

    return PromptEncoderConfig(
        task_type=task_type,
        num_virtual_tokens=method.virtual_tokens,
        encoder_reparameterization_type=method.encoder.upper(),
        encoder_hidden_size=method.encoder_hidden_size,
        encoder_num_layers=method.encoder_layers,
        encoder_dropout=method.encoder_dropout,
    )


def _llama_adapter(method, task_type: str, model):
    from peft import AdaptionPromptConfig

    layers = model.config.get_text_config().num_hidden_layers
    if method.adapter_layers > layers:
        raise RecipeError(
            "recipe", [("method.adapter_layers", f"the model has {layers} layers; choose at most {layers}")]
        )
    return AdaptionPromptConfig(
        task_type=task_type, adapter_len=method.adapter_len, adapter_layers=method.adapter_layers
    )


PEFT_CONFIGS: dict[str, Callable[[Any, str, Any], Any]] = {
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
}


def peft_config(method, model, task_type: str = "CAUSAL_LM"):
    """The PEFT config for a recipe's method section on this model."""
    return PEFT_CONFIGS[method.type](method, task_type, model)


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


def save_kwargs(model) -> dict[str, Any]:
    """What `save_pretrained` needs for this model's adapter to load onto the original base model."""
    initial = getattr(model, "tunelab_initial_adapter", None)
    return {"path_initial_model_for_weight_conversion": initial} if initial else {}
