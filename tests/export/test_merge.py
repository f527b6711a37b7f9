import json
from types import SimpleNamespace

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunelab.data.tokenize import prompt_ids_for_generation
from tunelab.errors import ModelError, RunError
from tunelab.export.merge import is_quantized, merge_adapter, merge_adapter_dir, refuse_quantized, verify_merge

QUESTIONS = ["hello", "Please send two red shirts", "What is the capital of France?", "谢谢", "size M to Alice"]
LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def base_dir(tiny_model_dir, tmp_path_factory):
    """The tiny model with larger random weights (varied greedy outputs), saved as a base model folder."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    torch.manual_seed(1)
    with torch.no_grad():
        for weight in model.parameters():
            if weight.ndim == 2:
                weight.normal_(0, 0.2)
    path = tmp_path_factory.mktemp("merge") / "base"
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def adapter_dir(base_dir):
    """A LoRA adapter with non-zero B matrices (init_lora_weights=False), so it changes the model's outputs."""
    torch.manual_seed(2)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=LINEAR, init_lora_weights=False, task_type="CAUSAL_LM")
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32), config)
    path = base_dir.parent / "adapter"
    model.save_pretrained(path)
    return path


def _adapter_model(base_dir, adapter_dir):
    return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32), adapter_dir)


def _prompts(tokenizer):
    return [prompt_ids_for_generation(tokenizer, [{"role": "user", "content": q}]) for q in QUESTIONS]


def test_merged_model_matches_adapter_model(base_dir, adapter_dir, tmp_path):
    out = merge_adapter_dir(base_dir, adapter_dir, tmp_path / "merged")
    assert out == tmp_path / "merged"
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer_config.json"} <= {
        p.name for p in out.iterdir()
    }
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]  # no partial folder left behind
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"
    merged = AutoModelForCausalLM.from_pretrained(out)  # plain transformers, no peft
    assert merged.dtype == torch.float32
    report = verify_merge(_adapter_model(base_dir, adapter_dir), merged, tokenizer, _prompts(tokenizer))
    print(f"\nverify_merge adapter vs merged: {json.dumps({k: v for k, v in report.items() if k != 'examples'})}")
    assert report["identical_outputs"] and report["mismatches"] == 0 and report["prompts"] == len(QUESTIONS)
    assert report["max_abs_logit_diff"] < 1e-4
    assert len(report["examples"]) == 3 and all(e["identical"] for e in report["examples"])

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    against_base = verify_merge(base, merged, tokenizer, _prompts(tokenizer), max_new_tokens=8)
    print(f"verify_merge base vs merged: diff {against_base['max_abs_logit_diff']:.4f}")
    assert against_base["max_abs_logit_diff"] > 0.1 and not against_base["identical_outputs"]


def test_merge_in_memory_keeps_the_callers_adapter_model(base_dir, adapter_dir, tmp_path):
    adapter_model = _adapter_model(base_dir, adapter_dir)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    ids = torch.tensor([_prompts(tokenizer)[1]])
    with torch.no_grad():
        before = adapter_model(input_ids=ids).logits
    out = merge_adapter(adapter_model, tokenizer, tmp_path / "merged", dtype="bfloat16")
    with torch.no_grad():
        assert torch.equal(adapter_model(input_ids=ids).logits, before)
    assert any("lora_A" in name for name, _ in adapter_model.named_parameters())
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert merged.dtype == torch.bfloat16
    report = verify_merge(adapter_model, merged.float(), tokenizer, _prompts(tokenizer), max_new_tokens=8)
    print(f"\nverify_merge adapter vs bf16 merged: diff {report['max_abs_logit_diff']:.4f}")
    assert 1e-4 < report["max_abs_logit_diff"] < 1.0  # bf16 rounding is visible, and reported


def test_failed_merge_leaves_no_folder_and_existing_output_is_protected(base_dir, adapter_dir, tmp_path, monkeypatch):
    out = tmp_path / "merged"

    def broken_save(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(type(AutoTokenizer.from_pretrained(base_dir)), "save_pretrained", broken_save)
    with pytest.raises(OSError, match="disk full"):
        merge_adapter_dir(base_dir, adapter_dir, out)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()

    out.mkdir()
    (out / "keep.txt").write_text("earlier result")
    with pytest.raises(RunError, match="already holds a model"):
        merge_adapter_dir(base_dir, adapter_dir, out)
    assert (out / "keep.txt").read_text() == "earlier result"
    merge_adapter_dir(base_dir, adapter_dir, out, overwrite=True)
    assert (out / "model.safetensors").exists() and not (out / "keep.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["merged"]


def test_missing_adapter_folder_is_a_model_error(base_dir, tmp_path):
    with pytest.raises(ModelError, match="no adapter_config.json"):
        merge_adapter_dir(base_dir, tmp_path, tmp_path / "merged")


@pytest.mark.parametrize(
    ("quantization", "quantized"),
    [
        (None, False),
        ({"load_in_4bit": True, "quant_method": "bitsandbytes"}, True),
        ({"load_in_8bit": True}, True),
        ({"quant_method": "gptq", "bits": 4}, True),
        ({"quant_method": "gguf", "dequantize": True}, False),  # GGUF loaded as float weights
        ({"quant_method": "gguf", "dequantize": False}, True),
        (SimpleNamespace(quant_method="awq"), True),
    ],
)
def test_is_quantized(quantization, quantized):
    assert is_quantized(SimpleNamespace(quantization_config=quantization)) is quantized


def test_merging_into_a_quantized_base_is_refused(base_dir, adapter_dir, tmp_path):
    config = SimpleNamespace(quantization_config={"load_in_4bit": True, "quant_method": "bitsandbytes"})
    with pytest.raises(ModelError, match="quantized.*full-precision base"):
        refuse_quantized(config, "base")

    quantized_dir = tmp_path / "qbase"
    quantized_dir.mkdir()
    settings = json.loads((base_dir / "config.json").read_text())
    settings["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (quantized_dir / "config.json").write_text(json.dumps(settings))
    with pytest.raises(ModelError, match=r"qbase: the base model is quantized \(bitsandbytes\)"):
        merge_adapter_dir(quantized_dir, adapter_dir, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
