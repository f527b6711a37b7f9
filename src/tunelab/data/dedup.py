"""Exact and near-duplicate detection for the data audit: duplicates, train/test leakage, leakage-free splits.

Texts are compared after `normalize`, so trivial edits (case, spacing, punctuation) become exact duplicates. Near
duplicates are found with character shingles (so Chinese and other unspaced scripts work), MinHash signatures and
LSH banding. Every LSH candidate is verified with the exact Jaccard similarity of the two shingle sets, so reported
pairs and similarities are never an artefact of the sketch.

datasketch defines the method; numpy does the bulk work. The signatures are exactly datasketch's "affine32" MinHash
of 32-bit shingle hashes, and the bands are the ones its `MinHashLSH` chooses, but both are computed over all texts
at once: datasketch hashes shingle by shingle in Python (`MinHash.bulk`: ~50 s for 100k alpaca-sized records) and
indexes text by text (`MinHashLSH`: 8 s, 650 MB). Here the whole of `find_duplicates` takes ~6 s for 100k records,
growing linearly. `test_dedup.py` checks both against datasketch.
"""

from __future__ import annotations

import string
import sys
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import numpy as np
from datasketch import MinHash, MinHashLSH

COMPARED_ROLES = ("user", "assistant")
"""System prompts are left out: one prompt shared by every record would make all records look alike."""
COMPARED_FIELDS = ("messages", "prompt", "chosen", "rejected", "completion")
"""The message lists of the three record kinds (`kinds.py`), in the order their text is joined."""

SCHEME = "affine32"
"""datasketch's permutation scheme the signatures follow (`a * h + b` in uint32, after a MurmurHash3 pre-mix)."""

_PAD = 0x110000
"""One past the last code point: pads a text shorter than a shingle, so the whole text becomes one shingle."""

_POLY_BASE = np.uint64(0x9E3779B97F4A7C15)
_BLOCK_CHARS = 1 << 20
"""Characters hashed per numpy pass: bounds the temporary arrays to a few tens of MB."""

_SLICE_SHINGLES = 1 << 14
"""Shingles per MinHash pass: num_perm x 16k uint32 = 8 MB, measured fastest here (64k: 2x slower, 2k: 2x slower)."""

_LSH_WEIGHTS = (0.05, 0.95)
"""Favour recall in the LSH index (95% at the threshold, 99% at +0.05): exact verification removes false positives."""

_MAX_LSH_THRESHOLD = 0.95
"""Near 1.0 datasketch finds no banding (b < 2); candidates are verified against the real threshold anyway."""


@dataclass
class DuplicateReport:
    """Indices refer to the list of texts given to `find_duplicates`; every list is sorted."""

    exact_groups: list[list[int]] = field(default_factory=list)
    near_pairs: list[tuple[int, int, float]] = field(default_factory=list)
    clusters: list[list[int]] = field(default_factory=list)


def record_text(record: Mapping[str, Any]) -> str:
    """The text of a record that duplication is judged on: its user and assistant turns, one per line (for preference
    records: the prompt's, then the answers)."""
    messages = [m for key in COMPARED_FIELDS for m in record.get(key) or () if isinstance(m, Mapping)]
    parts = [m.get("content") or "" for m in messages if m.get("role") in COMPARED_ROLES]
    return "\n".join(part if isinstance(part, str) else str(part) for part in parts)


def prompt_text(record: Mapping[str, Any]) -> str:
    """The text leakage is judged on: the whole conversation for SFT records (as `record_text`), the prompt alone for
    preference records: a test pair whose question was trained on leaks, whatever answers it compares."""
    return record_text({"messages": record["prompt"]} if "prompt" in record else record)


