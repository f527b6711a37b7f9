"""Load a reward model: a finished `stage: rm` run (its adapter with the score head on its starting model, or its
full model folder) or a sequence-classification model folder with one output."""

from __future__ import annotations

from pathlib import Path

from tunelab.errors import ModelError


def reward_model_from_folder(folder: str, adapter: str | None = None):
    """(model in eval mode, tokenizer) from a model folder (+ a PEFT adapter that trained the score head)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging

    from tunelab.model.load import model_folder

    base = model_folder(folder)
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # a causal LM's folder has no score head yet: transformers' load report says so
    try:
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)
    finally:
        logging.set_verbosity(verbosity)
    tokenizer = AutoTokenizer.from_pretrained(adapter or base)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if adapter:
        from tunelab.model.peft_methods import load_adapter

        model = load_adapter(model, adapter)
    model.eval()
    return model, tokenizer


def load_reward_model(target: str):
    """(model, tokenizer) for a reward-model run or folder; a clear error for anything else."""
    from tunelab.data.tokenize import ensure_chat_template
    from tunelab.runs import RunDir

    if RunDir.is_run(target):
        run = RunDir.open(target)
        stage = run.read_recipe().get("stage", "sft")
        if stage != "rm":
            raise ModelError(f"{target} is a run of stage {stage}, not a reward model; point at a run of stage: rm")
        base, adapter = run.model_for_inference()
        model, tokenizer = reward_model_from_folder(base, adapter)
    elif (Path(target) / "config.json").is_file():
        model, tokenizer = reward_model_from_folder(target)
        if model.config.num_labels != 1:
            raise ModelError(f"{target}: a reward model has one output (num_labels=1), this one has "
                             f"{model.config.num_labels}")  # fmt: skip
    else:
        raise ModelError(f"{target}: not a reward-model run or model folder")
    ensure_chat_template(tokenizer)
    return model, tokenizer


def is_reward_model(target: str) -> bool:
    """A run of stage rm, or a model folder whose architecture is a sequence classifier (a scalar head)."""
    import json

    from tunelab.runs import RunDir

    if RunDir.is_run(target):
        return RunDir.open(target).read_recipe().get("stage") == "rm"
    config = Path(target) / "config.json"
    if not config.is_file():
        return False
    try:
        architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    except (OSError, ValueError):
        return False
    return any(name.endswith("ForSequenceClassification") for name in architectures)
