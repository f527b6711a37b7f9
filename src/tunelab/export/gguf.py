"""`tunelab export <run> --gguf f16|q8_0|q4_0`: the run's merged model as one GGUF file for llama.cpp, Ollama and LM
Studio, with an Ollama Modelfile beside it, verified before it is put in place.

Files (all named from the GGUF file's stem, default `<run>/export/<run name>-<type>.gguf`):
  <stem>.gguf               the model, tokenizer and chat template
  <stem>.Modelfile          `ollama create <name> -f <stem>.Modelfile`
  <stem>.verification.json  the file read back with transformers and compared with the merged model: tokenizer,
                            logits, greedy answers and the held-out score (with a paired 95% interval), sizes
  <stem>.predictions.jsonl  the GGUF model's held-out answers (and <stem>.reference.jsonl: the merged model's)
Everything is written under hidden partial names and renamed into place after the check: a failure writes nothing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from tunelab.errors import RunError
from tunelab.export.gguf_writer import GGUF_TYPES, check_writable, write_gguf
from tunelab.export.model_check import check_exportable
from tunelab.runs import RunDir, write_json

SIDECARS = {"modelfile": ".Modelfile", "verification": ".verification.json", "predictions": ".predictions.jsonl",
            "reference": ".reference.jsonl"}  # fmt: skip


def gguf_paths(run: RunDir, qtype: str, out: str | None) -> dict[str, Path]:
    """Where each file goes: `out` (a .gguf path, or a folder) or <run>/export/."""
    default_name = f"{run.path.name}-{qtype}.gguf"
    if out is None:
        target = run.path / "export" / default_name
    else:
        target = Path(out) if out.endswith(".gguf") else Path(out) / default_name
    stem = target.with_suffix("")
    return {"gguf": target} | {kind: Path(f"{stem}{suffix}") for kind, suffix in SIDECARS.items()}


def export_gguf(run: RunDir, qtype: str, out: str | None = None, overwrite: bool = False, log=print) -> dict:
    from tunelab.model.load import run_model_folder

    if qtype not in GGUF_TYPES:
        raise RunError(f"--gguf {qtype!r}: choose one of {', '.join(GGUF_TYPES)}")
    check_exportable(run, "GGUF")
    paths = gguf_paths(run, qtype, out)
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing and not overwrite:
        raise RunError(f"{', '.join(existing)} already exist(s); choose another --out or pass --overwrite")
    folder = Path(run_model_folder(run.path))  # the merged model (made once for an adapter run)
    check_writable(folder)
    created = not paths["gguf"].parent.exists()
    paths["gguf"].parent.mkdir(parents=True, exist_ok=True)
    partial = {kind: path.with_name(f".{path.name}.partial") for kind, path in paths.items()}
    try:
        log(f"[tunelab] writing {paths['gguf'].name} ({qtype}) from {folder}")
        summary = write_gguf(folder, partial["gguf"], qtype, run.path.name, _tokenizer_pre(run))
        log("[tunelab] verifying: reading the file back with transformers, comparing it with the merged model")
        check = verify_gguf(run, folder, partial, summary)
        write_json(partial["verification"], check)
        partial["modelfile"].write_text(modelfile(folder, paths["gguf"].name), encoding="utf-8")
    except BaseException:
        for path in partial.values():
            path.unlink(missing_ok=True)
        if created and not any(paths["gguf"].parent.iterdir()):
            paths["gguf"].parent.rmdir()  # nothing left behind, not even the folder --out named
        raise
    for kind, path in partial.items():
        if path.exists():
            path.replace(paths[kind])
    return {"kind": f"gguf {qtype}", "folder": str(paths["gguf"]), "verification": check,
            "files": {kind: str(path) for kind, path in paths.items() if path.exists()}}  # fmt: skip


def _tokenizer_pre(run: RunDir) -> str:
    """llama.cpp picks its pre-tokenizer (how text is split before BPE) by this name. A base model that came as a
    GGUF file carries it; for other models tunelab writes 'default' (verification.json: tokenizer_pre), since llama.cpp
    identifies the right one by hashing tokenizer outputs against a table in its converter."""
    from tunelab.model.load import resolve_model

    reference = resolve_model(run.read_recipe()["model"]["name"])
    if reference.kind in ("builtin", "gguf"):
        from gguf import GGUFReader

        field = GGUFReader(reference.location).fields.get("tokenizer.ggml.pre")
        if field is not None:
            return str(field.contents())
    return "default"


def verify_gguf(run: RunDir, folder: Path, files: dict[str, Path], summary) -> dict[str, Any]:
    """Load the GGUF file back with transformers and compare it with the merged model it was written from."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunelab.export.model_check import compare_with_merged, describe_check

    started = time.perf_counter()
    where, name = str(files["gguf"].parent), files["gguf"].name
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name)
        model = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, dtype=torch.float32).eval()
    except Exception as error:  # transformers raises many kinds here; all mean the file is not readable
        raise RunError(f"the written GGUF file cannot be read back by transformers ({type(error).__name__}: "
                       f"{error}); nothing was exported") from None  # fmt: skip
    load_seconds = time.perf_counter() - started
    check = {"gguf_type": summary.qtype, "tensor_types": summary.tensor_types, "tokenizer_pre": summary.tokenizer_pre,
             "bytes": summary.bytes, "load_seconds": round(load_seconds, 2)}  # fmt: skip
    check |= compare_with_merged(run, folder, model, tokenizer, files, "gguf", summary.bytes)
    check["summary"] = describe_check(check)
    return check


def modelfile(folder: Path, gguf_name: str) -> str:
    """An Ollama Modelfile: the file, greedy decoding, the end-of-turn stop token, and — for a ChatML chat template —
    the template in Ollama's Go syntax with the model's default system prompt (other templates: Ollama reads the
    chat template stored in the GGUF file)."""
    from transformers import AutoTokenizer

    from tunelab.data.tokenize import ensure_chat_template

    tokenizer = AutoTokenizer.from_pretrained(folder)
    ensure_chat_template(tokenizer)
    lines = [f"# ollama create {Path(gguf_name).stem} -f {Path(gguf_name).stem}.Modelfile", f"FROM ./{gguf_name}"]
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "\x00"}], tokenize=False,
                                             add_generation_prompt=True)  # fmt: skip
    if "<|im_start|>" in rendered:
        lines.append('TEMPLATE """' + CHATML_TEMPLATE + '"""')
        system = _default_system_prompt(rendered)
        if system:
            lines.append(f'SYSTEM """{system}"""')
    if tokenizer.eos_token:
        lines.append(f'PARAMETER stop "{tokenizer.eos_token}"')
    lines.append("PARAMETER temperature 0")
    return "\n".join(lines) + "\n"


CHATML_TEMPLATE = (
    "{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
    '{{- range .Messages }}{{- if ne .Role "system" }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}'
    "{{- end }}<|im_start|>assistant\n"
)


def _default_system_prompt(rendered: str) -> str:
    """The system prompt a ChatML template adds when a conversation has none (SmolLM2's names itself)."""
    head = "<|im_start|>system\n"
    if not rendered.startswith(head):
        return ""
    return rendered[len(head) :].split("<|im_end|>", 1)[0]
