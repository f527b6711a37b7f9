"""The RL curves: a panel per logged curve, each reward a line of its own; nothing drawn for a run with none."""

from __future__ import annotations

from tunelab.train.plots import each_reward, plot_rl


def rl_row(step: int) -> dict:
    return {"step": step, "reward": 1.2 + step / 100, "entropy": 0.05, "completions/mean_length": 48.0,
            "rewards/field_accuracy/mean": 0.9 + step / 1000, "rewards/json_schema/mean": 0.95,
            "rewards/json_schema/std": 0.2}  # fmt: skip


def rl_rows() -> list[dict]:
    return [rl_row(step) for step in (5, 10, 15)]


def test_each_reward_is_read_by_name():
    curves = each_reward(rl_rows())
    assert list(curves) == ["field_accuracy", "json_schema"]
    assert curves["field_accuracy"] == [(5, 0.905), (10, 0.91), (15, 0.915)]


def test_the_rl_plot_is_a_png_and_absent_without_rl_curves(tmp_path):
    out = plot_rl(rl_rows(), tmp_path / "rl.png", title="run")
    assert out is not None and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_rl([{"step": 1, "loss": 0.5}], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
