"""Training curves as PNGs: train and eval loss against step; for the RL stages, reward, KL, entropy, clipping and
completion length, one panel each."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_loss(rows: list[dict[str, Any]], out: Path, title: str = "") -> Path | None:
    """Draw train (line) and eval (markers) loss; returns None when there is nothing to draw yet."""
    train = [(r["step"], r["loss"]) for r in rows if r.get("loss") is not None]
    evals = [(r["step"], r["eval_loss"]) for r in rows if r.get("eval_loss") is not None]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4), dpi=110)
    if train:
        axis.plot(*zip(*train, strict=True), label="train loss", color="#1f77b4")
    if evals:
        axis.plot(*zip(*evals, strict=True), "o-", label="eval loss", color="#d62728")
    axis.set_xlabel("step")
    axis.set_ylabel("loss")
    axis.set_title(title or "loss")
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    return _save(figure, out)


RL_PANELS = (  # (metrics.jsonl key, panel title); a panel is drawn when its key was logged
    ("reward", "reward (weighted sum)"),
    ("kl", "KL to the reference"),
    ("entropy", "entropy"),
    ("clip_ratio/region_mean", "clipped fraction"),
    ("completions/mean_length", "completion length (tokens)"),
    ("value/loss", "value loss"),
)


def each_reward(rows: list[dict[str, Any]]) -> dict[str, list[tuple[int, float]]]:
    """Each reward's mean per logged step (`rewards/<name>/mean`), by reward name."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        for key, value in row.items():
            if key.startswith("rewards/") and key.endswith("/mean") and value is not None:
                curves.setdefault(key[len("rewards/") : -len("/mean")], []).append((row["step"], value))
    return curves


def plot_rl(rows: list[dict[str, Any]], out: Path, title: str = "") -> Path | None:
    """The RL curves that were logged, one small panel each (the rewards one line each in a panel of their own);
    None when the run logged none (not an RL stage)."""
    panels = [(name, {"": [(r["step"], r[key]) for r in rows if r.get(key) is not None]}) for key, name in RL_PANELS]
    panels = [panel for panel in panels if panel[1][""]]
    if not panels:
        return None
    rewards = each_reward(rows)
    if len(rewards) > 1:
        panels.insert(1, ("each reward (mean)", rewards))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = min(3, len(panels))
    lines = (len(panels) + columns - 1) // columns
    figure, axes = plt.subplots(lines, columns, figsize=(4 * columns, 3 * lines), dpi=110, squeeze=False)
    for axis, (name, curves) in zip(axes.flat, panels, strict=False):
        for label, points in curves.items():
            axis.plot(*zip(*points, strict=True), label=label or None, color=None if label else "#1f77b4")
        if len(curves) > 1:
            axis.legend(fontsize=8)
        axis.set_title(name, fontsize=10)
        axis.set_xlabel("step")
        axis.grid(alpha=0.3)
    for axis in list(axes.flat)[len(panels) :]:
        axis.set_visible(False)
    figure.suptitle(title or "RL")
    figure.tight_layout()
    return _save(figure, out)


def _save(figure, out: Path) -> Path:
    """Written beside the target and renamed into place: a reader never sees half a PNG."""
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = out.with_name(f".{out.stem}.tmp.png")
    figure.savefig(scratch)
    plt.close(figure)
    scratch.replace(out)
    return out
