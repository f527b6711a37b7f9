"""Paired bootstrap machinery shared by the forgetting check and the held-out base-vs-tuned comparison.

A resample is a row of counts (how often each item was drawn), so a statistic that is a function of column sums
(a share, a ratio of sums, corpus BLEU from summed n-gram counts) is resampled for the whole batch with one matrix
product. Base and tuned rows of an item are multiplied by the same counts, which keeps every pair together.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

SAMPLES = 2000
# Below this many items a percentile bootstrap is far too sure of itself (3 items that all improved give an
# interval of zero width), so no direction is claimed.
MIN_ITEMS = 10
_CELLS_PER_CHUNK = 2_000_000  # bounds the memory of one block of resamples (chunk × items counts)

BETTER, WORSE, INCONCLUSIVE = "better", "worse", "inconclusive"

Reducer = Callable[[np.ndarray], np.ndarray]


def resample_counts(items: int, samples: int = SAMPLES, seed: int = 0) -> Iterator[np.ndarray]:
    """Bootstrap resamples of `items` items as blocks of count rows (block × items), `samples` rows in all."""
    if items < 1:
        raise ValueError("a bootstrap needs at least one item")
    rng = np.random.default_rng(seed)
    chunk = max(1, _CELLS_PER_CHUNK // items)
    uniform = np.full(items, 1.0 / items)
    for start in range(0, samples, chunk):
        yield rng.multinomial(items, uniform, size=min(chunk, samples - start))


def paired_difference(base: np.ndarray, tuned: np.ndarray, reduce: Reducer, samples: int = SAMPLES, seed: int = 0):
    """(base value, tuned value, 2.5th and 97.5th percentiles of the resampled tuned − base difference).

    `base` and `tuned` are per-item terms (items × k); `reduce` turns rows of column sums (m × k) into m values.
    Resamples where the statistic is undefined (e.g. no item with a denominator) are left out of the percentiles.
    """
    before = float(reduce(base.sum(axis=0, keepdims=True))[0])
    after = float(reduce(tuned.sum(axis=0, keepdims=True))[0])
    blocks = [reduce(c @ tuned) - reduce(c @ base) for c in resample_counts(len(base), samples, seed)]
    resampled = np.concatenate(blocks)
    resampled = resampled[np.isfinite(resampled)]
    low, high = np.percentile(resampled, [2.5, 97.5]) if resampled.size else (np.nan, np.nan)
    return before, after, float(low), float(high)


def ratio_of_sums(sums: np.ndarray) -> np.ndarray:
    """Column 0 over column 1 per row; NaN where the denominator is 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return sums[:, 0] / sums[:, 1]


def direction(low: float, high: float, count: int) -> str:
    """better when the whole interval is above 0, worse when below, otherwise (or with too few items) inconclusive."""
    if count < MIN_ITEMS or not (np.isfinite(low) and np.isfinite(high)):
        return INCONCLUSIVE
    if low > 0:
        return BETTER
    if high < 0:
        return WORSE
    return INCONCLUSIVE
