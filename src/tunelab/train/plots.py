"""Loss curves as a PNG: train and eval loss against step."""

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
    out.parent.mkdir(parents=True, exist_ok=True)
    scratch = out.with_name(f".{out.stem}.tmp.png")
    figure.savefig(scratch)
    plt.close(figure)
    scratch.replace(out)
    return out
