"""What a user may point a command at: a run directory, an adapter folder, or any model name.

`tunelab chat`, `eval`, `bench` and `judge` all take the same kinds of target and load it the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Target:
    name: str  # what the user wrote
    base: str  # the base model name or folder
    adapter: str | None  # a PEFT adapter folder on top of it
    run: object | None  # the RunDir when the target is a run

    @property
    def label(self) -> str:
        return Path(self.name.rstrip("/")).name or self.name


def resolve_target(target: str) -> Target:
    from tunelab.runs import RunDir

    if RunDir.is_run(target):
        run = RunDir.open(target)
        base, adapter = run.model_for_inference()
        return Target(target, base, adapter, run)
    if (Path(target) / "adapter_config.json").is_file():
        from peft import PeftConfig

        from tunelab.errors import ModelError
        from tunelab.model.peft_methods import register_own_methods

        register_own_methods()
        try:
            base = PeftConfig.from_pretrained(target).base_model_name_or_path
        except (ValueError, TypeError, OSError) as error:  # JSONDecodeError is a ValueError
            raise ModelError(f"{Path(target) / 'adapter_config.json'}: not a readable PEFT adapter config ({error}); "
                             "export the adapter again or point at the run directory") from None  # fmt: skip
        return Target(target, base, target, None)
    return Target(target, target, None, None)


def load_target(target: str | Target):
    """(model in eval mode, tokenizer with a chat template, Target)."""
    from tunelab.data.tokenize import ensure_chat_template
    from tunelab.model.load import load_for_inference

    resolved = resolve_target(target) if isinstance(target, str) else target
    model, tokenizer = load_for_inference(resolved.base, resolved.adapter)
    ensure_chat_template(tokenizer)
    return model, tokenizer, resolved
