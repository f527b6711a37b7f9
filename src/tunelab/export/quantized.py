"""`tunelab export <run> --quantize int8|int4`: the run's merged model as a weight-only quantised folder (bitsandbytes
LLM.int8 or NF4) that `transformers` loads with plain `from_pretrained` and vLLM serves (`--quantization
bitsandbytes`), verified like every export: read back as a user would, compared with the merged model on the run's
held-out set (paired intervals), sizes on disk and load time in `verification.json`.

bitsandbytes rather than torchao: it is already tunelab's QLoRA dependency, quantises on the CPU, and both
transformers and vLLM load its serialised checkpoints. The layers it does not quantise (embeddings, norms) are stored
in bfloat16: half their fp32 size, and the dtype the quantised layers compute in on a GPU.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from tunelab.errors import RunError
from tunelab.export.model_check import check_exportable, compare_with_merged, describe_check, folder_bytes
from tunelab.runs import RunDir, write_json

QUANTIZED_BITS = {"int8": 8, "int4": 4}
README = """# {name}

Exported by tunelab from the run `{run}`: its merged model with the linear layers quantised to {kind}
(bitsandbytes {scheme}); embeddings and norms in bfloat16.

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("{folder}")  # needs bitsandbytes
tokenizer = AutoTokenizer.from_pretrained("{folder}")
```

vLLM: `vllm serve {folder} --quantization bitsandbytes`

Check against the merged model (verification.json): {summary}
"""


def export_quantized(run: RunDir, kind: str, out: str | None = None, overwrite: bool = False, log=print) -> dict:
    from tunelab.model.load import run_model_folder

    if kind not in QUANTIZED_BITS:
        raise RunError(f"--quantize {kind!r}: choose one of {', '.join(QUANTIZED_BITS)}")
    check_exportable(run, kind)
    target = Path(out) if out else run.path / "export" / kind
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise RunError(f"{target} is not empty; choose another --out or pass --overwrite")
    folder = Path(run_model_folder(run.path))
    scratch = target.with_name(f".{target.name}.partial")
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        log(f"[tunelab] quantising {folder} to {kind} (bitsandbytes)")
        _save_quantized(folder, scratch, QUANTIZED_BITS[kind])
        log("[tunelab] verifying: loading it back with transformers, comparing it with the merged model")
        check = verify_quantized(run, folder, scratch, kind)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    write_json(scratch / "verification.json", check)
    scheme = "LLM.int8, per-row scales" if kind == "int8" else "NF4, blocks of 64"
    readme = README.format(name=target.name, run=run.path, kind=kind, scheme=scheme, folder=target,
                           summary=check["summary"])  # fmt: skip
    (scratch / "README.md").write_text(readme, encoding="utf-8")
    if target.exists():
        shutil.rmtree(target)
    scratch.replace(target)
    return {"kind": kind, "folder": str(target), "verification": check, "files": {"folder": str(target)}}


def _save_quantized(folder: Path, scratch: Path, bits: int) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from tunelab.model.load import quiet_loading
    from tunelab.model.quantized_base import loading_options

    quiet_loading()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16, **loading_options(bits, "nf4", False))
    model.save_pretrained(scratch)
    AutoTokenizer.from_pretrained(folder).save_pretrained(scratch)
    GenerationConfig.from_pretrained(folder).save_pretrained(scratch)


def verify_quantized(run: RunDir, folder: Path, scratch: Path, kind: str) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(scratch).eval()  # as a user loads it: the saved config decides
    tokenizer = AutoTokenizer.from_pretrained(scratch)
    load_seconds = time.perf_counter() - started
    answers = scratch / "verification"  # both models' held-out answers
    files = {"reference": answers / "reference.jsonl", "predictions": answers / f"{kind}.jsonl"}
    check = {"quantization": kind, "bytes": folder_bytes(scratch), "load_seconds": round(load_seconds, 2),
             "compute_dtype": str(model.dtype).removeprefix("torch.")}  # fmt: skip
    check |= compare_with_merged(run, folder, model, tokenizer, files, kind, check["bytes"])
    check["summary"] = describe_check(check)
    return check
