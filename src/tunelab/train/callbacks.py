"""Bookkeeping around a trainer: metrics.jsonl, status.json, loss plot, stop file and Ctrl-C.

The stage bodies stay readable because everything a person watches is written here.
"""

from __future__ import annotations

import signal
import sys
import time
from typing import Any

from transformers import EarlyStoppingCallback, TrainerCallback
from transformers.trainer_callback import ProgressCallback

from tunelab.runs import RunDir
from tunelab.train.plots import plot_loss, plot_rl

LOGGED_KEYS = ("loss", "eval_loss", "learning_rate", "grad_norm")
# what the preference trainers log besides: implicit rewards and the policy's log-probabilities of each side; what the
# RL stages log: the total reward and each reward's, KL to the reference, entropy, clipping, completion lengths
RL_KEYS = ("reward", "reward_std", "kl", "entropy", "frac_reward_zero_std", "rollout_seconds", "rollout_share")
STAGE_PREFIXES = ("rewards/", "logps/", "clip_ratio/", "completions/", "value/", "ppo/")
LOGGED_PREFIXES = STAGE_PREFIXES + tuple(f"eval_{prefix}" for prefix in STAGE_PREFIXES)


class RunDirCallback(TrainerCallback):
    """Append one row per log to metrics.jsonl, keep status.json and plots/loss.png current."""

    def __init__(self, run: RunDir):
        self.run = run
        self._last = (time.monotonic(), 0)

    def on_train_begin(self, args, state, control, **kwargs):
        self._last = (time.monotonic(), state.num_input_tokens_seen)
        self.run.set_status("running", step=state.global_step, max_steps=state.max_steps)

    def on_log(self, args, state, control, logs: dict[str, Any] | None = None, **kwargs):
        logs = logs or {}
        row: dict[str, Any] = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 4)}
        row |= {key: logs[key] for key in LOGGED_KEYS + RL_KEYS + tuple(f"eval_{k}" for k in RL_KEYS) if key in logs}
        row |= {key: value for key, value in logs.items() if key.startswith(LOGGED_PREFIXES)}
        if "loss" in logs:
            now, seen = time.monotonic(), state.num_input_tokens_seen
            elapsed = now - self._last[0]
            row["tokens_per_second"] = round((seen - self._last[1]) / elapsed, 2) if elapsed > 0 else None
            row["tokens_seen"] = seen
            self._last = (now, seen)
        if len(row) > 2:
            self.run.append_metrics(row)
            self.run.set_status("running", step=state.global_step, max_steps=state.max_steps)
        if "eval_loss" in logs or state.global_step % max(1, 4 * int(args.logging_steps or 1)) == 0:
            self._plot()

    def on_train_end(self, args, state, control, **kwargs):
        self._plot()

    def _plot(self) -> None:
        rows = self.run.metrics()
        plot_loss(rows, self.run.plots / "loss.png", title=self.run.name)
        plot_rl(rows, self.run.plots / "rl.png", title=self.run.name)


class GracefulStop(TrainerCallback):
    """Stop at the end of the current step with a checkpoint, on Ctrl-C or when `<run>/STOP` appears.

    The first Ctrl-C asks for a clean stop; a second one interrupts at once (Python's default behaviour).
    """

    def __init__(self, run: RunDir):
        self.run = run
        self.requested = False
        self._previous_handler = None

    def install(self) -> None:
        self._previous_handler = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, self._on_sigint)

    def uninstall(self) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGINT, self._previous_handler)

    def _on_sigint(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nStopping after this step and saving a checkpoint (Ctrl-C again to abort at once)...", flush=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested or self.run.stop_file.exists():
            self.requested = True
            control.should_save = True
            control.should_training_stop = True
        return control


class ConciseProgress(ProgressCallback):
    """The trainer's progress bar with ETA, but one short line per log instead of a raw dict."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or self.training_bar is None or not logs:
            return
        parts = [f"step {state.global_step}/{state.max_steps}"]
        parts += [f"{key} {logs[key]:.4f}" for key in ("loss", "eval_loss") if isinstance(logs.get(key), float)]
        if "learning_rate" in logs:
            parts.append(f"lr {logs['learning_rate']:.2e}")
        if len(parts) > 1:
            self.training_bar.write("  ".join(parts))


class PlainProgress(TrainerCallback):
    """One plain line per logging step, for output that goes to a file or a pipe (no `\r` progress-bar frames):
    step, share done, losses, learning rate, elapsed time and ETA."""

    def __init__(self, write=print):
        self.write = write
        self._started: tuple[float, int] | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._started = (time.monotonic(), state.global_step)  # a resumed run's ETA counts only its own steps

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        parts = [f"step {state.global_step}/{state.max_steps} ({state.global_step / max(1, state.max_steps):.0%})"]
        parts += [f"{key} {logs[key]:.4f}" for key in ("loss", "eval_loss") if isinstance(logs.get(key), float)]
        if "learning_rate" in logs:
            parts.append(f"lr {logs['learning_rate']:.2e}")
        if len(parts) == 1:
            return
        parts.append(self._timing(state))
        self.write("[tunelab] " + "  ".join(parts), flush=True)

    def _timing(self, state) -> str:
        started, first_step = self._started or (time.monotonic(), 0)
        elapsed, done = time.monotonic() - started, state.global_step - first_step
        left = (state.max_steps - state.global_step) * elapsed / done if done > 0 else None
        return f"elapsed {_clock(elapsed)}" + (f"  eta {_clock(left)}" if left is not None else "")


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def use_concise_progress(trainer, terminal: bool | None = None) -> None:
    """A progress bar with one short line per log on a terminal; plain lines when output is a file or a pipe."""
    if not any(isinstance(c, ProgressCallback) for c in trainer.callback_handler.callbacks):
        return
    trainer.remove_callback(ProgressCallback)
    terminal = sys.stderr.isatty() if terminal is None else terminal  # tqdm draws its bars on stderr
    trainer.add_callback(ConciseProgress() if terminal else PlainProgress())


class TimeBudget(TrainerCallback):
    """`train.max_seconds`: training ends after the step that crosses the budget, as if it had reached max_steps
    (saved, evaluated, exported): methods compared on equal wall-clock time (`tunelab compare-methods --budget`)."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.started: float | None = None
        self.stopped_at: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.monotonic()

    def on_step_end(self, args, state, control, **kwargs):
        if self.started is not None and time.monotonic() - self.started >= self.seconds:
            control.should_training_stop = True
            control.should_save = True
            self.stopped_at = state.global_step
        return control


def standard_callbacks(run: RunDir, train: dict[str, Any], writes: bool = True) -> list[TrainerCallback]:
    """What every stage's trainer gets; `writes` false on the ranks other than 0 of a distributed run (they stop
    when asked, but keep no metrics or status)."""
    callbacks: list[TrainerCallback] = [RunDirCallback(run)] if writes else []
    callbacks.append(GracefulStop(run))
    if train.get("max_seconds") is not None:
        callbacks.append(TimeBudget(float(train["max_seconds"])))
    patience = train.get("early_stopping_patience")
    if patience is not None:
        threshold = float(train.get("early_stopping_threshold", 0.0))
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=patience, early_stopping_threshold=threshold))
    return callbacks
