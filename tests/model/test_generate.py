import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

import tunelab.eval.heldout as heldout
from tunelab.data.tokenize import prompt_ids_for_generation
from tunelab.errors import DataError, TunelabError
from tunelab.eval.heldout import evaluate_model
from tunelab.model.generate import generate_batch, stop_token_ids

QUESTIONS = ["hello", "Please send two red shirts", "What is the capital of France?", "谢谢", "size M to Alice"]


pytestmark = pytest.mark.usefixtures("one_thread")


def _load(model_dir):
    """The tiny model with larger random weights, so greedy outputs vary from token to token and prompt to prompt."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    torch.manual_seed(1)
    with torch.no_grad():
        for weight in model.parameters():
            if weight.ndim == 2:
                weight.normal_(0, 0.3)
    return model, AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture
def model_and_tokenizer(tiny_model_dir):
    return _load(tiny_model_dir)


def _record(index: int, question: str, answer: str = '{"a": 1}', category: str | None = None) -> dict:
    record = {
        "id": f"r{index}",
        "messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}],
    }
    if category:
        record["category"] = category
    return record


def _prompts(tokenizer):
    return [
        prompt_ids_for_generation(tokenizer, [{"role": "user", "content": (q + " ") * (i + 1)}])
        for i, q in enumerate(QUESTIONS * 2)
    ]


def test_batched_results_equal_single_results(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    prompts = _prompts(tokenizer)
    assert len({len(p) for p in prompts}) > 3  # batches really are padded
    batched = generate_batch(model, tokenizer, prompts, max_new_tokens=12, batch_size=4)
    single = [generate_batch(model, tokenizer, [p], max_new_tokens=12)[0] for p in prompts]
    assert batched == single
    assert len({r["text"] for r in batched}) > 5  # outputs are diverse, so the comparison means something


def test_the_cpu_decode_loop_gives_transformers_generate_answers(model_and_tokenizer):
    """On a CPU generate_batch decodes with model/decode.py's loop (weights packed for several rows); greedy answers
    are transformers' `generate` ones, token for token, for the model and for a LoRA adapter on it."""
    from peft import LoraConfig, get_peft_model

    from tunelab.model import generate as generation

    model, tokenizer = model_and_tokenizer
    prompts = _prompts(tokenizer)
    config = generation.greedy_config(model, tokenizer, 12)

    def same_as_generate(candidate) -> None:
        assert generation._decoding(candidate)[0] is generation._decode_one_batch
        with torch.inference_mode():
            expected = generation._generate_one_batch(candidate, tokenizer, prompts, config, set(config.eos_token_id))
        assert generate_batch(candidate, tokenizer, prompts, max_new_tokens=12, batch_size=len(prompts)) == expected

    same_as_generate(model.eval())
    torch.manual_seed(2)
    adapted = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    same_as_generate(adapted.eval())
    assert not any("packed_weight" in m.__dict__ for m in adapted.modules())  # packing is undone after


