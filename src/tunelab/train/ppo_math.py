"""The arithmetic of PPO for language models, as pure tensor functions (train/ppo.py runs them; the unit tests check
them against values computed by hand).

Shapes: B rollouts × T completion tokens; `mask` is 1 on a completion's tokens and 0 on the padding after it.
Following Ziegler et al. 2019 / Stiennon et al. 2020 (the InstructGPT recipe) and the "N implementation details of
RLHF with PPO" write-up (Huang et al. 2024): the reward model's score is given at the last token, every token pays a
KL penalty to the reference model, advantages come from GAE over the value model's estimates, the policy loss is the
clipped surrogate, the value loss is clipped around the rollout's values, and the KL coefficient is fixed or adapted
toward a target.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (values * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(values: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True) -> torch.Tensor:
    """(values − mean) / std over the masked entries (population variance); with shift_mean=False the mean is put
    back (used for rewards, whose sign means something)."""
    mean = masked_mean(values, mask)
    variance = masked_mean((values - mean) ** 2, mask)
    whitened = (values - mean) * torch.rsqrt(variance + 1e-8)
    return whitened if shift_mean else whitened + mean


def per_token_kl(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """The sampled estimate of KL(π ‖ π_ref) per token: log π(y_t) − log π_ref(y_t) (its sum over a completion is an
    unbiased estimate of the sequence KL, since y was sampled from π)."""
    return logprobs - ref_logprobs


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, kl_coef: float, mask: torch.Tensor) -> torch.Tensor:
    """r_t = −kl_coef · kl_t on every completion token, plus the sequence's score on its last token."""
    rewards = -kl_coef * kl * mask
    last = mask.sum(dim=1).long().clamp(min=1) - 1
    rewards[torch.arange(len(scores)), last] += scores
    return rewards


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalised advantage estimation: δ_t = r_t + γ·V_{t+1} − V_t (V = 0 past a completion's end),
    A_t = δ_t + γλ·A_{t+1}; returns (advantages, returns = advantages + values), zero on padding."""
    values = values * mask
    advantages = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0], dtype=rewards.dtype)
    length = rewards.shape[1]
    for t in reversed(range(length)):
        next_value = values[:, t + 1] if t + 1 < length else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        advantages[:, t] = running
    return advantages, (advantages + values) * mask


def policy_loss(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip: float) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The clipped surrogate, max(−A·ρ, −A·clip(ρ, 1−ε, 1+ε)) with ρ = π/π_old, averaged over tokens; and the
    fraction of tokens where the clipped term was the larger (the "clip fraction")."""
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clip_fraction = masked_mean((clipped > unclipped).float(), mask)
    return loss, clip_fraction


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip: float) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """½·max((V − R)², (clip(V, V_old ± ε) − R)²) averaged over tokens; and the fraction of tokens clipped."""
    clipped_values = old_values + torch.clamp(values - old_values, -clip, clip)
    unclipped_loss = (values - returns) ** 2
    clipped_loss = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(unclipped_loss, clipped_loss), mask)
    return loss, masked_mean((clipped_loss > unclipped_loss).float(), mask)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-token entropy of the distribution softmax(logits): logsumexp − Σ p·logit."""
    probabilities = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probabilities * logits).sum(dim=-1)


@dataclass
class KLController:
    """The KL coefficient: fixed, or adapted toward `target` (Ziegler et al. 2019): after a batch with KL k,
    coef ← coef · (1 + clip(k / target − 1, −0.2, 0.2) · n / horizon), n the rollouts in the batch."""

    coef: float
    target: float | None = None  # None: fixed
    horizon: int = 10_000

    def update(self, kl: float, rollouts: int) -> float:
        if self.target is not None:
            error = min(max(kl / self.target - 1.0, -0.2), 0.2)
            self.coef *= 1.0 + error * rollouts / self.horizon
        return self.coef
