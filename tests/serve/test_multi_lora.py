"""The stacked multi-adapter path computes what PEFT computes, row by row, for adapters of different ranks."""

from __future__ import annotations

import torch

from helpers import two_lora_adapters


def test_stacked_adapters_equal_peft_mixed_batches(tiny_model_dir, tmp_path):
    from tunelab.serve import multi_lora

    model = two_lora_adapters(tiny_model_dir, tmp_path)
    names = ["a", "__base__", "b", "a", "b"]
    ids = torch.randint(5, 200, (len(names), 12))
    with torch.no_grad():
        expected = model(input_ids=ids, adapter_names=names).logits
        assert multi_lora.supports(model, ["a", "b"])
        stacked = multi_lora.StackedLora(model, ["a", "b"])
        multi_lora.set_peft_lora(model, False)
        stacked.use_rows(names)
        got = model.get_base_model()(input_ids=ids).logits
        stacked.remove()
        multi_lora.set_peft_lora(model, True)
        with model.disable_adapter():
            base = model(input_ids=ids).logits
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    assert torch.allclose(got[1], base[1], atol=1e-6)  # the __base__ row gets no adapter
    for row in (0, 2, 3, 4):  # the adapters really change the output
        assert not torch.allclose(got[row], base[row], atol=1e-3)


def test_dora_is_left_to_peft(tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tunelab.serve import multi_lora

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, target_modules=["q_proj"], use_dora=True))  # fmt: skip
    assert not multi_lora.supports(model, ["default"])


def test_the_batch_path_follows_the_adapters(tiny_model_dir, tmp_path):
    """Plain LoRA on a llama: the fused decoder with stacked adapters; DoRA (which PEFT's mixed batches refuse): one
    adapter per batch, PEFT's forward on packed layers; one request at a time: PEFT with the active adapter
    switched. Each gives PEFT's own logits."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, DynamicCache

    from tunelab.model.fast_linear import packed_modules
    from tunelab.serve.batch_forward import BatchForward

    ids = torch.randint(5, 200, (2, 6))
    mask, positions = torch.ones(2, 6, dtype=torch.long), torch.arange(6).repeat(2, 1)
    for dora, mixed, path in ((False, True, "fused"), (True, True, "transformers"), (False, False, "transformers")):
        torch.manual_seed(0)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                               LoraConfig(r=4, target_modules=["q_proj", "up_proj"], use_dora=dora,
                                          init_lora_weights=False)).eval()  # fmt: skip
        with torch.no_grad():
            expected = model(input_ids=ids).logits[:, -1]
        forward = BatchForward(mixed_batches=mixed, prepack_weights=True)
        forward.rebuild(model, ["default"])
        got = forward(model, ids, mask, positions, DynamicCache(), ["default", "default"])
        assert forward.path == path and bool(packed_modules(model)) == (path != "fused"), (dora, mixed)
        assert forward.one_adapter_per_batch == (dora and mixed)
        assert torch.allclose(got, expected, atol=1e-5), (dora, mixed, (got - expected).abs().max())


def test_a_continuous_batch_drops_padding_no_row_needs():
    from transformers import DynamicCache

    from tunelab.model.kv_cache import merge_caches, trim_padding

    def cache_of(rows, length):
        cache = DynamicCache()
        for layer in range(2):
            cache.update(torch.randn(rows, 2, length, 4), torch.randn(rows, 2, length, 4), layer)
        return cache

    running, joining = cache_of(1, 3), cache_of(1, 7)
    mask = merge_caches(running, torch.ones(1, 3, dtype=torch.long), joining, torch.ones(1, 7, dtype=torch.long))
    assert mask.tolist() == [[0, 0, 0, 0, 1, 1, 1], [1] * 7] and running.layers[0].keys.shape[2] == 7
    running.batch_select_indices(torch.tensor([0]))  # the long row leaves: its columns are padding for the rest
    mask = trim_padding(running, mask[:1])
    assert mask.tolist() == [[1, 1, 1]] and all(layer.keys.shape[2] == 3 for layer in running.layers)