def normalize(text: str) -> str:
    """NFKC, case-folded, punctuation removed, whitespace collapsed: texts differing only in those are duplicates."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(text.translate(_punctuation_table()).split())


@cache
def _punctuation_table() -> dict[int, None]:
    """Every Unicode punctuation character (ASCII, CJK, fullwidth, ...) plus the ASCII symbols of `string`.

    Built once from `unicodedata` (~0.1 s). `str.translate` with it is ~15x faster than a `re` character class.
    """
    table = {code: None for code in range(sys.maxunicode + 1) if unicodedata.category(chr(code)).startswith("P")}
    return table | {ord(char): None for char in string.punctuation}


def find_duplicates(
    texts: Sequence[str], threshold: float = 0.8, shingle_size: int = 5, num_perm: int = 128, seed: int = 1
) -> DuplicateReport:
    """Exact groups, near pairs (Jaccard of character shingles >= threshold) and the clusters they link.

    Texts that normalize to nothing are not compared (emptiness is a validation problem, not duplication). Near
    pairs are listed for every member of the exact groups they join, so m copies near n copies give m x n pairs.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if shingle_size < 1 or num_perm < 2:
        raise ValueError(f"shingle_size must be >= 1 and num_perm >= 2, got {shingle_size} and {num_perm}")
    by_text: dict[str, list[int]] = {}
    for index, text in enumerate(texts):
        by_text.setdefault(normalize(text), []).append(index)
    by_text.pop("", None)
    distinct = list(by_text)
    members = list(by_text.values())
    signatures = minhash_signatures(distinct, shingle_size, num_perm, seed)
    candidates = lsh_candidates(signatures, threshold)
    rep_pairs = _verified_pairs(distinct, signatures, candidates, threshold, shingle_size)
    near = sorted((*sorted((i, j)), sim) for a, b, sim in rep_pairs for i in members[a] for j in members[b])
    exact = [group for group in members if len(group) > 1]
    links = [(group[0], other) for group in exact for other in group[1:]]
    links += [(members[a][0], members[b][0]) for a, b, _ in rep_pairs]
    return DuplicateReport(exact_groups=exact, near_pairs=near, clusters=_clusters(len(texts), links))


def cross_pairs(report: DuplicateReport, groups: Sequence[str], a: str, b: str) -> list[tuple[int, int, str, float]]:
    """Pairs (i, j) with i labelled `a` and j labelled `b` that are exact or near duplicates, e.g. test vs train.

    With `a == b` the pairs inside that group are returned once each, with i < j. Only direct links count: a test
    record near a training record is a pair; one merely in the same cluster is not.
    """
    pairs: list[tuple[int, int, str, float]] = []
    for group in report.exact_groups:
        in_a = [i for i in group if groups[i] == a]
        in_b = [j for j in group if groups[j] == b]
        pairs += [(i, j, "exact", 1.0) for i in in_a for j in in_b if a != b or i < j]
    for i, j, sim in report.near_pairs:
        if groups[i] == a and groups[j] == b:
            pairs.append((i, j, "near", sim))
        elif groups[j] == a and groups[i] == b:
            pairs.append((j, i, "near", sim))
    return sorted(pairs)


def minhash_signatures(texts: Sequence[str], shingle_size: int = 5, num_perm: int = 128, seed: int = 1) -> np.ndarray:
    """One row per (normalized) text: datasketch's affine32 MinHash of its shingle hashes (`shingle_hashes` >> 32)."""
    a, b = MinHash(num_perm=num_perm, seed=seed, scheme=SCHEME).permutations
    out = np.full((num_perm, len(texts)), np.iinfo(np.uint32).max, dtype=np.uint32)
    for lo, hi in _blocks(texts):
        hashes, counts = shingle_hashes(texts[lo:hi], shingle_size)
        _minhash_into(fmix32((hashes >> np.uint64(32)).astype(np.uint32)), counts, a, b, out[:, lo:hi])
    return np.ascontiguousarray(out.T)


