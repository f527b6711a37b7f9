"""Training stages: one readable file per stage around a TRL trainer."""

from __future__ import annotations


def _sft(*args, **kwargs):
    from tunelab.train.sft import run_sft

    return run_sft(*args, **kwargs)


STAGES = {"sft": _sft}
