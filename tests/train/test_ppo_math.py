"""PPO's terms against values worked out by hand (the arithmetic is written out in each test)."""

from __future__ import annotations

import math

import pytest
import torch

from tunelab.train.ppo_math import (
    KLController,
    entropy_from_logits,
    gae,
    masked_whiten,
    per_token_kl,
    policy_loss,
    token_rewards,
    value_loss,
)


def flat(rows: list[list[float]]) -> list[float]:
    return [value for row in rows for value in row]


def test_kl_penalty_on_every_token_and_the_score_on_the_last():
    logprobs = torch.tensor([[-1.0, -2.0, -0.5], [-0.2, -0.3, 0.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-0.2, -0.1, -9.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])  # the second completion has 2 tokens
    kl = per_token_kl(logprobs, ref)
    assert kl.flatten().tolist() == pytest.approx(flat([[0.5, -1.0, 0.0], [0.0, -0.2, 9.0]]))
    rewards = token_rewards(torch.tensor([2.0, -1.0]), kl, kl_coef=0.1, mask=mask)
    # row 1: -0.1·[0.5, -1, 0] + [0, 0, 2] = [-0.05, 0.1, 2.0]; row 2: -0.1·[0, -0.2, (masked)] + [0, -1, 0]
    assert rewards.flatten().tolist() == pytest.approx(flat([[-0.05, 0.1, 2.0], [0.0, 0.02 - 1.0, 0.0]]))


def test_gae_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.5, 2.0, 0.0]])
    values = torch.tensor([[0.5, 0.4, 0.8], [1.0, 0.0, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    gamma, lam = 0.9, 0.5
    advantages, returns = gae(rewards, values, mask, gamma, lam)
    # row 1: δ2 = 1 − 0.8 = 0.2; δ1 = 0 + 0.9·0.8 − 0.4 = 0.32; δ0 = 0 + 0.9·0.4 − 0.5 = −0.14
    a2 = 0.2
    a1 = 0.32 + 0.45 * a2  # 0.41
    a0 = -0.14 + 0.45 * a1  # 0.0445
    # row 2 (two tokens; the value 7.0 on padding is ignored): δ1 = 2 − 0 = 2; δ0 = 0.5 + 0.9·0 − 1 = −0.5
    b1 = 2.0
    b0 = -0.5 + 0.45 * b1  # 0.4
    assert advantages.flatten().tolist() == pytest.approx(flat([[a0, a1, a2], [b0, b1, 0.0]]))
    assert returns.flatten().tolist() == pytest.approx(
        flat([[a0 + 0.5, a1 + 0.4, a2 + 0.8], [b0 + 1.0, b1 + 0.0, 0.0]])
    )


def test_gae_with_gamma_and_lambda_one_is_the_reward_to_go_minus_the_value():
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    values = torch.tensor([[0.5, 0.25, 0.125]])
    advantages, returns = gae(rewards, values, torch.ones(1, 3), 1.0, 1.0)
    assert returns.flatten().tolist() == pytest.approx(flat([[6.0, 5.0, 3.0]]))
    assert advantages.flatten().tolist() == pytest.approx(flat([[5.5, 4.75, 2.875]]))


def test_clipped_policy_loss_by_hand():
    old = torch.zeros(1, 4)
    new = torch.log(torch.tensor([[1.5, 0.5, 1.1, 0.7]]))  # ratios 1.5, 0.5, 1.1, 0.7
    advantages = torch.tensor([[1.0, 1.0, -2.0, -1.0]])
    mask = torch.ones(1, 4)
    loss, clip_fraction = policy_loss(new, old, advantages, mask, clip=0.2)
    # token 0: A=1, ρ=1.5 → max(−1.5, −1.2) = −1.2 (clipped); token 1: A=1, ρ=0.5 → max(−0.5, −0.8) = −0.5
    # token 2: A=−2, ρ=1.1 → max(2.2, 2.2) = 2.2; token 3: A=−1, ρ=0.7 → max(0.7, 0.8) = 0.8 (clipped)
    assert loss.item() == pytest.approx((-1.2 - 0.5 + 2.2 + 0.8) / 4)
    assert clip_fraction.item() == pytest.approx(2 / 4)


def test_policy_loss_ignores_padding():
    old = torch.zeros(1, 2)
    new = torch.log(torch.tensor([[1.0, 5.0]]))
    loss, _ = policy_loss(new, old, torch.tensor([[1.0, 100.0]]), torch.tensor([[1.0, 0.0]]), clip=0.2)
    assert loss.item() == pytest.approx(-1.0)


def test_clipped_value_loss_by_hand():
    old = torch.tensor([[1.0, 1.0]])
    new = torch.tensor([[2.0, 1.1]])
    returns = torch.tensor([[3.0, 0.0]])
    loss, clipped = value_loss(new, old, returns, torch.ones(1, 2), clip=0.2)
    # token 0: unclipped (2−3)² = 1, clipped value 1.2 → (1.2−3)² = 3.24 → 3.24; token 1: (1.1)² = 1.21 both → 1.21
    assert loss.item() == pytest.approx(0.5 * (3.24 + 1.21) / 2)
    assert clipped.item() == pytest.approx(0.5)


def test_whitening_and_entropy():
    values = torch.tensor([[1.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    whitened = masked_whiten(values, mask)
    assert whitened[0, :2].tolist() == pytest.approx([-1.0, 1.0], abs=1e-4)  # mean 2, std 1
    kept = masked_whiten(values, mask, shift_mean=False)
    assert kept[0, :2].tolist() == pytest.approx([1.0, 3.0], abs=1e-4)
    uniform = entropy_from_logits(torch.zeros(1, 1, 4))
    assert uniform.item() == pytest.approx(math.log(4))


def test_kl_controller_fixed_and_adaptive():
    fixed = KLController(0.05)
    assert fixed.update(10.0, 64) == 0.05
    adaptive = KLController(0.1, target=6.0, horizon=10_000)
    # KL 12 is twice the target: error clipped to +0.2; 0.1 · (1 + 0.2 · 1000 / 10000) = 0.102
    assert adaptive.update(12.0, 1000) == pytest.approx(0.102)
    # KL 4.5: error −0.25 → clipped −0.2; 0.102 · (1 − 0.2 · 500 / 10000) = 0.10098
    assert adaptive.update(4.5, 500) == pytest.approx(0.10098)
