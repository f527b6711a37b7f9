"""The fused decoder computes what transformers' modules compute: prefill with left padding, decoding steps, drafts
checked several at a time, Qwen2's biases, and each row's own stacked adapter as PEFT's mixed batches give it."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache

from helpers import two_lora_adapters
from tunelab.model import fast_linear, fused_decoder

pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.skipif(not fast_linear.available(), reason="this PyTorch has no oneDNN"),
]


def _left_padded(lengths: list[int], vocab: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(lengths)
    ids = torch.randint(5, vocab, (len(lengths), width))
    mask = torch.tensor([[0] * (width - n) + [1] * n for n in lengths])
    return ids * mask, mask, (mask.cumsum(-1) - 1).clamp(min=0)


def _both(model, decoder, lengths, steps: int = 3, draft: int = 1, **model_kwargs):
    """Max |difference| of the logits from the model and from the decoder over a prefill and `steps` passes of
    `draft` tokens each; the model's own tokens are fed to both."""
    torch.manual_seed(0)
    ids, mask, positions = _left_padded(lengths, model.config.vocab_size)
    caches, worst = (DynamicCache(), DynamicCache()), 0.0
    with torch.inference_mode():
        for _ in range(steps + 1):
            keep = ids.shape[1] if ids.shape[1] == draft else 1
            inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
            expected = model(**inputs, past_key_values=caches[0], logits_to_keep=keep, **model_kwargs).logits
            got = decoder.forward(ids, mask, positions, caches[1], keep=keep)
            worst = max(worst, (got - expected).abs().max().item())
            ids = torch.randint(5, model.config.vocab_size, (len(lengths), draft))
            ids[:, 0] = expected[:, -1].argmax(-1)
            mask = torch.cat([mask, torch.ones(len(lengths), draft, dtype=mask.dtype)], dim=1)
            positions = positions[:, -1:] + torch.arange(1, draft + 1)
    return worst


@pytest.fixture
def model(tiny_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()


def test_the_tiny_llama_is_supported_and_decodes_as_its_modules(model):
    assert fused_decoder.supports(model)
    decoder = fused_decoder.FusedDecoder(model)
    assert _both(model, decoder, [7, 3, 5]) < 1e-5  # padded rows
    assert _both(model, decoder, [6]) < 1e-5  # one row, no mask at all
    assert _both(model, decoder, [6, 4], draft=4) < 1e-5  # several new tokens on a cache: the causal mask


def test_the_cache_grows_in_place_and_survives_rows_leaving_and_crops(model):
    """The decoder writes new positions into spare room of its cache buffers; the engine's cache surgery (rows
    leaving, a crop after rejected drafts) replaces the layer's tensors, and decoding goes on exactly."""
    decoder = fused_decoder.FusedDecoder(model)
    torch.manual_seed(1)
    ids, mask, positions = _left_padded([5, 8, 6], model.config.vocab_size)
    caches = (DynamicCache(), DynamicCache())
    with torch.inference_mode():
        for step in range(6):
            expected = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=caches[0],
                             logits_to_keep=1).logits  # fmt: skip
            got = decoder.forward(ids, mask, positions, caches[1])
            assert (got - expected).abs().max() < 1e-5, step
            if step == 1:
                buffer = caches[1].layers[0].tunelab_buffers[0]
            if step == 2:  # the in-place steps wrote into the same buffer
                assert caches[1].layers[0].tunelab_buffers[0] is buffer
                assert caches[1].layers[0].keys.data_ptr() == buffer.data_ptr()
            if step == 3:  # the middle row leaves
                for cache in caches:
                    cache.batch_select_indices(torch.tensor([0, 2]))
                mask, positions, expected = mask[[0, 2]], positions[[0, 2]], expected[[0, 2]]
            if step == 4:  # the last position is taken back, as after a rejected draft
                for cache in caches:
                    cache.crop(-1)
                mask, positions = mask[:, :-1], positions - 1
            ids = expected[:, -1].argmax(-1, keepdim=True)
            mask = torch.cat([mask, torch.ones(len(ids), 1, dtype=mask.dtype)], dim=1)
            positions = positions[:, -1:] + 1
    assert caches[1].get_seq_length() == caches[0].get_seq_length()


def test_qwen2_biases_are_in_the_fused_product():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)  # fmt: skip
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear) and module.bias is not None:
                module.bias.normal_(0, 0.5)
    assert model.model.layers[0].self_attn.q_proj.bias is not None and fused_decoder.supports(model)
    assert _both(model, fused_decoder.FusedDecoder(model), [5, 8]) < 1e-5


def test_what_it_cannot_compute_is_left_to_the_modules(model):
    from transformers import GPT2Config, GPT2LMHeadModel

    assert not fused_decoder.supports(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=50)))
    model.config.sliding_window, model.config.use_sliding_window = 16, True
    assert not fused_decoder.supports(model)
    model.config.sliding_window = None
    assert fused_decoder.supports(model)
    assert not fused_decoder.supports(model.to(torch.bfloat16))


def test_a_prompt_tuning_adapter_is_left_to_peft(model):
    from peft import PromptTuningConfig, get_peft_model

    from tunelab.model.decode import FUSED, packed_weights

    peft = get_peft_model(model, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)).eval()
    assert not fused_decoder.supports(peft) and not fused_decoder.supports(peft, merged=True)
    with packed_weights(peft):
        assert FUSED not in peft.__dict__


def test_stacked_adapters_give_each_row_its_own_as_peft_does(tiny_model_dir, tmp_path):
    from tunelab.serve import multi_lora

    model = two_lora_adapters(tiny_model_dir, tmp_path, second_targets=("q_proj", "v_proj", "down_proj"))
    names = ["a", "__base__", "b", "a"]
    stacked = multi_lora.StackedLora(model, ["a", "b"], hooks=False)
    stacked.use_rows(names)
    decoder = fused_decoder.FusedDecoder(model, stacked)
    assert fused_decoder.supports(model) and not stacked.handles
    assert _both(model, decoder, [6, 9, 4, 7], adapter_names=names) < 1e-5
    stacked.use_rows(["__base__"] * 4)  # no row with an adapter: the base model
    with model.disable_adapter():
        assert _both(model, decoder, [6, 9, 4, 7]) < 1e-5


@pytest.mark.parametrize("extra", [{"use_dora": True}, {"lora_bias": True}])
def test_adapters_that_cannot_be_added_into_a_weight_are_not_merged(model, extra):
    from peft import LoraConfig, get_peft_model

    peft = get_peft_model(model, LoraConfig(r=4, target_modules=["q_proj"], **extra)).eval()
    assert fused_decoder.supports(peft) and not fused_decoder.supports(peft, merged=True)
    plain = get_peft_model(AutoModelForCausalLM.from_pretrained(model.name_or_path), LoraConfig(r=4)).eval()
    assert fused_decoder.supports(plain, merged=True)
