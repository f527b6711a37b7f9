"""`tunelab export <run> --quantize int8|int4`: the run's merged model as a weight-only quantised folder that
`transformers` loads with plain `from_pretrained`, verified like every export: read back as a user would, compared
with the merged model on the run's held-out set (paired intervals), sizes on disk and load time in
`verification.json`.

- int8: torchao's int8 weight-only (per output row), quantised from the fp32 model so that the scales and the
  computation stay fp32; the input embeddings are stored in bfloat16 (loaded back as fp32, which is exact). Field
  accuracy vs the merged model on the quickstart's 120 test records: bitsandbytes' LLM.int8 (which quantises the
  activations too) −1.3 points [−2.6, −0.2], torchao computing in bfloat16 −1.0 [−1.7, −0.4], this −0.8 [−1.5, −0.4].
- int4: bitsandbytes NF4 (blocks of 64), tunelab's QLoRA dependency, non-quantised layers in bfloat16; vLLM serves it
  with `--quantization bitsandbytes`.
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
SCHEMES = {"int8": "torchao int8 weight-only, one scale per output row; embeddings in bfloat16, computed in fp32",
           "int4": "bitsandbytes NF4, blocks of 64; embeddings and norms in bfloat16"}  # fmt: skip
SERVE = {"int8": "vLLM: `vllm serve {folder} --quantization torchao` (vLLM's torchao support; not tried here)",
         "int4": "vLLM: `vllm serve {folder} --quantization bitsandbytes`"}  # fmt: skip
README = """# {name}

Exported by tunelab from the run `{run}`: its merged model with the linear layers quantised to {kind}
({scheme}).

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("{folder}")  # needs {library}
tokenizer = AutoTokenizer.from_pretrained("{folder}")
```

{serve}

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
        log(f"[tunelab] quantising {folder} to {kind} ({SCHEMES[kind]})")
        (_save_int8 if kind == "int8" else _save_int4)(folder, scratch)
        log("[tunelab] verifying: loading it back with transformers, comparing it with the merged model")
        check = verify_quantized(run, folder, scratch, kind)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    write_json(scratch / "verification.json", check)
    scheme = SCHEMES[kind]
    readme = README.format(name=target.name, run=run.path, kind=kind, scheme=scheme, folder=target,
                           library="torchao" if kind == "int8" else "bitsandbytes",
                           serve=SERVE[kind].format(folder=target), summary=check["summary"])  # fmt: skip
    (scratch / "README.md").write_text(readme, encoding="utf-8")
    if target.exists():
        shutil.rmtree(target)
    scratch.replace(target)
    return {"kind": kind, "folder": str(target), "verification": check, "files": {"folder": str(target)}}


def _save_int8(folder: Path, scratch: Path) -> None:
    import json

    import torch
    from torchao.quantization import Int8WeightOnlyConfig
    from transformers import AutoModelForCausalLM, TorchAoConfig

    from tunelab.model.load import quiet_loading

    quiet_loading()
    config = TorchAoConfig(quant_type=Int8WeightOnlyConfig())
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, quantization_config=config)
    embeddings = model.get_input_embeddings()
    with torch.no_grad():
        embeddings.weight.data = embeddings.weight.data.to(torch.bfloat16)  # half the size; exact when read as fp32
    model.save_pretrained(scratch)
    # save_pretrained names the dtype after the first floating tensor (the bf16 embeddings); the model computes in
    # fp32, so that is what from_pretrained must load it as
    config_file = scratch / "config.json"
    config_file.write_text(json.dumps(json.loads(config_file.read_text()) | {"dtype": "float32"}, indent=2))
    _save_tokenizer(folder, scratch)


def _save_int4(folder: Path, scratch: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from tunelab.model.load import quiet_loading
    from tunelab.model.quantized_base import loading_options

    quiet_loading()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16, **loading_options(4, "nf4", False))
    model.save_pretrained(scratch)
    _save_tokenizer(folder, scratch)


def _save_tokenizer(folder: Path, scratch: Path) -> None:
    from transformers import AutoTokenizer, GenerationConfig

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
