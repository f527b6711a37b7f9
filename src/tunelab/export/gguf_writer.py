"""A llama-architecture model folder (safetensors + tokenizer.json) → one GGUF file that llama.cpp, Ollama and LM
Studio load, written with the `gguf` package's GGUFWriter.

Why tunelab writes the file itself: the `gguf` package has the writer, the tensor-name table and the quantisers but no
Hugging Face converter, and llama.cpp's `convert_hf_to_gguf.py` is a script outside any package that pins
transformers < 5. What this module adds is only the mapping: metadata from config.json, the tokenizer (a byte-level
BPE vocabulary, its merges, special tokens and chat template), tensor names from gguf's own `TensorNameMap`, and the
row order llama.cpp's rotary embedding expects for the query and key projections.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunelab.errors import RunError

# what `--gguf` accepts → (GGMLQuantizationType name for 2-D weights, LlamaFileType name for general.file_type)
GGUF_TYPES = {"f16": ("F16", "MOSTLY_F16"), "q8_0": ("Q8_0", "MOSTLY_Q8_0"), "q4_0": ("Q4_0", "MOSTLY_Q4_0")}
# Hugging Face architecture → gguf's MODEL_ARCH member; the layouts whose tensors and metadata this module maps
WRITABLE = {"LlamaForCausalLM": "LLAMA"}


@dataclass(frozen=True)
class GGUFSummary:
    path: Path
    qtype: str
    tensors: int
    tensor_types: dict[str, int]  # ggml type → how many tensors were written in it
    bytes: int
    tokenizer_pre: str


def check_writable(folder: Path) -> dict[str, Any]:
    """The folder's config.json, when this module can write it; else a RunError naming what it can write."""
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    architectures = config.get("architectures") or [config.get("model_type", "unknown")]
    if architectures[0] not in WRITABLE:
        raise RunError(f"{folder}: GGUF export writes {', '.join(WRITABLE)} models; this one is "
                       f"{architectures[0]}. Export the merged folder (--merged) and convert it with llama.cpp's "
                       "convert_hf_to_gguf.py")  # fmt: skip
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if rope.get("rope_type", "default") != "default":
        raise RunError(f"{folder}: rope type {rope['rope_type']!r} is not written by tunelab's GGUF export (only the "
                       "default rotary embedding); convert the merged folder with llama.cpp's converter")  # fmt: skip
    tokenizer = _tokenizer_json(folder)
    if tokenizer.get("model", {}).get("type") != "BPE" or not _byte_level(tokenizer):
        raise RunError(f"{folder}: GGUF export writes byte-level BPE tokenizers (GPT-2 style, as the built-in "
                       "model's); this tokenizer is not one; convert the merged folder with llama.cpp's "
                       "converter")  # fmt: skip
    return config


def _tokenizer_json(folder: Path) -> dict[str, Any]:
    path = folder / "tokenizer.json"
    if not path.is_file():
        raise RunError(f"{folder}: no tokenizer.json (a fast tokenizer is needed to write the GGUF vocabulary)")
    return json.loads(path.read_text(encoding="utf-8"))


def _byte_level(tokenizer: dict[str, Any]) -> bool:
    def kinds(part: dict[str, Any] | None) -> list[str]:
        if not part:
            return []
        return [part.get("type", "")] + [k for inner in part.get("pretokenizers", []) for k in kinds(inner)]

    return "ByteLevel" in kinds(tokenizer.get("pre_tokenizer")) or "ByteLevel" in kinds(tokenizer.get("decoder"))


def write_gguf(folder: Path, target: Path, qtype: str, name: str, tokenizer_pre: str) -> GGUFSummary:
    """Write `folder`'s model as `target` with 2-D weights in `qtype`; norms stay F32."""
    import gguf

    config = check_writable(folder)
    arch = getattr(gguf.MODEL_ARCH, WRITABLE[config["architectures"][0]])
    writer = gguf.GGUFWriter(str(target), gguf.MODEL_ARCH_NAMES[arch])
    _write_metadata(writer, config, name, getattr(gguf.LlamaFileType, GGUF_TYPES[qtype][1]))
    _write_tokenizer(writer, folder, config, tokenizer_pre)
    types = _write_tensors(writer, folder, config, arch, getattr(gguf.GGMLQuantizationType, GGUF_TYPES[qtype][0]))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return GGUFSummary(target, qtype, sum(types.values()), types, target.stat().st_size, tokenizer_pre)


