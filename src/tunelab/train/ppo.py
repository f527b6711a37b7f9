"""Proximal policy optimisation, tunelab's own (TRL 1.16 removed its PPOTrainer): prompts → `num_generations`
sampled completions each (tunelab's rollouts) → the recipe's rewards → per-token KL penalty to the reference → GAE
over a value model → several epochs of clipped-surrogate updates per rollout batch. The arithmetic is
train/ppo_math.py's. The forward passes pack a batch into one row without padding, each prompt computed once for its
completions (train/shared_prompt.py's layout), and minibatches keep a prompt's completions together.

Models, all on one base in memory: the policy is the recipe's LoRA adapter ("default"); the reference is the base
with the adapter disabled; the value model is a second LoRA adapter ("value") with a linear head on the last hidden
state (PEFT's modules_to_save keeps the head with that adapter, in checkpoints too). The value adapter and head are
dropped before the policy is saved and merged.

It is a transformers `Trainer` (checkpoints, resume, callbacks, logging, schedules come with it): each trainer step is
one minibatch update, and the rollout batch is sampled and scored when a new one is due — every
num_ppo_epochs × num_mini_batches steps, over which the sampler repeats the same prompts (TRL's RepeatSampler).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import Trainer, TrainingArguments

from tunelab.config.schema import Recipe
from tunelab.train import ppo_math
from tunelab.train.packing import PACKED_ATTENTION
from tunelab.train.ppo_value import (
    VALUE_ADAPTER,
    VALUE_HEAD,
    add_value_adapter,
    add_value_head,
    centre_value_head,
    drop_value_model,
    is_value_parameter,
    trainable_again,
)
from tunelab.train.rl import build_prompt_splits, rl_evaluate, rl_test_warnings
from tunelab.train.shared_prompt import prefix_layout
from tunelab.train.stage import Stage


@dataclass
class PPOConfig(TrainingArguments):
    """PPO's settings (the `train:` section of a `stage: ppo` recipe) on top of transformers' TrainingArguments.
    per_device_train_batch_size is the number of prompts per rollout batch."""

    num_ppo_epochs: int = field(default=4, metadata={"help": "passes over each rollout batch"})
    num_mini_batches: int = field(default=1, metadata={"help": "minibatches per pass (one optimizer step each)"})
    num_generations: int = field(default=1, metadata={"help": "answers sampled per prompt in a rollout batch"})
    max_completion_length: int = field(default=128, metadata={"help": "tokens sampled per completion at most"})
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    kl_coef: float = field(default=0.05, metadata={"help": "the KL penalty's coefficient (its start when adaptive)"})
    kl_target: float | None = field(default=None, metadata={"help": "adapt kl_coef toward this KL (nats/sequence)"})
    kl_horizon: int = 10_000
    kl_stop: float | None = field(default=None, metadata={"help": "stop training once the batch's mean KL passes it"})
    gamma: float = 1.0
    lam: float = 0.95
    cliprange: float = 0.2
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    value_learning_rate: float | None = field(default=None, metadata={"help": "the value model's (None: the policy's)"})
    value_warmup: int = field(default=0, metadata={"help": "first rollout batches that train the value model alone"})
    whiten_rewards: bool = False
    missing_eos_penalty: float | None = field(default=None, metadata={"help": "subtracted from cut-off completions"})
    reward_weights: list[float] | None = None
    padding_free: bool = field(default=True, metadata={"help": "one packed row per forward, each prompt once"})


@dataclass
class RolloutBatch:
    """A scored rollout batch, padded: prompts left-padded to P, completions right-padded to T."""

    input_ids: torch.Tensor  # B × (P + T)
    attention_mask: torch.Tensor
    prompt_width: int
    mask: torch.Tensor  # B × T, 1 on completion tokens
    old_logprobs: torch.Tensor
    old_values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor

    def rows(self, index: torch.Tensor) -> RolloutBatch:
        picked = {name: getattr(self, name)[index] for name in ("input_ids", "attention_mask", "mask", "old_logprobs",
                                                                 "old_values", "advantages", "returns")}  # fmt: skip
        return RolloutBatch(prompt_width=self.prompt_width, **picked)


class PPOTrainer(Trainer):
    def __init__(self, *args, rewards, sample_log, **kwargs):
        super().__init__(*args, **kwargs)
        from tunelab.train.rollout import RolloutTiming

        self.rewards, self.sample_log = rewards, sample_log
        self.kl = ppo_math.KLController(self.args.kl_coef, self.args.kl_target, self.args.kl_horizon)
        self.rollout_timing = RolloutTiming()
        self._batch: RolloutBatch | None = None
        self._order: list[torch.Tensor] = []
        self._pending: dict[str, float] = {}

    # --- data: each prompt batch repeated once per minibatch update ----------------------------------------------

    def _updates_per_batch(self) -> int:
        return self.args.num_ppo_epochs * self.args.num_mini_batches

    def _get_train_sampler(self, dataset=None):
        from trl.trainer.utils import RepeatSampler

        dataset = dataset if dataset is not None else self.train_dataset
        return RepeatSampler(dataset, mini_repeat_count=1, batch_size=self.args.per_device_train_batch_size,
                             repeat_count=self._updates_per_batch(), shuffle=True, seed=self.args.seed)  # fmt: skip

    def _prepare_inputs(self, inputs: list[dict[str, Any]]) -> RolloutBatch:
        """The next minibatch; a new rollout batch (sampled, scored, advantages computed) when one is due."""
        if not self._order:
            self._batch = self._rollout(inputs)
            generator = torch.Generator().manual_seed(self.args.seed + self.state.global_step)
            self._order = minibatch_order(len(inputs), self.args.num_generations, self.args.num_mini_batches,
                                          self.args.num_ppo_epochs, generator)  # fmt: skip
        return self._batch.rows(self._order.pop(0))

    # --- the rollout ---------------------------------------------------------------------------------------------

    @torch.no_grad()
    def _rollout(self, records: list[dict[str, Any]]) -> RolloutBatch:
        from tunelab.model.decode import SamplingSettings
        from tunelab.train.rollout import chat_prompt_ids, sample_policy

        args, model = self.args, self.accelerator.unwrap_model(self.model)
        records = [record for record in records for _ in range(args.num_generations)]  # a prompt's answers together
        settings = SamplingSettings(args.max_completion_length, args.temperature, args.top_p, args.top_k,
                                    max_rows=len(records))  # fmt: skip
        prompt_ids = [chat_prompt_ids(self.processing_class, r["prompt"]) for r in records]
        started = time.perf_counter()
        samples = sample_policy(model, self.processing_class, prompt_ids, settings, args.seed + self.state.global_step)
        seconds = time.perf_counter() - started
        self.rollout_timing.add(seconds, sum(len(s.ids) for s in samples))
        scores, columns = self._scores(records, samples)
        if self.state.global_step == 0:  # a fresh run's first batch (a resumed run loads its head)
            centre_value_head(model, float(scores.mean()))
        batch = self._padded(samples)
        # prompt and completion tokens of every rollout, as TRL's GRPOTrainer counts them: tokens/s and training.json
        self.state.num_input_tokens_seen += int(batch.attention_mask.sum())
        model.eval()
        logprobs, values, ref_logprobs, entropy = self._old_estimates(model, batch)
        model.train()
        return self._advantages(batch, scores, logprobs, values, ref_logprobs, entropy, columns, seconds, samples)

    def _scores(self, records, samples) -> tuple[torch.Tensor, dict[str, list[float | None]]]:
        from tunelab.train.rewards import weighted_total

        tokenizer = self.processing_class
        texts = [tokenizer.decode(s.ids, skip_special_tokens=True) for s in samples]
        call = {"prompts": [r["prompt"] for r in records],
                "completions": [[{"role": "assistant", "content": t}] for t in texts],
                "completion_ids": [s.ids for s in samples], "reference": [r["reference"] for r in records],
                "id": [r["id"] for r in records]}  # fmt: skip
        columns = {reward.name: reward.fn(**call) for reward in self.rewards}
        scores = torch.tensor(weighted_total(self.rewards, list(columns.values())))
        if self.args.missing_eos_penalty is not None:
            cut = torch.tensor([s.finish == "length" for s in samples])
            scores = scores - self.args.missing_eos_penalty * cut.float()
        self.sample_log.offer(self.state.global_step, call["prompts"], texts, columns, scores.tolist())
        return scores, columns

    def _padded(self, samples) -> RolloutBatch:
        pad = self.processing_class.pad_token_id or 0
        width = max(len(s.prompt) for s in samples)
        length = max(len(s.ids) for s in samples)
        rows, attention, mask = [], [], []
        for s in samples:
            left, right = width - len(s.prompt), length - len(s.ids)
            rows.append([pad] * left + s.prompt + s.ids + [pad] * right)
            attention.append([0] * left + [1] * (len(s.prompt) + len(s.ids)) + [0] * right)
            mask.append([1.0] * len(s.ids) + [0.0] * right)
        zeros = torch.zeros(len(samples), length)
        return RolloutBatch(torch.tensor(rows), torch.tensor(attention), width, torch.tensor(mask), zeros, zeros,
                            zeros, zeros)  # fmt: skip

    def _old_estimates(self, model, batch: RolloutBatch):
        """The policy's log-probabilities and entropy, the value model's values, the reference's log-probabilities."""
        logprobs, entropy = self._policy_logprobs(model, batch, with_entropy=True)
        values = self._values(model, batch)
        with model.disable_adapter():
            ref_logprobs, _ = self._policy_logprobs(model, batch)
        return logprobs, values, ref_logprobs, entropy

    def _advantages(self, batch, scores, logprobs, values, ref_logprobs, entropy, columns, seconds, samples):
        args, mask = self.args, batch.mask
        kl = ppo_math.per_token_kl(logprobs, ref_logprobs) * mask
        if args.whiten_rewards:
            scores = ppo_math.masked_whiten(scores[:, None], torch.ones_like(scores[:, None]), shift_mean=False)[:, 0]
        rewards = ppo_math.token_rewards(scores, kl, self.kl.coef, mask)
        advantages, returns = ppo_math.gae(rewards, values, mask, args.gamma, args.lam)
        advantages = ppo_math.masked_whiten(advantages, mask) * mask
        sequence_kl = kl.sum(dim=1).mean().item()
        self._pending = {
            "reward": float(scores.mean()), "reward_std": float(scores.std()) if len(scores) > 1 else 0.0,
            "kl": sequence_kl, "ppo/kl_coef": self.kl.coef, "entropy": float(ppo_math.masked_mean(entropy, mask)),
            "completions/mean_length": float(mask.sum(1).mean()), "rollout_seconds": seconds,
            "completions/clipped_ratio": sum(s.finish == "length" for s in samples) / len(samples),
        } | {f"rewards/{name}/mean": _mean(values_) for name, values_ in columns.items()}  # fmt: skip
        self.kl.update(sequence_kl, len(scores))
        if args.kl_stop is not None and sequence_kl > args.kl_stop:
            self.control.should_training_stop = True
            self._pending["ppo/stopped_on_kl"] = 1.0
        batch.old_logprobs, batch.old_values, batch.advantages, batch.returns = logprobs, values, advantages, returns
        return batch

    # --- the forward passes -----------------------------------------------------------------------------------

    def _hidden(self, model, batch: RolloutBatch) -> torch.Tensor:
        """The decoder's last hidden states at the positions that predict each completion token (B × T; rows past a
        completion's end hold any value, the mask drops them)."""
        base = model.get_base_model()
        start = batch.prompt_width - 1
        if base.config._attn_implementation == PACKED_ATTENTION:  # the stage packs: no padding, each prompt once
            layout = prefix_layout(batch.input_ids, batch.attention_mask)
            hidden = base.get_decoder()(input_ids=layout.input_ids, position_ids=layout.position_ids,
                                        use_cache=False, prefix_groups=layout.groups).last_hidden_state[0]  # fmt: skip
            return hidden[layout.index[:, start : start + batch.mask.shape[1]]]
        positions = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
        out = base.get_decoder()(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                 position_ids=positions, use_cache=False)  # fmt: skip
        return out.last_hidden_state[:, start : start + batch.mask.shape[1]]

    def _policy_logprobs(self, model, batch: RolloutBatch, with_entropy: bool = False):
        hidden = self._hidden(model, batch)
        logits = model.get_base_model().get_output_embeddings()(hidden).float() / max(self.args.temperature, 1e-6)
        targets = batch.input_ids[:, batch.prompt_width :]
        logprobs = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None])[..., 0]
        entropy = ppo_math.entropy_from_logits(logits) if with_entropy else None
        return logprobs * batch.mask, entropy

    def _values(self, model, batch: RolloutBatch) -> torch.Tensor:
        model.set_adapter(VALUE_ADAPTER)
        try:
            hidden = self._hidden(model, batch)
            values = getattr(model.get_base_model(), VALUE_HEAD)(hidden)[..., 0].float()
        finally:
            model.set_adapter("default")
            trainable_again(model)
        return values * batch.mask

    # --- the update ---------------------------------------------------------------------------------------------

    def compute_loss(self, model, inputs: RolloutBatch, return_outputs=False, num_items_in_batch=None):
        model = self.accelerator.unwrap_model(model)
        warming_up = self._value_warming_up()
        with torch.set_grad_enabled(not warming_up):  # the policy's loss is only logged while the value model warms up
            logprobs, entropy = self._policy_logprobs(model, inputs, with_entropy=True)
            pg_loss, clip_fraction = ppo_math.policy_loss(logprobs, inputs.old_logprobs, inputs.advantages,
                                                          inputs.mask, self.args.cliprange)  # fmt: skip
        values = self._values(model, inputs)
        vf_loss, vf_clipped = ppo_math.value_loss(values, inputs.old_values, inputs.returns, inputs.mask,
                                                  self.args.cliprange_value)  # fmt: skip
        self._pending |= {"ppo/policy_loss": pg_loss.detach().item(), "clip_ratio/region_mean": clip_fraction.item(),
                          "value/loss": vf_loss.detach().item(), "value/clip_fraction": vf_clipped.item(),
                          "ppo/entropy_now": float(ppo_math.masked_mean(entropy.detach(), inputs.mask)),
                          "ppo/value_warmup": float(warming_up)}  # fmt: skip
        return pg_loss + self.args.vf_coef * vf_loss

    def create_optimizer(self, model=None):
        """Transformers' optimizer, with the value model's parameters in groups of their own at
        `value_learning_rate` (the critic learns faster than the actor in most PPO setups for language models, e.g.
        OpenRLHF's defaults, 9× the actor's rate)."""
        optimizer = super().create_optimizer(model)
        rate = self.args.value_learning_rate
        if rate is None or rate == self.args.learning_rate:
            return optimizer
        value = {id(p) for name, p in (model or self.model).named_parameters() if is_value_parameter(name)}
        for group in list(optimizer.param_groups):  # no step taken yet: no optimizer state to move
            value_part = [p for p in group["params"] if id(p) in value]
            group["params"] = [p for p in group["params"] if id(p) not in value]
            if value_part:
                settings = {key: item for key, item in group.items() if key != "params"}
                optimizer.add_param_group(settings | {"params": value_part, "lr": rate})
        optimizer.param_groups[:] = [group for group in optimizer.param_groups if group["params"]]
        return optimizer

    def _value_warming_up(self) -> bool:
        """Whether this update trains the value model alone. A value model that has not yet learnt which states lead
        to which scores biases the advantages: with a random head (estimates noise around 0, every return about the
        score), GAE with λ < 1 (A_t ≈ λ^(T−1−t)·score) gave a completion's last tokens large advantages and, after
        whitening, its earlier tokens (most of a 50-token answer) negative ones whatever the answer scored, and PPO at
        lr 1e-4 lowered its own reward over 100 steps on the orders task (examples/rl/README.md). Letting the value
        model learn first, on the first rollout batches, is the usual remedy (OpenRLHF's freezing_actor_steps)."""
        return self.state.global_step // self._updates_per_batch() < self.args.value_warmup

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "loss" in logs:
            logs = logs | self._pending
        super().log(logs, start_time)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        trainable_again(self.accelerator.unwrap_model(model or self.model))

    def train(self, *args, **kwargs):
        try:
            return super().train(*args, **kwargs)
        finally:
            drop_value_model(self.accelerator.unwrap_model(self.model))


