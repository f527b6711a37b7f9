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


def bf16_is_fast() -> bool:
    if has_cuda():
        return torch.cuda.is_bf16_supported()
    return cpu_has_bf16()


def describe() -> dict[str, object]:
    return {
        "device": "cuda" if has_cuda() else "cpu",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "bf16": bf16_is_fast(),
    }