def _write_metadata(writer, config: dict[str, Any], name: str, file_type) -> None:
    import gguf

    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    rope = config.get("rope_parameters") or {}
    writer.add_name(name)
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(config.get("num_key_value_heads") or heads)
    writer.add_rope_freq_base(float(rope.get("rope_theta", config.get("rope_theta", 10000.0))))
    writer.add_layer_norm_rms_eps(float(config["rms_norm_eps"]))
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(config["vocab_size"])
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)


def _write_tokenizer(writer, folder: Path, config: dict[str, Any], pre: str) -> None:
    """The vocabulary in id order (gaps filled, as llama.cpp does, so that ids stay put), each token's type (added
    special tokens are control tokens), the merges, special ids, add-BOS flags and the chat template."""
    import gguf

    tokenizer = _tokenizer_json(folder)
    by_id = {index: token for token, index in tokenizer["model"]["vocab"].items()}
    added = {entry["id"]: entry for entry in tokenizer.get("added_tokens", [])}
    by_id |= {index: entry["content"] for index, entry in added.items()}
    size = max(config["vocab_size"], max(by_id) + 1)
    tokens, types = [], []
    for index in range(size):
        tokens.append(by_id.get(index, f"[PAD{index}]"))
        entry = added.get(index)
        if index not in by_id:
            types.append(gguf.TokenType.UNUSED)
        elif entry is None:
            types.append(gguf.TokenType.NORMAL)
        else:
            types.append(gguf.TokenType.CONTROL if entry.get("special") else gguf.TokenType.USER_DEFINED)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(folder, load_merges=True, n_vocab=size).add_to_gguf(writer, quiet=True)


def _write_tensors(writer, folder: Path, config: dict[str, Any], arch, qtype) -> dict[str, int]:
    import gguf
    import numpy as np
    from safetensors import safe_open

    names = gguf.get_tensor_name_map(arch, config["num_hidden_layers"])
    heads = config["num_attention_heads"]
    kv_heads = config.get("num_key_value_heads") or heads
    counts: dict[str, int] = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as tensors:
            for key in tensors.keys():  # noqa: SIM118 (safe_open is not a mapping)
                if key.endswith("rotary_emb.inv_freq"):
                    continue
                gguf_name = names.get_name(key, try_suffixes=(".weight", ".bias"))
                if gguf_name is None:
                    raise RunError(f"{path}: tensor {key} has no GGUF name for this architecture; cannot export it")
                data = tensors.get_tensor(key).float().numpy()
                if key.endswith(("q_proj.weight", "k_proj.weight")):
                    data = rotary_rows_for_llama_cpp(data, heads if "q_proj" in key else kv_heads)
                data, written = _encode(np.ascontiguousarray(data), qtype, gguf_name)
                writer.add_tensor(gguf_name, data, raw_dtype=written)
                counts[written.name] = counts.get(written.name, 0) + 1
    return counts


# In a 4-bit file, the tensors kept in Q8_0: the embedding / output layer, and the attention value and MLP down
# projections — the ones most sensitive to rounding (llama.cpp's Q4_K_M mix gives the same ones more bits). Measured on
# the quickstart (field accuracy vs the merged model, 120 test records): all-Q4_0 −14.2 pts, this mix −4.3 pts.
KEPT_AT_8_BITS = ("token_embd", "output", "attn_v", "ffn_down")


def _encode(data, qtype, gguf_name: str):
    """(bytes to write, their ggml type): norms and other 1-D tensors stay F32 (llama.cpp computes them in F32);
    a 4-bit file keeps KEPT_AT_8_BITS in Q8_0; rows that are no whole number of blocks fall back to F16."""
    import gguf
    import numpy as np

    if data.ndim < 2:
        return data.astype(np.float32), gguf.GGMLQuantizationType.F32
    if qtype == gguf.GGMLQuantizationType.F16:
        return data.astype(np.float16), qtype
    if qtype == gguf.GGMLQuantizationType.Q4_0 and any(part in KEPT_AT_8_BITS for part in gguf_name.split(".")):
        qtype = gguf.GGMLQuantizationType.Q8_0
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if data.shape[-1] % block:
        return data.astype(np.float16), gguf.GGMLQuantizationType.F16
    return gguf.quants.quantize(data, qtype), qtype


def rotary_rows_for_llama_cpp(weight, heads: int):
    """Hugging Face's llama checkpoints order each head's query/key rows for rotate-half rotary embeddings (the first
    half of a head's dimensions pairs with the second half); llama.cpp rotates interleaved pairs (0,1), (2,3), ….
    Reorder each head's rows from [first half; second half] to [f0, s0, f1, s1, …] so that llama.cpp's rotation
    pairs the same dimensions. transformers' GGUF loader undoes exactly this when it reads the file back."""
    rows = weight.shape[0]
    half = rows // heads // 2
    return weight.reshape(heads, 2, half, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)
