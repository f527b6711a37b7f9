"""Merge a LoRA adapter into its base model, save it as a plain transformers model, and verify the merge.

Merging happens in fp32 on a fresh copy (the caller's adapter model is left as it was) and is cast to the target
dtype only at the end. The result is written to a hidden sibling folder and renamed into place, so a failed merge
never leaves a half-written model where a server or a person would look for one.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tunelab.errors import ModelError, RunError
from tunelab.model.generate import eval_mode, generate_batch

# Quantizers whose weights are not plain floating point. GGUF is listed too, but a GGUF model loaded with
# `dequantize=True` (the way tunelab loads one) holds ordinary float weights and may be merged into.
QUANTIZED_METHODS = {
    "bitsandbytes", "gptq", "awq", "aqlm", "vptq", "quanto", "eetq", "higgs", "hqq", "compressed-tensors",
    "fbgemm_fp8", "torchao", "gguf", "bitnet", "spqr", "fp8", "quark", "fp_quant", "auto-round", "mxfp4", "nvfp4",
    "mxfp8", "metal", "fouroversix", "sinq",
}  # fmt: skip
EXAMPLES_KEPT = 3


def _as_dict(quantization_config: Any) -> dict[str, Any]:
    if isinstance(quantization_config, dict):
        return quantization_config
    if hasattr(quantization_config, "to_dict"):
        return quantization_config.to_dict()
    return dict(vars(quantization_config))


def is_quantized(config: Any) -> bool:
    """True when a model config describes quantized weights (bitsandbytes 4/8-bit, GPTQ, AWQ, ...)."""
    quantization = getattr(config, "quantization_config", None)
    if not quantization:
        return False
    settings = _as_dict(quantization)
    if settings.get("load_in_4bit") or settings.get("load_in_8bit"):
        return True
    if settings.get("dequantize"):
        return False
    return str(settings.get("quant_method", "")).lower() in QUANTIZED_METHODS


def refuse_quantized(config: Any, where: str) -> None:
    """Raise a ModelError that explains why merging into quantized weights is refused."""
    if is_quantized(config):
        method = _as_dict(config.quantization_config).get("quant_method", "quantized")
        raise ModelError(
            f"{where}: the base model is quantized ({method}), so the adapter cannot be merged into it: rounding "
            "the merged weights back to the quantized format loses the adapter's precision and changes its outputs. "
            "Merge into the full-precision base model instead (load it without a quantization config, e.g. the "
            "original fp16/bf16/fp32 checkpoint the QLoRA run started from), or serve base + adapter unmerged."
        )


def _resolve_dtype(dtype: Any, config: Any) -> torch.dtype:
    """The requested dtype, else the dtype the base checkpoint was stored in, else fp32."""
    chosen = dtype if dtype is not None else getattr(config, "dtype", None)
    if isinstance(chosen, str):
        chosen = getattr(torch, chosen.removeprefix("torch."), None)
    if isinstance(chosen, torch.dtype) and chosen.is_floating_point:
        return chosen
    if dtype is not None:
        raise ModelError(f"unknown dtype {dtype!r} for the merged model; use float32, bfloat16 or float16")
    return torch.float32


def _save_atomic(model, tokenizer, out_dir: Path, overwrite: bool) -> Path:
    """Save model (safetensors), tokenizer and generation config to a hidden sibling, then rename it to `out_dir`."""
    from tunelab.runs import save_folder_atomic

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise RunError(f"{out_dir} already holds a model; choose another folder or pass overwrite=True to replace it")

    def write(folder: Path) -> None:
        model.save_pretrained(folder, safe_serialization=True)
        if getattr(model, "generation_config", None) is not None:  # a reward model does not generate
            model.generation_config.save_pretrained(folder)
        tokenizer.save_pretrained(folder)

    return save_folder_atomic(out_dir, write)


def merge_adapter(peft_model, tokenizer, out_dir: Path, dtype=None, overwrite: bool = False) -> Path:
    """Merge an in-memory PEFT model into a copy of its base and save it to `out_dir`; the caller's model is kept."""
    base = peft_model.get_base_model()
    refuse_quantized(base.config, "merge")
    refuse_quantized(getattr(base, "hf_quantizer", None), "merge")
    target = _resolve_dtype(dtype, base.config)
    working = copy.deepcopy(peft_model).to(torch.float32)
    merged = working.merge_and_unload().to(target)
    return _save_atomic(merged, tokenizer, out_dir, overwrite)


