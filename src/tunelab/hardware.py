"""What the machine can do: the device, whether bf16 is fast, how many cores to use."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch


def has_cuda() -> bool:
    return torch.cuda.is_available()


@functools.cache
def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX), where bf16 is ~3.5x faster."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_class() -> str:
    """This CPU as the benches name it: its bf16 instructions (amx_bf16, avx512_bf16) or none, and its cores."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        flags = set()
    found = [name for name in ("amx_bf16", "avx512_bf16") if name in flags] or ["no bf16 instructions"]
    return f"{physical_cores()} cores, {', '.join(found)}"


def bf16_is_fast() -> bool:
    if has_cuda():
        return torch.cuda.is_bf16_supported()
    return cpu_has_bf16()


def physical_cores() -> int:
    """Cores, not hyper-threads (psutil may not know: then the logical count)."""
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def available_memory_bytes() -> int:
    """Free memory of the device that trains: the GPU's when there is one, else the machine's."""
    if has_cuda():
        return int(torch.cuda.mem_get_info()[0])
    import psutil

    return int(psutil.virtual_memory().available)


def describe() -> dict[str, object]:
    return {
        "device": "cuda" if has_cuda() else "cpu",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "bf16": bf16_is_fast(),
    }
