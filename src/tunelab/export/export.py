"""`tunelab export`: a run's model as a folder other tools load.

- default: the adapter (PEFT format: `adapter_config.json` + `adapter_model.safetensors`, plus the tokenizer with
  the chat template training used), which `peft` loads and vLLM serves with `--lora-modules name=<folder>`;
- `--merged`: base + adapter merged into one model folder that plain `transformers` loads (tokenizer, chat
  template, generation config included), in the dtype asked for, with the merge verified: the merged model must
  give the adapter model's greedy outputs; the check is written to `verification.json` next to the weights.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from tunelab.errors import RunError
from tunelab.runs import RunDir, write_json

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
README = """# {name}

Exported by tunelab from the run `{run}`.

{how}
"""
HOW_ADAPTER = """{summary} in PEFT format, for the base model `{base}`.

```python
{register}from peft import AutoPeftModelForCausalLM
model = AutoPeftModelForCausalLM.from_pretrained("{folder}")
```
{serve}"""
VLLM_LORA = "\nvLLM: `vllm serve <base model> --enable-lora --lora-modules {name}={folder}`\n"
REGISTER_OWN = "from tunelab.model.bottleneck import register\nregister()  # a PEFT method of tunelab's own\n"
HOW_MERGED = """A complete model (adapter merged into `{base}`, dtype {dtype}).

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("{folder}")
tokenizer = AutoTokenizer.from_pretrained("{folder}")
```

Merge check: {check}"""


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise RunError(f"{out} is not empty; choose another --out or pass --overwrite")
        shutil.rmtree(out)


def export_adapter(run: RunDir, out: Path, overwrite: bool = False) -> dict[str, Any]:
    if not (run.adapter / "adapter_config.json").is_file():
        raise RunError(f"{run.path} has no adapter/ (method {run.read_recipe()['method']['type']}); "
                       "export it with --merged to get its full model folder")  # fmt: skip
    _prepare_out(out, overwrite)
    scratch = out.with_name(f".{out.name}.partial")
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(run.adapter, scratch)
    missing = [name for name in ADAPTER_FILES if not (scratch / name).is_file()]
    if missing:
        shutil.rmtree(scratch)
        raise RunError(f"{run.adapter} is incomplete: {', '.join(missing)} missing; rerun or resume the training")
    recipe = run.read_recipe()
    base = recipe["model"]["name"]
    how = _how_adapter(recipe["method"]["type"], base, out)
    (scratch / "README.md").write_text(README.format(name=out.name, run=run.path, how=how), encoding="utf-8")
    scratch.replace(out)
    return {"kind": "adapter", "folder": str(out), "base": base}


def _how_adapter(method_type: str, base: str, folder: Path) -> str:
    """The exported README's how-to-load: what the adapter is, its loading code, where it serves."""
    from tunelab.model.methods import method_spec

    spec = method_spec(method_type)
    lora = method_type in ("lora", "qlora")
    return HOW_ADAPTER.format(summary=spec.summary[0].upper() + spec.summary[1:], base=base, folder=folder,
                              register=REGISTER_OWN if method_type == "bottleneck" else "",
                              serve=VLLM_LORA.format(name=folder.name, folder=folder) if lora else "")  # fmt: skip


def _verification_prompts(run: RunDir, tokenizer, count: int = 4) -> list[list[int]]:
    from tunelab.data.tokenize import prompt_ids_for_generation
    from tunelab.eval.evaluate import _test_records

    test = run.read_recipe()["data"].get("test")
    records = _test_records(test, None, count) if test else []
    prompts = [prompt_ids_for_generation(tokenizer, r["messages"]) for r in records]
    return prompts or [prompt_ids_for_generation(tokenizer, [{"role": "user", "content": "Hello! Who are you?"}])]


def export_merged(run: RunDir, out: Path, dtype: str | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Merge (LoRA runs) or copy (full/freeze runs) into `out` in `dtype`, then verify against the run's model."""
    from tunelab.data.tokenize import ensure_chat_template
    from tunelab.export.merge import load_merged, merge_adapter_dir, verify_merge
    from tunelab.model.load import load_for_inference, model_folder

    if run.read_recipe().get("stage") == "rm":
        raise RunError(f"{run.path} is a reward model: `tunelab run` merged and verified it into {run.merged} "
                       "(scores checked against the adapter); copy that folder, or export the adapter")  # fmt: skip
    from tunelab.model.methods import method_spec

    spec = method_spec(run.read_recipe()["method"]["type"])
    if not spec.exports_merged:
        raise RunError(
            f"{run.path} cannot be exported --merged: {spec.no_merge}; export the adapter (without --merged)"
        )
    base, adapter = run.model_for_inference()
    _prepare_out(out, overwrite)
    if adapter:
        merge_adapter_dir(Path(model_folder(base)), Path(adapter), out, dtype=dtype)
    else:
        model, tokenizer = load_for_inference(base, dtype=dtype)
        from tunelab.export.merge import _save_atomic

        _save_atomic(model, tokenizer, out, overwrite=False)
    reference, tokenizer = load_for_inference(base, adapter)
    ensure_chat_template(tokenizer)
    merged = load_merged(out)
    check = verify_merge(reference, merged, tokenizer, _verification_prompts(run, tokenizer))
    check |= {"dtype": str(merged.dtype).removeprefix("torch."), "adapter": adapter is not None}
    write_json(out / "verification.json", check)
    verdict = "identical greedy outputs" if check["identical_outputs"] else f"{check['mismatches']} outputs differ"
    summary = f"{verdict}, max |Δlogit| {check['max_abs_logit_diff']:.1e} on {check['prompts']} prompts"
    how = HOW_MERGED.format(base=base, dtype=check["dtype"], folder=out, check=summary)
    (out / "README.md").write_text(README.format(name=out.name, run=run.path, how=how), encoding="utf-8")
    return {"kind": "merged", "folder": str(out), "base": base, "verification": check}


def export_run(run_path: str, merged: bool = False, dtype: str | None = None, out: str | None = None,
               overwrite: bool = False, gguf: str | None = None, quantize: str | None = None,
               log=print) -> dict[str, Any]:  # fmt: skip
    if out is not None and not out.strip():
        raise RunError("--out is empty; give the folder to export into, or leave --out out for <run>/export/")
    formats = [flag for flag, value in (("--gguf", gguf), ("--quantize", quantize)) if value is not None]
    if formats and (merged or dtype is not None or len(formats) > 1):
        raise RunError(f"{' and '.join(formats)}: one export format at a time, each writes the merged model in its own "
                       "format: leave out --merged and --dtype")  # fmt: skip
    run = RunDir.open(run_path)
    if gguf is not None:
        from tunelab.export.gguf import export_gguf

        return export_gguf(run, gguf, out, overwrite, log)
    if quantize is not None:
        from tunelab.export.quantized import export_quantized

        return export_quantized(run, quantize, out, overwrite, log)
    target = Path(out) if out else run.path / "export" / ("merged" if merged else "adapter")
    if merged:
        return export_merged(run, target, dtype, overwrite)
    if dtype is not None:
        raise RunError("--dtype applies to --merged exports; the adapter is exported as it was trained")
    return export_adapter(run, target, overwrite)