def minibatch_order(prompts: int, answers: int, minibatches: int, epochs: int, generator) -> list[torch.Tensor]:
    """The rows of each minibatch update over a rollout batch of `prompts` × `answers` rows (a prompt's answers next
    to each other): every epoch a new permutation of the prompts, cut into `minibatches` parts (the recipe check
    keeps prompts ≥ minibatches); a prompt's answers stay in one minibatch, so its prompt is computed once for all
    of them."""
    per = max(1, prompts // minibatches)
    order = []
    for _epoch in range(epochs):
        permutation = torch.randperm(prompts, generator=generator)
        for first in range(0, per * minibatches, per):
            chosen = permutation[first : first + per]
            order.append((chosen[:, None] * answers + torch.arange(answers)[None, :]).reshape(-1))
    return order


def _mean(values: list[float | None]) -> float:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else float("nan")


def build_trainer(recipe: Recipe, run, model, tokenizer, splits, plan, callbacks):
    from tunelab.train.args import build_training_args
    from tunelab.train.callbacks import use_concise_progress
    from tunelab.train.rewards import build_rewards
    from tunelab.train.rollout import SampleLog

    rewards = build_rewards(recipe.reward)
    train = {"max_completion_length": recipe.eval.max_new_tokens} | recipe.train
    args = build_training_args(
        PPOConfig, train, str(run.checkpoints), recipe.seed, has_validation=False, plan=plan,
        run_name=recipe.train.get("run_name") or recipe.name, remove_unused_columns=False,
        reward_weights=[r.weight for r in rewards],
    )  # fmt: skip
    add_value_head(model.get_base_model())  # after the policy's LoRA, which must not wrap the head
    add_value_adapter(model, recipe)
    samples = SampleLog(run.path / "samples.jsonl", recipe.train.get("sample_every", 10))
    trainer = PPOTrainer(model=model, args=args, train_dataset=splits.train, processing_class=tokenizer,
                         data_collator=lambda features: features, callbacks=callbacks, rewards=rewards,
                         sample_log=samples)  # fmt: skip
    use_concise_progress(trainer)
    return trainer


def describe(recipe: Recipe, model) -> dict[str, Any]:
    kl = recipe.train.get("kl_target")
    coefficient = f"adaptive toward {kl} nats" if kl else f"fixed at {recipe.train.get('kl_coef', 0.05)}"
    answers = recipe.train.get("num_generations", 1)
    packed = getattr(model.config, "_attn_implementation", None) == PACKED_ATTENTION  # fit switched it when it could
    return {
        "reference": "the starting model: the policy with its adapter disabled (no second copy in memory)",
        "value_model": "a second LoRA adapter on the same base with a linear head",
        "kl_coefficient": coefficient,
        "answers_per_prompt": answers,
        "completion_forward": "one packed row, each prompt once for its answers" if packed else "padded rows",
    }


PPO = Stage(
    name="ppo", reads="prompts", produces="policy", config_class=lambda: PPOConfig,
    summary="proximal policy optimisation: a value model, GAE, a KL penalty to the reference, clipped updates",
    build_datasets=build_prompt_splits, build_trainer=build_trainer, evaluate=rl_evaluate,
    test_warnings=rl_test_warnings, describe=describe, packs_sequences=True,
)  # fmt: skip
