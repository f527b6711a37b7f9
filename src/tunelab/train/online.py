"""TRL's online trainers (GRPOTrainer, RLOOTrainer) as tunelab stages: the recipe's rewards, tunelab's prompt
datasets and evaluation (train/rl.py), and tunelab's rollouts in place of their `generate()`.

The rollouts replace the trainers' `_generate_single_turn` (a private method: tunelab pins the TRL minor it tested,
see pyproject.toml). GRPOTrainer also offers a public `rollout_func`, but RLOOTrainer does not, it re-tokenises the
prompts, and TRL 1.16 marks it experimental; one override serves both and hands over the prompts TRL tokenised.
Images (vision-language prompts) keep TRL's own generation.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tunelab.config.schema import Recipe
from tunelab.data.pipeline import Splits
from tunelab.runs import RunDir
from tunelab.train.args import build_training_args
from tunelab.train.callbacks import use_concise_progress
from tunelab.train.rl import build_prompt_splits, rl_evaluate, rl_test_warnings
from tunelab.train.rollout import RolloutTiming, SampleLog, trainer_rollout
from tunelab.train.shared_prompt import share_online_prompts
from tunelab.train.stage import Stage, trainer_stage


def with_tunelab_rollouts(trainer_class: type, returns_logprobs: bool) -> type:
    """trainer_class sampling through tunelab's decoder; `rollout_timing` adds up the time spent there."""

    class TunelabRollouts(trainer_class):
        def _generate_single_turn(self, prompt_ids, images, multimodal_fields, *args, **kwargs):
            if images is not None or self.use_vllm:
                return super()._generate_single_turn(prompt_ids, images, multimodal_fields, *args, **kwargs)
            completion_ids, logprobs = trainer_rollout(self, [list(p) for p in prompt_ids], self.rollout_timing)
            return (completion_ids, logprobs) if returns_logprobs else completion_ids

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            sample_log = getattr(self, "sample_log", None)  # set by build_online_trainer (not in bench/rl_rollout.py)
            if sample_log is not None and "loss" in logs and self._logs["prompt"]:  # TRL keeps the latest batch here
                rewards = {name: list(values) for name, values in self._logs["rewards"].items()}
                sample_log.offer(self.state.global_step, list(self._logs["prompt"]),
                                      list(self._logs["completion"]), rewards)  # fmt: skip
            super().log(logs, start_time)

    TunelabRollouts.__name__ = f"Tunelab{trainer_class.__name__}"
    return TunelabRollouts


def online_defaults(recipe: Recipe) -> dict[str, Any]:
    """Settings under the recipe's train section: completions as long as the evaluation's answers (TRL's 512 would
    spend most rollouts on tokens nobody scores), and the rewards' weights."""
    return {"max_completion_length": recipe.eval.max_new_tokens, "reward_weights": [r.weight for r in recipe.reward]}


def build_online_trainer(classes: Callable[[], tuple[type, type]], returns_logprobs: bool):
    def build(recipe: Recipe, run: RunDir, model, tokenizer, splits: Splits, plan, callbacks):
        from tunelab.train.rewards import build_rewards

        trainer_class, config_class = classes()
        rewards = build_rewards(recipe.reward)
        train = online_defaults(recipe) | recipe.train
        args = build_training_args(
            config_class, train, str(run.checkpoints), recipe.seed, has_validation=splits.validation is not None,
            plan=plan, run_name=recipe.train.get("run_name") or recipe.name,
        )  # fmt: skip
        trainer = with_tunelab_rollouts(trainer_class, returns_logprobs)(
            model=model, reward_funcs=[r.fn for r in rewards], args=args, train_dataset=splits.train,
            eval_dataset=splits.validation, processing_class=tokenizer, callbacks=callbacks,
        )  # fmt: skip
        trainer.rollout_timing = RolloutTiming()
        trainer.sample_log = SampleLog(run.path / "samples.jsonl", recipe.train.get("sample_every", 10))
        if plan.padding_free:
            share_online_prompts(trainer)
        use_concise_progress(trainer)
        return trainer

    return build


def describe_forward(recipe: Recipe) -> dict[str, str]:
    if recipe.train.get("padding_free", True):
        return {"completion_forward": "each prompt once for its G completions, LM head on completion tokens"}
    return {"completion_forward": "TRL's padded rows (padding_free: false)"}


def online_stage(name: str, summary: str, classes, describe, returns_logprobs: bool = True) -> Stage:
    return trainer_stage(
        name, summary, classes, reads="prompts", build_datasets=build_prompt_splits, evaluate=rl_evaluate,
        build_trainer=build_online_trainer(classes, returns_logprobs), test_warnings=rl_test_warnings,
        describe=lambda recipe, model: describe(recipe, model) | describe_forward(recipe), packs_sequences=True,
    )  # fmt: skip