def shingle_hashes(texts: Sequence[str], shingle_size: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of every character shingle of each text, concatenated, and the number per text.

    A polynomial hash over code points of all windows at once (numpy), then a MurmurHash3 finalizer to spread it;
    no Python `hash()`, so results are the same in every process. A non-empty text shorter than the shingle size is
    one shingle; an empty text has none.
    """
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    codes = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    padded = np.where(lengths > 0, np.maximum(lengths, shingle_size), 0)
    if (padded != lengths).any():
        codes = _pad(codes, lengths, padded)
    counts = np.maximum(padded - shingle_size + 1, 0)
    windows = max(len(codes) - shingle_size + 1, 0)
    rolling = codes[:windows].copy()
    for offset in range(1, shingle_size):
        rolling *= _POLY_BASE
        rolling += codes[offset : offset + windows]
    first_window = np.cumsum(padded) - padded
    starts = np.repeat(first_window - (np.cumsum(counts) - counts), counts) + np.arange(counts.sum())
    return fmix64(rolling[starts]), counts


def _pad(codes: np.ndarray, lengths: np.ndarray, padded: np.ndarray) -> np.ndarray:
    """Copy each text's code points to the start of its padded slot; the rest of the slot is `_PAD`."""
    out = np.full(int(padded.sum()), _PAD, dtype=np.uint64)
    shift = (np.cumsum(padded) - padded) - (np.cumsum(lengths) - lengths)
    out[np.repeat(shift, lengths) + np.arange(len(codes))] = codes
    return out


def _blocks(texts: Sequence[str]) -> list[tuple[int, int]]:
    """Consecutive index ranges of about `_BLOCK_CHARS` characters each (a longer text is a block of its own)."""
    blocks, start, size = [], 0, 0
    for index, text in enumerate(texts):
        size += len(text)
        if size >= _BLOCK_CHARS:
            blocks.append((start, index + 1))
            start, size = index + 1, 0
    if start < len(texts):
        blocks.append((start, len(texts)))
    return blocks


def _minhash_into(hashes: np.ndarray, counts: np.ndarray, a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """Lower `out[:, d]` to the min over text d's shingles of `a * h + b`, in cache-sized slices of shingles.

    Slicing by shingles rather than by texts keeps memory bounded for a huge text (it spans several slices and
    takes the min across them). Every text here has at least one shingle, so segment starts are strictly increasing.
    """
    ends = np.cumsum(counts)
    starts = ends - counts
    buffer = np.empty(len(a) * _SLICE_SHINGLES, dtype=np.uint32)
    for lo in range(0, len(hashes), _SLICE_SHINGLES):
        hi = min(lo + _SLICE_SHINGLES, len(hashes))
        first, last = np.searchsorted(ends, lo, side="right"), np.searchsorted(starts, hi, side="left")
        permuted = buffer[: len(a) * (hi - lo)].reshape(len(a), hi - lo)
        np.multiply(a[:, None], hashes[None, lo:hi], out=permuted)
        permuted += b[:, None]
        segment_mins = np.minimum.reduceat(permuted, np.maximum(starts[first:last], lo) - lo, axis=1)
        np.minimum(out[:, first:last], segment_mins, out=out[:, first:last])


def fmix32(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer: the pre-mix datasketch applies to input hashes in its affine32 scheme."""
    return _murmur_finalizer(values, np.uint32, (16, 13, 16), (0x85EBCA6B, 0xC2B2AE35))


def fmix64(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer: spreads the polynomial hash so its high 32 bits are well mixed."""
    return _murmur_finalizer(values, np.uint64, (33, 33, 33), (0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53))


def _murmur_finalizer(
    values: np.ndarray, word: type, shifts: tuple[int, ...], multipliers: tuple[int, ...]
) -> np.ndarray:
    """x ^= x >> s1; x *= m1; x ^= x >> s2; x *= m2; x ^= x >> s3, in the unsigned width `word` (wrapping)."""
    first, second, third = (word(shift) for shift in shifts)
    values = values ^ (values >> first)
    values *= word(multipliers[0])
    values ^= values >> second
    values *= word(multipliers[1])
    return values ^ (values >> third)


def lsh_candidates(signatures: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pairs (i < j) whose signatures agree on every row of at least one LSH band: likely similar, to be verified.

    datasketch's `MinHashLSH` chooses the bands for the threshold; the banding itself is done here with numpy and
    gives the same candidates (a test checks). MinHashLSH inserts every text into a dict of sets per band: for 100k
    texts that took 8 s and 650 MB and grew 13x from 10k to 100k; sorting band keys takes under half a second.
    """
    count, num_perm = signatures.shape
    band_count, rows = _bands(threshold, num_perm)
    found = [np.empty(0, dtype=np.int64)]
    for band in range(band_count):
        keys = _band_keys(signatures[:, band * rows : (band + 1) * rows])
        order = np.argsort(keys, kind="stable")
        same = np.diff(np.concatenate(([0], (keys[order][1:] == keys[order][:-1]).astype(np.int8), [0])))
        starts, ends = np.flatnonzero(same == 1), np.flatnonzero(same == -1) + 1
        pairs = [np.sort(order[np.stack([starts, ends - 1])], axis=0)]  # two-member buckets, the usual case
        for start, end in zip(starts[ends - starts > 2], ends[ends - starts > 2], strict=True):
            members = np.sort(order[start:end])
            pairs.append(np.stack([members[index] for index in np.triu_indices(end - start, 1)]))
        found += [first * count + second for first, second in pairs]
    return [divmod(int(code), count) for code in np.unique(np.concatenate(found))]


def _bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) that datasketch's `MinHashLSH` picks for the threshold, weighted towards recall."""
    try:
        index = MinHashLSH(threshold=min(threshold, _MAX_LSH_THRESHOLD), num_perm=num_perm, weights=_LSH_WEIGHTS)
    except ValueError:  # too few permutations to band at this threshold: every row is a band
        return num_perm, 1
    return index.b, index.r


def _band_keys(band: np.ndarray) -> np.ndarray:
    """One 64-bit key per row of a band; equal rows give equal keys (a rare collision only adds a candidate)."""
    keys = np.zeros(len(band), dtype=np.uint64)
    for column in band.T:
        keys = fmix64(keys * _POLY_BASE + column.astype(np.uint64))
    return keys


def _verified_pairs(
    texts: Sequence[str],
    signatures: np.ndarray,
    candidates: list[tuple[int, int]],
    threshold: float,
    shingle_size: int,
) -> list[tuple[int, int, float]]:
    """Candidates whose exact shingle-set Jaccard reaches the threshold, with that Jaccard.

    The MinHash estimate first drops candidates far below the threshold (6 standard deviations at worst) so that a
    flood of weak LSH collisions costs a vectorised comparison, not a set intersection each.
    """
    if not candidates:
        return []
    pairs = np.array(candidates, dtype=np.int64)
    estimates = (signatures[pairs[:, 0]] == signatures[pairs[:, 1]]).mean(axis=1)
    pairs = pairs[estimates >= threshold - 3.0 / np.sqrt(signatures.shape[1])]
    sets = _shingle_sets(texts, np.unique(pairs), shingle_size)
    verified = []
    for i, j in pairs.tolist():
        shared = np.intersect1d(sets[i], sets[j], assume_unique=True).size
        similarity = shared / (sets[i].size + sets[j].size - shared)
        if similarity >= threshold:
            verified.append((i, j, similarity))
    return verified


def _shingle_sets(texts: Sequence[str], indices: np.ndarray, shingle_size: int) -> dict[int, np.ndarray]:
    """The sorted distinct shingle hashes of the texts at `indices`, hashed a block at a time."""
    chosen = [texts[index] for index in indices.tolist()]
    sets: dict[int, np.ndarray] = {}
    for lo, hi in _blocks(chosen):
        hashes, counts = shingle_hashes(chosen[lo:hi], shingle_size)
        for index, shingles in zip(indices[lo:hi].tolist(), np.split(hashes, np.cumsum(counts)[:-1]), strict=True):
            sets[index] = np.unique(shingles)
    return sets


def _clusters(size: int, links: list[tuple[int, int]]) -> list[list[int]]:
    """Connected components of the links (union-find with path halving), those of two or more, each sorted."""
    parent = list(range(size))

    def root(node: int) -> int:
        while parent[node] != node:
            parent[node] = parent[parent[node]]
            node = parent[node]
        return node

    for i, j in links:
        parent[root(i)] = root(j)
    components: dict[int, list[int]] = {}
    for node in {node for link in links for node in link}:
        components.setdefault(root(node), []).append(node)
    return sorted(sorted(component) for component in components.values())
