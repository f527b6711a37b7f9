"""The recipe schema: strict pydantic models, one per YAML section.

Unknown keys are errors (`extra="forbid"`), choices are closed sets (`Literal`), and the `train:` section is kept as a
plain mapping because it is forwarded to the stage's TRL config class (`SFTConfig` for sft), which validates it (see
`config/train_args.py`), so upstream fields are not declared twice.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, get_args

from pydantic import Field, PositiveInt, ValidationInfo, field_validator, model_validator

from tunelab.config.method_schema import (  # noqa: F401 (the method classes are part of the recipe schema)
    FreezeMethod,
    FullMethod,
    LoraMethod,
    MethodSection,
    Strict,
)

# auto: conversations, preference pairs or unpaired preferences, told from the fields; the SFT layouts; or a kind of
# preference data whose layout is told from the fields (tunelab.data.preference lists them)
DataFormat = Literal["auto", "alpaca", "sharegpt", "openai", "preference", "unpaired"]
# The training stages; each name has one entry in tunelab.train.stages.STAGES (a test checks they agree).
StageName = Literal["sft", "rm", "dpo", "kto", "orpo", "simpo", "cpo", "grpo", "rloo", "ppo"]
RL_STAGES = ("grpo", "rloo", "ppo")  # the stages that sample completions and score them with `reward:`
MetricName = Literal["json_validity", "json_schema", "field_accuracy", "exact_match", "rouge_l", "bleu"]


class ModelSection(Strict):
    name: str = Field(
        "smollm2-135m-instruct",
        description="built-in alias, local Hugging Face folder, .gguf file, or hub id",
    )
    revision: str | None = None
    trust_remote_code: bool = False


class SourceSection(Strict):
    path: str
    format: DataFormat = "auto"
    columns: dict[str, str] | None = None
    tags: dict[str, str] | None = None
    limit: PositiveInt | None = None
    ratio: Annotated[float, Field(gt=0, le=1)] | None = Field(
        None, description="share of the training mix (all sources give one, summing to 1), e.g. domain 0.8"
    )


class DataSection(Strict):
    sources: list[SourceSection] = Field(default_factory=list)
    registry: str | None = Field(None, description="a LLaMA-Factory dataset_info.json")
    datasets: list[str] = Field(default_factory=list, description="names in the registry")
    validation: Annotated[float, Field(gt=0, lt=1)] | str | None = Field(
        0.1, description="a fraction of the training records, a file, or null for no validation"
    )
    test: str | None = Field(None, description="a held-out test file for evaluation before and after training")
    max_length: PositiveInt = 1024
    system: str | None = Field(None, description="a system prompt added to records that have none")
    audit: bool = Field(True, description="audit the data before training and refuse leaking or invalid data")
    leakage: Literal["refuse", "drop", "allow"] = Field(
        "refuse",
        description="test/validation records that duplicate training ones: refuse to train, drop them from the "
        "evaluation sets (listed in the audit and data summary), or allow them",
    )
    allow_leakage: bool | None = Field(None, description="deprecated spelling: true is leakage: allow")
    max_invalid_fraction: Annotated[float, Field(ge=0, le=1)] = Field(
        0.0, description="share of invalid records that are skipped (listed in the audit) instead of refused"
    )
    near_threshold: Annotated[float, Field(gt=0, le=1)] = Field(0.8, description="near-duplicate Jaccard threshold")
    contamination_against: list[str] = Field(default_factory=list, description="benchmark files or folders")
    mix_total: PositiveInt | None = Field(None, description="size of the mixed training set (default: no copies)")
    replay: Annotated[float, Field(ge=0, lt=1)] = Field(
        0.0, description="with continue_from: the share of the training set replayed from the previous run's data"
    )

    @field_validator("validation", mode="before")
    @classmethod
    def _fraction_or_path(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError("expected a fraction between 0 and 1, a file path, or null")
        return value

    @model_validator(mode="before")
    @classmethod
    def _old_leakage_spelling(cls, value: Any) -> Any:
        """`allow_leakage: true` (the old spelling) means `leakage: allow` when `leakage` is not given."""
        if isinstance(value, dict) and value.get("allow_leakage") is True and "leakage" not in value:
            return {**value, "leakage": "allow"}
        return value

    @field_validator("leakage")
    @classmethod
    def _drop_needs_the_audit(cls, value: str, info: ValidationInfo) -> str:
        if value == "drop" and info.data.get("audit") is False:
            raise ValueError(
                "drop needs the audit to find the leaked records, but data.audit is false; set data.audit=true"
            )
        return value

    @field_validator("allow_leakage")
    @classmethod
    def _one_leakage_setting(cls, value: bool | None, info: ValidationInfo) -> bool | None:
        leakage = info.data.get("leakage")
        if value is not None and leakage is not None and value != (leakage == "allow"):
            raise ValueError(
                f"data.allow_leakage={str(value).lower()} (the old spelling of data.leakage=allow) contradicts "
                f"data.leakage={leakage}; remove data.allow_leakage and keep data.leakage"
            )
        return value


Method = Annotated[MethodSection, Field(discriminator="type")]


def method_sections() -> dict[str, type[Strict]]:
    """method.type → its schema class, read from the union above (the one place a method's name is written here)."""
    return {get_args(cls.model_fields["type"].annotation)[0]: cls for cls in get_args(MethodSection)}


# ---------------------------------------------------------------- rewards (the RL stages: grpo, rloo, ppo)
# `reward:` lists one or more of these, summed with their weights. A reward scores a completion given its record; the
# built-in ones compare with the record's reference answer (its last assistant message) or check the text alone.


class RewardEntry(Strict):
    weight: float = Field(1.0, description="this reward's weight in the sum")


class JsonValidReward(RewardEntry):
    type: Literal["json_valid"]


class JsonSchemaReward(RewardEntry):
    type: Literal["json_schema"]
    json_schema: str = Field(..., description="a JSON Schema file; 1 when the answer parses and validates")


class FieldAccuracyReward(RewardEntry):
    type: Literal["field_accuracy"]


class ExactMatchReward(RewardEntry):
    type: Literal["exact_match"]


class RegexReward(RewardEntry):
    type: Literal["regex"]
    pattern: str = Field(..., description="a Python regular expression; 1 when it matches")
    full: bool = Field(False, description="the whole completion must match, not only a part of it")


class MaxWordsReward(RewardEntry):
    type: Literal["max_words"]
    max_words: PositiveInt = Field(..., description="0 up to this many words, falling linearly to -1 at twice as many")


class PythonReward(RewardEntry):
    type: Literal["python"]
    function: str = Field(..., description="path/to/file.py:function with TRL's reward-function signature")


class ModelReward(RewardEntry):
    type: Literal["reward_model"]
    run: str = Field(..., description="a finished tunelab reward-model run (stage: rm), e.g. runs/orders-rm")
    batch_size: PositiveInt = 16


class JudgeReward(RewardEntry):
    type: Literal["judge"]
    base_url: str = Field(..., description="an OpenAI-compatible endpoint, e.g. http://localhost:8000/v1")
    model: str
    api_key_env: str | None = Field(None, description="the environment variable holding the API key")
    criteria: str = Field("correct, complete and faithful to the request", description="what the judge rates, 1-10")
    timeout_s: Annotated[float, Field(gt=0)] = 60.0


RewardSection = (
    JsonValidReward
    | JsonSchemaReward
    | FieldAccuracyReward
    | ExactMatchReward
    | RegexReward
    | MaxWordsReward
    | PythonReward
    | ModelReward
    | JudgeReward
)
Reward = Annotated[RewardSection, Field(discriminator="type")]


def reward_sections() -> dict[str, type[Strict]]:
    """reward type → its schema class, read from the union above."""
    return {get_args(cls.model_fields["type"].annotation)[0]: cls for cls in get_args(RewardSection)}


class ForgettingSection(Strict):
    """Score base and tuned model on the same general-ability items; flag a drop larger than `threshold` points."""

    enabled: bool = True
    task: str = Field("probe", description="probe (built in), mmlu, cmmlu, ceval, arc_easy, arc_challenge, or a path")
    data: str | None = Field(None, description="the benchmark folder for mmlu, cmmlu, ceval and arc")
    shots: Annotated[int, Field(ge=0, le=10)] = 3
    scoring: Literal["letters", "text"] | None = Field(None, description="default: the task's (probe and ARC: text)")
    limit: PositiveInt | None = Field(None, description="items per subject")
    threshold: Annotated[float, Field(ge=0, le=100)] = Field(2.0, description="accuracy drop, in points, to flag")

    @model_validator(mode="before")
    @classmethod
    def _switch(cls, value: Any) -> Any:
        return {"enabled": value} if isinstance(value, bool) else value  # `forgetting: false` turns it off


class EvalSection(Strict):
    base: bool = Field(True, description="evaluate the untouched model on the test set before training")
    baselines: list[Literal["base", "zero_shot", "k_shot"]] = Field(
        default_factory=lambda: ["base", "zero_shot", "k_shot"],
        description="what the tuned model is compared with: the base model as the test set asks it, prompted with "
        "the task's instructions (zero_shot), and with eval.k_shot similar training examples in the prompt (k_shot)",
    )
    k_shot: Annotated[int, Field(ge=1, le=32)] = Field(4, description="training examples in each k_shot prompt")
    metrics: list[MetricName] = Field(default_factory=lambda: ["exact_match"])
    json_schema: str | None = Field(None, description="a JSON Schema file for the json_schema metric")
    max_new_tokens: PositiveInt = 256
    batch_size: PositiveInt = 16
    limit: PositiveInt | None = None
    forgetting: ForgettingSection = Field(default_factory=ForgettingSection)


class ExportSection(Strict):
    merge: bool = True
    verify_prompts: Annotated[int, Field(ge=0)] = 4
    dtype: Literal["float32", "bfloat16", "float16"] | None = None


class Recipe(Strict):
    name: str = Field(..., pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    output_dir: str = "runs"
    seed: int = 42
    stage: StageName = Field(
        "sft",
        description="the training stage: sft (conversations); rm (a reward model), dpo, kto, orpo, simpo, cpo "
        "(preference pairs; kto also unpaired feedback); grpo, rloo, ppo (online RL on prompts, scored by `reward:`)",
    )
    model: ModelSection = Field(default_factory=ModelSection)
    continue_from: str | None = Field(
        None, description="a finished run to continue: its trained model is the start, its data can be replayed"
    )
    data: DataSection
    method: Method = Field(default_factory=lambda: LoraMethod(type="lora"))
    train: dict[str, Any] = Field(default_factory=dict)
    reward: list[Reward] = Field(default_factory=list, description="the RL stages' rewards, summed with their weights")
    eval: EvalSection = Field(default_factory=EvalSection)
    export: ExportSection = Field(default_factory=ExportSection)
