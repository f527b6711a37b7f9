"""The GPU table `tunelab estimate --gpu` reads: memory, dense bf16 tensor throughput and an hourly price.

Dated and bundled, so an estimate can be reproduced; `--prices prices.yaml` overrides or adds entries, e.g.

    h100: {hourly_usd: 2.10}
    my-a6000: {memory_gib: 48, bf16_tflops: 155, hourly_usd: 0.80}

Throughput: NVIDIA's datasheet peak for dense bf16 (fp16 where the card has no bf16, noted), without sparsity.
Prices: typical on-demand list prices per GPU-hour of public clouds and GPU clouds, USD, as of TABLE_DATE; they move
(and differ by region and commitment), so the output always names the price it used and where it came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TABLE_DATE = "2026-12"
PRICE_NOTE = f"tunelab's bundled table ({TABLE_DATE}): typical on-demand list price; pass --prices to use yours"

GPUS: dict[str, dict[str, Any]] = {
    "h200": {"name": "NVIDIA H200 SXM 141GB", "memory_gib": 141, "bf16_tflops": 989, "hourly_usd": 3.80},
    "h100": {"name": "NVIDIA H100 SXM 80GB", "memory_gib": 80, "bf16_tflops": 989, "hourly_usd": 2.99},
    "h100-pcie": {"name": "NVIDIA H100 PCIe 80GB", "memory_gib": 80, "bf16_tflops": 756, "hourly_usd": 2.49},
    "a100-80gb": {"name": "NVIDIA A100 SXM 80GB", "memory_gib": 80, "bf16_tflops": 312, "hourly_usd": 1.79},
    "a100-40gb": {"name": "NVIDIA A100 40GB", "memory_gib": 40, "bf16_tflops": 312, "hourly_usd": 1.29},
    "l40s": {"name": "NVIDIA L40S 48GB", "memory_gib": 48, "bf16_tflops": 362, "hourly_usd": 1.19},
    "a10": {"name": "NVIDIA A10 24GB", "memory_gib": 24, "bf16_tflops": 125, "hourly_usd": 0.75},
    "l4": {"name": "NVIDIA L4 24GB", "memory_gib": 24, "bf16_tflops": 121, "hourly_usd": 0.80},
    "rtx-4090": {"name": "NVIDIA GeForce RTX 4090 24GB", "memory_gib": 24, "bf16_tflops": 165, "hourly_usd": 0.69},
    "t4": {"name": "NVIDIA T4 16GB (fp16; no bf16)", "memory_gib": 16, "bf16_tflops": 65, "hourly_usd": 0.53},
}
# This machine's hour, for the cost of a CPU run: a 2-vCPU, 24 GiB cloud instance's typical on-demand price.
CPU_HOURLY_USD = 0.12


def gpu_table(prices: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The bundled table with a prices file's entries merged in (a new name needs memory_gib and bf16_tflops)."""
    import yaml

    from tunelab.errors import TunelabError

    table = {name: dict(entry) | {"price_source": PRICE_NOTE} for name, entry in GPUS.items()}
    if prices is None:
        return table
    path = Path(prices)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise TunelabError(f"--prices {path}: cannot read it ({type(error).__name__}: {error})") from None
    if not isinstance(document, dict):
        raise TunelabError(f"--prices {path}: expected a mapping of GPU names to {{hourly_usd: …}}")
    for name, entry in document.items():
        if not isinstance(entry, dict) or not all(isinstance(v, int | float) for v in entry.values()):
            raise TunelabError(f"--prices {path}: {name}: give numbers, e.g. {name}: {{hourly_usd: 2.5}}")
        unknown = set(entry) - {"memory_gib", "bf16_tflops", "hourly_usd"}
        if unknown:
            raise TunelabError(f"--prices {path}: {name}: unknown keys {sorted(unknown)}; use memory_gib, bf16_tflops, "
                               "hourly_usd")  # fmt: skip
        merged = table.get(str(name), {"name": str(name)}) | entry | {"price_source": str(path)}
        if "memory_gib" not in merged or "bf16_tflops" not in merged:
            raise TunelabError(f"--prices {path}: {name} is not in the bundled table; give memory_gib and bf16_tflops")
        table[str(name)] = merged
    return table
