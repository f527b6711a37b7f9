"""The process's memory allocator: freed memory kept for reuse (see `keep_freed_memory`). No torch import, so the
CLI can call it first thing, before any library allocates."""

from __future__ import annotations

import functools
import os

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


@functools.cache
def keep_freed_memory() -> str:
    """Ask glibc's malloc to keep memory it frees for reuse instead of handing it back to the kernel; returns what
    was done (recorded in training.json).

    PyTorch on a CPU allocates with plain malloc, and glibc serves every block above 128 KiB–32 MiB with a fresh
    mmap that it unmaps again on free. A training step allocates and frees gigabytes of activations, so every step
    touches new pages, and the kernel zeroes each one on its first touch. Measured on this project's VMs (firecracker,
    free-page reporting): a first touch costs ~2 s per GiB, against 0.03 s for memory already mapped — a LoRA step of
    the built-in model took 2.0–2.6 s with glibc's defaults and 1.5–2.0 s with freed memory kept (M_MMAP_MAX 0: every
    block from the heap; M_TRIM_THRESHOLD at its maximum: the heap's top is not given back). jemalloc, preloaded,
    gave nothing here. This is what a caching allocator does on a GPU; memory is reused, not leaked, and the process's
    peak is what it was. Skipped (and said) where the C library is not glibc."""
    if os.environ.get("TUNELAB_KEEP_FREED_MEMORY", "1") == "0":
        return "glibc defaults (TUNELAB_KEEP_FREED_MEMORY=0)"
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return "the C library's defaults (no glibc mallopt)"
    if not (mallopt(_M_MMAP_MAX, 0) and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)):
        return "glibc defaults (mallopt refused)"
    return "glibc malloc keeping freed memory (M_MMAP_MAX 0, M_TRIM_THRESHOLD max)"


def prepare_process() -> str:
    """What tunelab does first in a process that will train or decode (the CLI; the benchmarks' tunelab workers):
    PyTorch's CPU blocks of 2 MiB and more on transparent huge pages (`THP_MEM_ALLOC_ENABLE`, read by PyTorch when
    it first allocates such a block, so this must come before that), and freed memory kept. Measured here with
    `bench/train_throughput.py` (LoRA, checkpointing): 211 real tok/s and 3.4 GiB with the defaults, 250–265 and
    4.0–4.2 GiB with freed memory kept, 290–308 and 3.3 GiB with both. A user's own setting of the variable wins."""
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    return keep_freed_memory()
