"""The GPU side of `tunelab estimate`: FLOPs, memory per method, the table, and one published measurement."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tunelab.errors import TunelabError
from tunelab.train.costs import GIB, gpu_footprint, gpu_rows, method_family, steps_for, what_would_fit
from tunelab.train.gpus import GPUS, gpu_table

# MosaicML llm-foundry, scripts/train/benchmarking/README.md, table "H100 80GB BF16": MPT-7B (6,658,859,008
# parameters, 32 layers, d_model 4096), sequence length 2048, 8 GPUs, micro-batch 6, no activation checkpointing:
# 10,643 tokens/s per GPU (MFU 46.44%).
MPT_7B = SimpleNamespace(num_hidden_layers=32, hidden_size=4096, vocab_size=50432)
MPT_7B_PARAMETERS = 6_658_859_008
PUBLISHED_TOKENS_PER_SECOND = 10_643


def _workload(sequences: int, length: int, micro: int) -> dict:
    tokens = sequences * length
    return {"tokens": tokens, "sequences": sequences, "micro_batch": micro, "max_length": length,
            "trained_tokens": tokens}  # fmt: skip


def test_full_training_throughput_on_h100_is_within_30_percent_of_llm_foundry():
    counts = {"total": MPT_7B_PARAMETERS, "trainable": MPT_7B_PARAMETERS}
    result = gpu_rows(MPT_7B, counts, "full", _workload(10_000, 2048, 6), gpu_table(), ["h100"])
    predicted = result["rows"][0]["tokens_per_second"]
    assert result["mfu"] == 0.40  # the stated assumption, not fitted to this figure
    assert abs(predicted / PUBLISHED_TOKENS_PER_SECOND - 1) < 0.30, predicted


def test_lora_needs_a_third_less_compute_and_far_less_memory_than_full():
    full = {"total": MPT_7B_PARAMETERS, "trainable": MPT_7B_PARAMETERS}
    lora = {"total": MPT_7B_PARAMETERS, "trainable": 20_000_000}
    work = _workload(1000, 512, 4)
    a = gpu_rows(MPT_7B, full, "full", work, gpu_table(), ["a100-80gb"], mfu=0.4)
    b = gpu_rows(MPT_7B, lora, "lora", work, gpu_table(), ["a100-80gb"], mfu=0.4)
    assert b["flops_per_token"] / a["flops_per_token"] == pytest.approx(2 / 3, rel=0.05)
    assert a["rows"][0]["memory_needed_gib"] > 100 > 30 > b["rows"][0]["memory_needed_gib"]


def test_memory_of_a_7b_full_fine_tune_is_about_16_bytes_a_parameter():
    footprint = gpu_footprint(MPT_7B, MPT_7B_PARAMETERS, MPT_7B_PARAMETERS, "full", 2048)
    states = footprint.weights + footprint.gradients + footprint.optimizer
    assert states / MPT_7B_PARAMETERS == 16
    assert footprint.activations_checkpointed < footprint.activations
    qlora = gpu_footprint(MPT_7B, MPT_7B_PARAMETERS, 20_000_000, "qlora", 2048)
    assert qlora.weights < 4.5 * GIB


def test_configurations_that_do_not_fit_say_what_would():
    full = {"total": MPT_7B_PARAMETERS, "trainable": MPT_7B_PARAMETERS}
    result = gpu_rows(MPT_7B, full, "full", _workload(100, 1024, 4), gpu_table(), ["l4", "h200"])
    fits = {row["gpu"]: row["fits"] for row in result["rows"]}
    assert fits["l4"] == "no" and fits["h200"] != "no"
    advice = what_would_fit(result["rows"], "full")
    assert any("l4" in line and "qlora" in line for line in advice) and any("h200" in line for line in advice)


def test_method_families_and_steps():
    assert method_family("lora", quantized=True) == "qlora" and method_family("prefix", False) == "other"
    assert steps_for(608, 8, 1, 1.0, None) == 76 and steps_for(608, 8, 2, 1.5, None) == 57
    assert steps_for(608, 8, 1, 3.0, 10) == 10


def test_the_table_is_dated_and_prices_can_be_overridden(tmp_path):
    assert all({"memory_gib", "bf16_tflops", "hourly_usd"} <= set(entry) for entry in GPUS.values())
    prices = tmp_path / "prices.yaml"
    prices.write_text("h100: {hourly_usd: 2.1}\nmy-a6000: {memory_gib: 48, bf16_tflops: 155, hourly_usd: 0.8}\n")
    table = gpu_table(prices)
    assert table["h100"]["hourly_usd"] == 2.1 and table["h100"]["price_source"] == str(prices)
    assert table["my-a6000"]["memory_gib"] == 48 and "2026" in table["l4"]["price_source"]


@pytest.mark.parametrize(
    ("text", "named"),
    [("h100: 2.1\n", "give numbers"), ("new-gpu: {hourly_usd: 1}\n", "memory_gib and bf16_tflops"),
     ("h100: {price: 1}\n", "unknown keys"), ("[1, 2\n", "cannot read"), ("- a\n", "mapping")],
)  # fmt: skip
def test_a_bad_prices_file_is_named(tmp_path, text, named):
    prices = tmp_path / "prices.yaml"
    prices.write_text(text)
    with pytest.raises(TunelabError, match=named):
        gpu_table(prices)