def test_temperature_samples_reproducibly_and_differs_from_greedy(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    prompts = _prompts(tokenizer)
    greedy = generate_batch(model, tokenizer, prompts, max_new_tokens=10, batch_size=4)

    def sampled(seed):
        torch.manual_seed(seed)
        return generate_batch(model, tokenizer, prompts, max_new_tokens=10, batch_size=4, temperature=1.0)

    first = sampled(0)
    assert first == sampled(0)  # seeded: the same samples
    assert sum(a["text"] != b["text"] for a, b in zip(first, greedy, strict=True)) > len(prompts) // 2
    assert sum(a["text"] != b["text"] for a, b in zip(first, sampled(1), strict=True)) > len(prompts) // 2


def test_order_is_restored_and_callback_sees_every_prompt(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    prompts = _prompts(tokenizer)[::-1]  # longest first: sorting must reorder them
    seen = []
    results = generate_batch(model, tokenizer, prompts, 6, batch_size=3, on_batch=lambda i, r: seen.append((i, r)))
    assert sorted(i for indices, _ in seen for i in indices) == list(range(len(prompts)))
    assert [len(prompts[indices[0]]) for indices, _ in seen] == sorted(len(prompts[ix[0]]) for ix, _ in seen)
    for indices, batch in seen:
        assert [results[i] for i in indices] == batch


def test_finish_reason_length_then_stop(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    prompt = _prompts(tokenizer)[1]
    was_training = model.train().training
    result = generate_batch(model, tokenizer, [prompt], max_new_tokens=8)[0]
    assert result["finish_reason"] == "length" and result["completion_tokens"] == 8
    assert model.training == was_training  # eval mode only inside generation
    with torch.no_grad():
        raw = model.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False)[0, len(prompt) :].tolist()
    cut = next(i for i in range(1, len(raw)) if raw[i] not in raw[:i])
    model.generation_config.eos_token_id = [raw[cut]]  # make that token an end-of-turn marker
    stopped = generate_batch(model, tokenizer, [prompt], max_new_tokens=8)[0]
    assert stopped == {
        "text": tokenizer.decode(raw[:cut], skip_special_tokens=True),
        "finish_reason": "stop",
        "completion_tokens": cut + 1,
    }


def test_stop_ids_include_generation_config_tokenizer_eos_and_end_of_turn(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    model.generation_config.eos_token_id = [5, 7]
    ids = stop_token_ids(model, tokenizer)
    assert {5, 7, tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")} <= set(ids)


def test_evaluate_model_writes_predictions_and_metrics(model_and_tokenizer, tmp_path):
    model, tokenizer = model_and_tokenizer
    records = [_record(i, q, category="orders" if i % 2 else "qa") for i, q in enumerate(QUESTIONS)]
    out = tmp_path / "eval" / "predictions.jsonl"
    result = evaluate_model(model, tokenizer, records, out, ["json_validity", "exact_match"], max_new_tokens=6)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [row["id"] for row in rows] == [r["id"] for r in records]
    assert rows[1]["prompt"] == QUESTIONS[1] and rows[1]["reference"] == '{"a": 1}' and rows[1]["category"] == "orders"
    assert set(rows[0]) >= {"id", "category", "prompt", "reference", "prediction", "finish_reason", "scores"}
    assert result["count"] == 5 and result["generated"] == 5 and result["reused"] == 0
    assert result["metrics"] == {"exact_match": 0.0, "json_validity": 0.0}  # random weights do not answer in JSON
    assert set(result["by_category"]) == {"orders", "qa"} and result["by_category"]["qa"]["count"] == 3


def test_rerun_after_interruption_regenerates_only_missing(model_and_tokenizer, tmp_path, monkeypatch):
    model, tokenizer = model_and_tokenizer
    records = [_record(i, q) for i, q in enumerate(QUESTIONS)]
    out = tmp_path / "predictions.jsonl"
    evaluate_model(model, tokenizer, records, out, ["exact_match"], max_new_tokens=6, batch_size=2)
    complete = out.read_text(encoding="utf-8")
    out.write_text(complete[: complete.rstrip("\n").rfind("\n") + 1 + 10], encoding="utf-8")  # last line cut short

    generated = []
    real = heldout.generate_batch

    def counting(model, tokenizer, prompts, *args, **kwargs):
        generated.extend(prompts)
        return real(model, tokenizer, prompts, *args, **kwargs)

    monkeypatch.setattr(heldout, "generate_batch", counting)
    result = evaluate_model(model, tokenizer, records, out, ["exact_match"], max_new_tokens=6, batch_size=2)
    assert len(generated) == 1 and result["generated"] == 1 and result["reused"] == 4
    assert out.read_text(encoding="utf-8") == complete  # greedy and deterministic: same file as the first run

    records[0]["messages"][-1]["content"] = "a changed reference"
    result = evaluate_model(model, tokenizer, records, out, ["exact_match"], max_new_tokens=6)
    assert len(generated) == 2 and result["reused"] == 4  # a stale line is regenerated, not reused


def test_scores_follow_predictions(tiny_model_dir, tmp_path, monkeypatch):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    answers = ['{"a": 1, "b": 2}', '{"a": 1, "b": "2"}', "no json"]
    records = [_record(i, q, answer='{"a": 1, "b": 2}') for i, q in enumerate(QUESTIONS[:3])]

    def fake_generate(model, tokenizer, prompts, max_new_tokens, batch_size=16, on_batch=None):
        results = [{"text": answers[i], "finish_reason": "stop", "completion_tokens": 3} for i in range(len(prompts))]
        on_batch(list(range(len(prompts))), results)
        return results

    monkeypatch.setattr(heldout, "generate_batch", fake_generate)
    result = evaluate_model(None, tokenizer, records, tmp_path / "p.jsonl", ["json_validity", "field_accuracy"])
    assert result["metrics"] == {"json_validity": pytest.approx(2 / 3), "field_accuracy": pytest.approx(3 / 6)}
    assert result["by_category"] == {} and result["truncated"] == 0


def test_empty_test_set_and_bad_records_are_user_errors(model_and_tokenizer, tmp_path):
    model, tokenizer = model_and_tokenizer
    with pytest.raises(TunelabError, match="test set is empty"):
        evaluate_model(model, tokenizer, [], tmp_path / "p.jsonl", ["exact_match"])
    no_reference = {"id": "x", "messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(DataError, match="test record x: the last message must be the assistant"):
        evaluate_model(model, tokenizer, [no_reference], tmp_path / "p.jsonl", ["exact_match"])
    with pytest.raises(DataError, match="appears more than once"):
        evaluate_model(model, tokenizer, [_record(1, "a"), _record(1, "b")], tmp_path / "p.jsonl", ["exact_match"])
    assert not (tmp_path / "p.jsonl").exists()


@pytest.mark.parametrize("method", ["prompt", "prefix"])
def test_virtual_token_adapters_generate_through_peft(tiny_model_dir, method):
    """Prefix and prompt tuning put their virtual tokens in front: generate_batch decodes a batch of prompts from the
    adapter's prefix cache (model/virtual_prefix.py), and each answer is what PEFT's generate gives that prompt alone
    (PEFT's own batched generate drops the position ids, so left padding would shift a shorter prompt's positions)."""
    from peft import PrefixTuningConfig, PromptTuningConfig, get_peft_model

    from tunelab.model import generate as generation

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    torch.manual_seed(3)
    config = {"prompt": PromptTuningConfig, "prefix": PrefixTuningConfig}[method]
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           config(task_type="CAUSAL_LM", num_virtual_tokens=4)).eval()  # fmt: skip
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:
                parameter.normal_(0, 2.0)  # virtual tokens that change the answers
    prompts = _prompts(tokenizer)[:3]
    assert generation._decoding(model)[0] is generation._decode_one_batch  # the loop, from the prefix cache
    answers = generate_batch(model, tokenizer, prompts, max_new_tokens=8, batch_size=3)
    with torch.inference_mode():
        for prompt, answer in zip(prompts, answers, strict=True):
            ids = torch.tensor([prompt])
            out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8,
                                 do_sample=False, eos_token_id=generation.stop_token_ids(model, tokenizer))  # fmt: skip
            expected = generation._completion(out[0, ids.shape[1] :].tolist(),
                                              set(generation.stop_token_ids(model, tokenizer)), tokenizer)  # fmt: skip
            assert answer == expected
