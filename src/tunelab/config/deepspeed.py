"""`train.deepspeed`: a DeepSpeed ZeRO config for the HF Trainer, as a file path, an inline mapping, or a shorthand
(`zero2`, `zero3`, `zero3_offload`) that tunelab writes out into the run as `deepspeed.json`.

The shorthands leave batch size, accumulation, clipping and precision to the Trainer ("auto"), so the recipe's
`train:` settings stay the single source. DeepSpeed itself is not a tunelab dependency: it is for multi-GPU
machines, and its import fails on a CPU-only machine without Intel's extension (checked here, with the reason).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

PATH = "train.deepspeed"
_AUTO = {"train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
         "gradient_clipping": "auto", "bf16": {"enabled": "auto"}, "fp16": {"enabled": "auto"}}  # fmt: skip
SHORTHANDS: dict[str, dict[str, Any]] = {
    "zero2": _AUTO
    | {
        "zero_optimization": {
            "stage": 2,
            "overlap_comm": True,
            "contiguous_gradients": True,
            "reduce_bucket_size": "auto",
        }
    },  # fmt: skip
    "zero3": _AUTO
    | {
        "zero_optimization": {
            "stage": 3,
            "overlap_comm": True,
            "contiguous_gradients": True,
            "stage3_gather_16bit_weights_on_model_save": True,
        }
    },  # fmt: skip
    "zero3_offload": _AUTO
    | {
        "zero_optimization": {
            "stage": 3,
            "offload_optimizer": {"device": "cpu"},
            "offload_param": {"device": "cpu"},
            "stage3_gather_16bit_weights_on_model_save": True,
        }
    },  # fmt: skip
}


def deepspeed_problem() -> str | None:
    """Why DeepSpeed cannot be used here (None when it can be imported)."""
    if importlib.util.find_spec("deepspeed") is None:
        return ("DeepSpeed is not installed (pip install deepspeed; it is meant for several GPUs). On CPUs, train in "
                "several processes with --nproc (DDP over gloo) instead")  # fmt: skip
    try:
        import deepspeed  # noqa: F401
    except Exception as error:  # its accelerator detection raises several kinds on unsupported machines
        return f"DeepSpeed is installed but cannot start here ({type(error).__name__}: {error})"
    return None


def check_deepspeed(value: Any) -> list[tuple[str, str]]:
    """Problems with `train.deepspeed`: its form, a missing file, and whether DeepSpeed can run on this machine."""
    if isinstance(value, str) and value not in SHORTHANDS:
        path = Path(value)
        if path.suffix != ".json":
            return [(PATH, f"expected one of {', '.join(SHORTHANDS)}, a .json ZeRO config file or a mapping, "
                           f"got {value!r}")]  # fmt: skip
        if not path.is_file():
            return [(PATH, f"{value}: no such file; give a DeepSpeed config file or one of {', '.join(SHORTHANDS)}")]
    elif not isinstance(value, str | dict):
        return [(PATH, f"expected one of {', '.join(SHORTHANDS)}, a .json file or a mapping, got {value!r}")]
    problem = deepspeed_problem()
    return [(PATH, problem)] if problem else []


def deepspeed_config(value: Any, run_path: Path) -> Any:
    """What the Trainer gets: a shorthand written out as <run>/deepspeed.json (its path), else the value as given."""
    if isinstance(value, str) and value in SHORTHANDS:
        target = Path(run_path) / "deepspeed.json"
        target.write_text(json.dumps(SHORTHANDS[value], indent=2) + "\n", encoding="utf-8")
        return str(target)
    return value
