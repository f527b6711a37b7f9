"""Rollouts for the RL stages: the policy's current weights sample completions through tunelab's decoder
(`model/decode.py`: each prompt prefilled once for its G samples, finished rows leave the batch, weights pre-packed
for the rollout), for TRL's GRPOTrainer and RLOOTrainer (train/online.py puts it in place of their `generate()`) and
for tunelab's PPO. `RolloutTiming` keeps how long rollouts took, for the share of a step that is generation."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class RolloutTiming:
    seconds: float = 0.0
    tokens: int = 0
    calls: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    def add(self, seconds: float, tokens: int) -> None:
        self.seconds += seconds
        self.tokens += tokens
        self.calls += 1
        self.history.append({"seconds": seconds, "tokens": tokens})


def chat_prompt_ids(tokenizer, prompt: Any) -> list[int]:
    """A prompt (a conversation, or plain text as one user turn) as token ids with the assistant header."""
    from tunelab.data.tokenize import prompt_ids_for_generation

    messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
    return prompt_ids_for_generation(tokenizer, messages)


@contextmanager
def without_mixed_precision(model) -> Iterator[None]:
    """The model's own forward inside the block. accelerate wraps a mixed-precision model's forward in bf16 autocast
    (and `unwrap_model` keeps the wrapper), under which the packed float32 weights are bypassed (fast_linear.py);
    rollouts decode on them instead, each LoRA layer one merged matrix. bench/rl_rollout.py: 2.4x the tokens/s of
    TRL's generate under the same bf16 mixed precision."""
    original, wrapper = model.__dict__.get("_original_forward"), model.__dict__.get("forward")
    if original is None or wrapper is None:
        yield
        return
    model.forward = original
    try:
        yield
    finally:
        model.forward = wrapper


def sample_policy(model, tokenizer, prompt_ids: list[list[int]], settings, seed: int, pack: bool = True):
    """Samples from the policy as it is now (dropout off; with `pack`, in float32 on weights packed for the rollout,
    then restored)."""
    from tunelab.model.decode import packed_weights, sample_completions
    from tunelab.model.generate import eval_mode, stop_token_ids

    stops = set(stop_token_ids(model, tokenizer))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    generator = torch.Generator().manual_seed(seed)
    fast = (without_mixed_precision(model), packed_weights(model)) if pack else ()
    with eval_mode(model), ExitStack() as stack:
        for context in fast:
            stack.enter_context(context)
        return sample_completions(model, prompt_ids, settings, stops, pad, generator)


def trainer_rollout(trainer, prompt_ids: list[list[int]], timing: RolloutTiming, pack: bool = True):
    """(completion ids, their log-probabilities) for a TRL online trainer's tokenised prompts (repeated once per
    generation), sampled with the trainer's settings (max_completion_length, temperature, top_p, top_k) from the
    policy as it is at this step; seeded by the step, so a resumed run samples what the first attempt would have."""
    from tunelab.model.decode import SamplingSettings

    args, tokenizer = trainer.args, trainer.processing_class
    model = trainer.accelerator.unwrap_model(trainer.model)
    settings = SamplingSettings(
        max_new_tokens=args.max_completion_length,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k or 0,
        max_rows=max(len(prompt_ids), 1),
    )
    started = time.perf_counter()
    samples = sample_policy(model, tokenizer, prompt_ids, settings, args.seed + trainer.state.global_step, pack)
    timing.add(time.perf_counter() - started, sum(len(s.ids) for s in samples))
    return [s.ids for s in samples], [s.logprobs for s in samples]


class SampleLog:
    """Sampled answers with their rewards, every `every`-th time it is offered some, appended to samples.jsonl:
    reward hacking shows there first (the report shows the latest)."""

    def __init__(self, path, every: int = 10):
        self.path, self.every, self.offered = path, max(1, every), 0

    def offer(self, step: int, prompts, completions, rewards: dict[str, list], totals=None) -> None:
        self.offered += 1
        if (self.offered - 1) % self.every:
            return
        from tunelab.jsonl import jsonl_text
        from tunelab.train.rewards import completion_text, last_user_text

        rows = []
        for index, (prompt, completion) in enumerate(zip(prompts, completions, strict=True)):
            row = {"step": step, "prompt": last_user_text(prompt), "completion": completion_text(completion)}
            if totals is not None:
                row["reward"] = float(totals[index])
            row["rewards"] = {name: _plain(values[index]) for name, values in rewards.items()}
            rows.append(row)
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(jsonl_text(rows))


def _plain(value) -> float | None:
    return None if value is None or value != value else float(value)  # NaN (no reward) → null