def _load_tokenizer(base_model_dir: Path, adapter_dir: Path):
    """The adapter folder's tokenizer when training saved one (it may carry a new chat template), else the base's."""
    from transformers import AutoTokenizer

    has_own = (adapter_dir / "tokenizer_config.json").exists()
    return AutoTokenizer.from_pretrained(adapter_dir if has_own else base_model_dir)


def load_causal_lm(folder: Path):
    """A causal LM from a folder in fp32: the base a policy adapter is merged into."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)


def merge_adapter_dir(
    base_model_dir: Path,
    adapter_dir: Path,
    out_dir: Path,
    dtype=None,
    overwrite: bool = False,
    load_base=load_causal_lm,
) -> Path:
    """Load base (fp32, with `load_base`: a causal LM unless told) + adapter from disk, merge, cast to `dtype`
    (default: the base's stored dtype), save."""
    from transformers import AutoConfig

    from tunelab.model.peft_methods import load_adapter

    base_model_dir, adapter_dir = Path(base_model_dir), Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").exists():
        raise ModelError(f"{adapter_dir}: no adapter_config.json here; point to the run's adapter/ folder")
    config = AutoConfig.from_pretrained(base_model_dir)
    refuse_quantized(config, str(base_model_dir))
    target = _resolve_dtype(dtype, config)
    tokenizer = _load_tokenizer(base_model_dir, adapter_dir)
    base = load_base(base_model_dir)
    if len(tokenizer) > base.get_input_embeddings().weight.shape[0]:
        base.resize_token_embeddings(len(tokenizer))  # training added tokens; the adapter holds their embeddings
    merged = load_adapter(base, adapter_dir).merge_and_unload().to(target)
    return _save_atomic(merged, tokenizer, out_dir, overwrite)


def _max_logit_diff(first, second, prompts: Sequence[Sequence[int]]) -> float:
    """Largest absolute difference between the two models' logits over every prompt position (unpadded, fp32)."""
    worst = 0.0
    with eval_mode(first), eval_mode(second), torch.inference_mode():
        for prompt in prompts:
            ids = torch.tensor([list(prompt)], device=first.device)
            a = first(input_ids=ids).logits.float()
            b = second(input_ids=ids.to(second.device)).logits.float().to(a.device)
            worst = max(worst, (a - b).abs().max().item())
    return worst


def verify_merge(adapter_model, merged_model, tokenizer, prompts: list[list[int]], max_new_tokens: int = 32) -> dict:
    """Compare greedy outputs (must be identical) and logits of the adapter model and the merged model.

    In fp32 the logit difference is rounding only (around 1e-6 to 1e-4); a larger number means the merge went wrong
    or the merged model was saved in a lower precision.
    """
    if not prompts:
        raise ModelError("verify_merge needs at least one prompt to compare the adapter and merged models")
    expected = generate_batch(adapter_model, tokenizer, prompts, max_new_tokens)
    actual = generate_batch(merged_model, tokenizer, prompts, max_new_tokens)
    same = [a == b for a, b in zip(expected, actual, strict=True)]
    shown = sorted(range(len(prompts)), key=lambda i: same[i])[:EXAMPLES_KEPT]  # mismatches first
    examples = [
        {"prompt": tokenizer.decode(prompts[i]), "adapter": expected[i]["text"], "merged": actual[i]["text"],
         "identical": same[i]}
        for i in shown
    ]  # fmt: skip
    return {
        "identical_outputs": all(same),
        "mismatches": same.count(False),
        "max_abs_logit_diff": _max_logit_diff(adapter_model, merged_model, prompts),
        "prompts": len(prompts),
        "examples": examples,
    }


def load_merged(folder: Path):
    """Load a merged model folder with plain transformers, as a user would, in eval mode."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    model.eval()
    return model
