"""The `method:` section, one strict class per method (the discriminated union `MethodSection`). Each method's knobs
are closed choices and bounded numbers; what they mean is PEFT's (model/peft_methods.py maps them onto its configs).

Adding a method = its class here (in `MethodSection`), its entry in model/methods.py, its test.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

Dropout = Annotated[float, Field(ge=0, lt=1)]
Targets = list[str] | Literal["all-linear"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


L2SP_HELP = (
    "L2-SP: adds λ·‖θ − θ₀‖² over the trained weights, pulling them toward the pretrained ones against forgetting "
    "(LoRA: on the update B·A); 0 turns it off"
)


class LoraKnobs(Strict):
    r: PositiveInt = 16
    alpha: PositiveInt = 32
    dropout: Dropout = 0.05
    target_modules: Targets = "all-linear"
    use_dora: bool = False
    use_rslora: bool = False
    loraplus_lr_ratio: Annotated[float, Field(ge=1)] | None = Field(
        None, description="LoRA+: B matrices learn this many times faster than A (the paper suggests 16); empty: off"
    )
    l2sp: Annotated[float, Field(ge=0)] = Field(0.0, description=L2SP_HELP)


class LoraMethod(LoraKnobs):
    type: Literal["lora"]
    init: Literal["default", "gaussian", "pissa", "olora"] = Field(
        "default",
        description="how A and B start: default (B = 0), gaussian, pissa (principal singular vectors of each weight), "
        "olora (QR of each weight); pissa/olora adapters are converted on saving so they apply to the original model",
    )


class QloraMethod(LoraKnobs):
    type: Literal["qlora"]
    bits: Literal[4, 8] = Field(4, description="the frozen base model's weights in 4 or 8 bits (bitsandbytes)")
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type: NormalFloat4 or FP4")
    double_quant: bool = Field(True, description="quantise the 4-bit scales too (about 0.4 bits per weight less)")
    init: Literal["default", "gaussian", "loftq"] = Field(
        "default", description="loftq (4-bit): A and B start so that quantised weight + B·A approximates the original"
    )

    @model_validator(mode="after")
    def _loftq_is_4bit(self):
        if self.init == "loftq" and self.bits != 4:
            raise ValueError("init: loftq starts from the 4-bit quantisation error; use bits: 4 or init: default")
        return self


class WeightKnobs(Strict):  # full and freeze train the model's own weights
    layer_lr_decay: Annotated[float, Field(gt=0, le=1)] = Field(
        1.0, description="layer-wise learning-rate decay: each layer below the top learns this factor slower"
    )
    l2sp: Annotated[float, Field(ge=0)] = Field(0.0, description=L2SP_HELP)


class FullMethod(WeightKnobs):
    type: Literal["full"]


class FreezeMethod(WeightKnobs):
    type: Literal["freeze"]
    trainable_layers: PositiveInt = Field(2, description="train only the last N decoder layers")
    train_embeddings: bool = False
    train_head: bool = False
    unfreeze_every: PositiveInt | None = Field(
        None, description="progressive unfreezing (ULMFiT): every this many steps, unfreeze more layers; empty: off"
    )
    unfreeze_layers: PositiveInt = Field(1, description="progressive unfreezing: how many layers each time")
    max_trainable_layers: PositiveInt | None = Field(
        None, description="progressive unfreezing stops at this many layers (empty: all of them)"
    )


class VeraMethod(Strict):
    type: Literal["vera"]
    r: PositiveInt = Field(256, description="rank of the shared frozen random matrices")
    target_modules: Targets = "all-linear"
    dropout: Dropout = 0.0
    d_initial: Annotated[float, Field(gt=0)] = Field(0.1, description="initial value of the trained d vector")


class LycorisKnobs(Strict):  # LoHa and LoKr (PEFT's LyCORIS family) share their knobs
    r: PositiveInt = 8
    alpha: PositiveInt = 8
    rank_dropout: Dropout = 0.0
    module_dropout: Dropout = 0.0
    target_modules: Targets = "all-linear"


class LohaMethod(LycorisKnobs):
    type: Literal["loha"]


class LokrMethod(LycorisKnobs):
    type: Literal["lokr"]


class Ia3Method(Strict):
    type: Literal["ia3"]
    target_modules: list[str] | None = Field(None, description="scaled layers (empty: PEFT's choice for the model)")
    feedforward_modules: list[str] | None = Field(None, description="those of them whose input is scaled")


class PrefixMethod(Strict):
    type: Literal["prefix"]
    virtual_tokens: PositiveInt = Field(16, description="trained key/value vectors put before every sequence")
    projection: bool = Field(False, description="learn the prefix through a two-layer MLP (more stable)")
    projection_size: PositiveInt = Field(256, description="hidden size of that MLP")


class PromptMethod(Strict):
    type: Literal["prompt"]
    virtual_tokens: PositiveInt = Field(16, description="trained embeddings put before every input")
    init: Literal["random", "text"] = Field("random", description="start from random vectors or from init_text")
    init_text: str | None = Field(None, description="with init: text, e.g. 'Extract the order as JSON:'")

    @model_validator(mode="after")
    def _text_when_told(self):
        if self.init == "text" and not (self.init_text or "").strip():
            raise ValueError("init: text needs init_text, e.g. init_text: 'Extract the order as JSON:'")
        return self


class PtuningMethod(Strict):
    type: Literal["ptuning"]
    virtual_tokens: PositiveInt = 16
    encoder: Literal["mlp", "lstm"] = Field("mlp", description="the prompt encoder that produces the virtual tokens")
    encoder_hidden_size: PositiveInt = 128
    encoder_layers: Annotated[int, Field(ge=1, le=4)] = 2
    encoder_dropout: Dropout = 0.0


class LlamaAdapterMethod(Strict):
    type: Literal["llama_adapter"]
    adapter_len: PositiveInt = Field(10, description="adaption prompt tokens per adapted layer")
    adapter_layers: PositiveInt | None = Field(None, description="adapt the top N layers (empty: all of them)")


class BottleneckMethod(Strict):
    type: Literal["bottleneck"]
    size: PositiveInt = Field(64, description="bottleneck width: hidden units between the two projections")
    placement: Literal["houlsby", "pfeiffer"] = Field(
        "houlsby", description="houlsby: after attention and MLP; pfeiffer: after the MLP only"
    )
    activation: Literal["relu", "gelu", "silu", "tanh"] = "relu"
    dropout: Dropout = 0.0
    scaling: Annotated[float, Field(gt=0)] = Field(1.0, description="the adapter's output is multiplied by this")
    target_modules: list[str] | None = Field(None, description="sub-layer outputs to adapt (overrides placement)")


MethodSection = (
    LoraMethod
    | QloraMethod
    | FullMethod
    | FreezeMethod
    | VeraMethod
    | LohaMethod
    | LokrMethod
    | Ia3Method
    | PrefixMethod
    | PromptMethod
    | PtuningMethod
    | LlamaAdapterMethod
    | BottleneckMethod
)
