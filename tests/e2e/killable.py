"""`tunelab` with pauses and marker files at chosen points, so that a test can SIGKILL it exactly there.

Usage: python killable.py <tunelab arguments>, with environment variables:
  KILLABLE_MARKS     a folder where marker files are touched: step-<n> after each optimizer step,
                     eval-<label>-<k> after the k-th saved batch of predictions, merge-written once the merged
                     model is written to its scratch folder (before it is renamed into place)
  KILLABLE_PAUSE     seconds to sleep at each of those points (default 0.3), so the kill lands in between
  KILLABLE_PAUSE_AT  comma-separated kinds to pause at: step, eval, merge (default: all)
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

MARKS = Path(os.environ["KILLABLE_MARKS"])
PAUSE = float(os.environ.get("KILLABLE_PAUSE", "0.3"))
PAUSE_AT = set(os.environ.get("KILLABLE_PAUSE_AT", "step,eval,merge").split(","))


def mark(name: str, kind: str) -> None:
    MARKS.mkdir(parents=True, exist_ok=True)
    (MARKS / name).touch()
    if kind in PAUSE_AT:
        time.sleep(PAUSE)


def patch_training() -> None:
    from transformers import TrainerCallback

    import tunelab.train.fit as fit

    class Marker(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            mark(f"saved-{state.global_step}", "save")

        def on_step_end(self, args, state, control, **kwargs):
            mark(f"step-{state.global_step}", "step")

    original = fit.standard_callbacks
    fit.standard_callbacks = lambda run, train, **options: [*original(run, train, **options), Marker()]


def patch_evaluation() -> None:
    import tunelab.eval.heldout as heldout

    original = heldout.generate_batch

    def generate_batch(model, tokenizer, prompts, max_new_tokens, batch_size=16, on_batch=None):
        batches = iter(range(1, 10**6))

        def saved(indices, results):
            on_batch(indices, results)
            mark(f"eval-{os.environ.get('KILLABLE_LABEL', 'any')}-{next(batches)}", "eval")

        return original(model, tokenizer, prompts, max_new_tokens, batch_size, saved if on_batch else None)

    heldout.generate_batch = generate_batch
    evaluate = heldout.evaluate_model

    def evaluate_model(*args, label="tuned", **kwargs):
        os.environ["KILLABLE_LABEL"] = label
        return evaluate(*args, label=label, **kwargs)

    heldout.evaluate_model = evaluate_model


def patch_saving() -> None:
    import tunelab.runs as runs

    original = runs.save_folder_atomic

    def save_folder_atomic(folder, write):
        def slow_write(scratch):
            write(scratch)
            if Path(folder).name == "merged":
                mark("merge-written", "merge")

        return original(folder, slow_write)

    runs.save_folder_atomic = save_folder_atomic


if __name__ == "__main__":
    patch_training()
    patch_evaluation()
    patch_saving()
    from tunelab.cli import main

    sys.exit(main(sys.argv[1:]))
