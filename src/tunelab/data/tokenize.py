"""Canonical records → token ids and loss labels, using the tokenizer's own chat template.

The template is never re-implemented here: the text comes from `apply_chat_template`, and each assistant turn's
character span is found by rendering prefixes of the conversation. Tokens inside those spans (the reply and its
end-of-turn marker) are trained; everything else is labelled -100. The ids are checked against
`apply_chat_template(tokenize=True)`, so training sees exactly what the model sees at inference.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from tunelab.errors import DataError, ModelError, TunelabError

IGNORE_INDEX = -100
ROLES = ("system", "user", "assistant", "tool")
TOOLS_PREAMBLE = "You can call these tools: "
_FALLBACK_START = "<|im_start|>"
_FALLBACK_END = "<|im_end|>"


def chatml_template(end_of_turn: str) -> str:
    """The one fallback template (ChatML) for tokenizers without a chat template."""
    return (
        "{% for message in messages %}"
        "{{ '" + _FALLBACK_START + "' + message['role'] + '\\n' + message['content'] + '" + end_of_turn + "\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '" + _FALLBACK_START + "assistant\\n' }}{% endif %}"
    )


def ensure_chat_template(tokenizer) -> bool:
    """Give `tokenizer` a chat template and a pad token if it lacks them; return True when the fallback was set.

    The end-of-turn marker is `<|im_end|>` when the vocabulary has it (it then becomes the eos token, so generation
    stops at the end of a reply), otherwise the tokenizer's own eos text.
    """
    applied = False
    if not tokenizer.chat_template:
        end_of_turn = _fallback_end_of_turn(tokenizer)
        if tokenizer.eos_token != end_of_turn:
            if tokenizer.pad_token is None and tokenizer.eos_token is not None:
                tokenizer.pad_token = tokenizer.eos_token
            tokenizer.eos_token = end_of_turn
        tokenizer.chat_template = chatml_template(end_of_turn)
        applied = True
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return applied


def _fallback_end_of_turn(tokenizer) -> str:
    if _FALLBACK_END in tokenizer.get_vocab():
        return _FALLBACK_END
    if tokenizer.eos_token:
        return tokenizer.eos_token
    raise ModelError(
        f"tokenizer {_model_name(tokenizer)} has no chat template, no {_FALLBACK_END} token and no eos token, "
        "so tunelab cannot mark where a reply ends\n  fix: use a model whose tokenizer defines an eos token "
        "or a chat template (tokenizer_config.json: chat_template)"
    )


def _model_name(tokenizer) -> str:
    return repr(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)


def encode_conversation(tokenizer, messages: list[dict], tools: Any = None) -> tuple[list[int], list[int]]:
    """Token ids of the whole conversation and labels that train on every assistant turn (reply + end marker)."""
    _check_messages(messages)
    messages, template_kwargs = _with_tools(tokenizer, messages, tools)
    text = _render(tokenizer, messages, False, template_kwargs)
    spans = _assistant_spans(tokenizer, messages, text, template_kwargs)
    input_ids, offsets = _tokenize_with_offsets(tokenizer, text)
    expected = _as_ids(_call_template(tokenizer, messages, False, template_kwargs, tokenize=True))
    if input_ids != expected:
        raise ModelError(
            f"the chat template of {_model_name(tokenizer)} gives different token ids when its text is tokenized "
            "again, so tunelab cannot place the loss mask\n  fix: report this model; a template that adds tokens "
            "outside its text is not supported"
        )
    # A token is trained when it starts inside a reply span: a token straddling the header is left out, one that
    # straddles the end marker is kept, so the end-of-turn token is always learnt.
    labels = [
        token if any(start <= begin < end for start, end in spans) else IGNORE_INDEX
        for token, (begin, _) in zip(input_ids, offsets, strict=True)
    ]
    return input_ids, labels


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise DataError("messages", "expected a non-empty list of messages", "give each record a 'messages' list")
    for index, message in enumerate(messages):
        if not isinstance(message, Mapping) or message.get("role") not in ROLES:
            role = message.get("role") if isinstance(message, Mapping) else None
            raise DataError(f"message {index}", f"role is {role!r}", f"use one of {', '.join(ROLES)}")
        if not isinstance(message.get("content"), str):
            raise DataError(f"message {index}", "content is not text", "make 'content' a string")
    if messages[0]["role"] == "assistant":
        raise DataError("message 0", "the conversation starts with an assistant turn", "add the user message first")


def _with_tools(tokenizer, messages: list[dict], tools: Any) -> tuple[list[dict], dict]:
    """Pass tools to a template that knows them; otherwise describe them at the top of the system message."""
    tool_list = _parse_tools(tools)
    if not tool_list:
        return messages, {}
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else str(tokenizer.chat_template)
    if "tools" in template:
        return messages, {"tools": tool_list}
    preamble = TOOLS_PREAMBLE + json.dumps(tool_list, ensure_ascii=False)
    if messages[0]["role"] == "system":
        system = {**messages[0], "content": preamble + "\n\n" + messages[0]["content"]}
        return [system, *messages[1:]], {}
    return [{"role": "system", "content": preamble}, *messages], {}


def _parse_tools(tools: Any) -> list:
    if tools is None or tools == "":
        return []
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError as error:
            raise DataError("tools", f"not valid JSON ({error})", "store tools as a JSON list of schemas") from None
    if isinstance(tools, Mapping):
        tools = [tools]
    if not isinstance(tools, list):
        raise DataError("tools", f"expected a JSON list, got {type(tools).__name__}", "store tools as a JSON list")
    return tools


def _call_template(tokenizer, messages: list[dict], generation_prompt: bool, kwargs: dict, tokenize: bool = False):
    if not tokenizer.chat_template:
        raise ModelError(
            f"tokenizer {_model_name(tokenizer)} has no chat template\n"
            "  fix: call tunelab.data.tokenize.ensure_chat_template(tokenizer) after loading the model"
        )
    try:
        return tokenizer.apply_chat_template(
            messages, add_generation_prompt=generation_prompt, tokenize=tokenize, return_dict=False, **kwargs
        )
    except TunelabError:
        raise
    except Exception as error:  # jinja raise_exception() and template bugs: the message is the template's own
        raise DataError(
            "conversation",
            f"the chat template of {_model_name(tokenizer)} rejected it: {error}",
            "reorder or merge messages into the shape the model's template accepts (often user/assistant alternating)",
        ) from None


def _render(tokenizer, messages: list[dict], generation_prompt: bool, kwargs: dict) -> str:
    return _call_template(tokenizer, messages, generation_prompt, kwargs)


def _as_ids(result: Any) -> list[int]:
    """apply_chat_template(tokenize=True) returns a list, a nested list or a BatchEncoding depending on version."""
    if isinstance(result, Mapping) or hasattr(result, "keys"):
        result = result["input_ids"]
    if hasattr(result, "tolist"):
        result = result.tolist()
    if result and isinstance(result[0], Sequence):
        result = result[0]
    return [int(token) for token in result]


def _assistant_spans(tokenizer, messages: list[dict], text: str, kwargs: dict) -> list[tuple[int, int]]:
    """Character spans of each assistant reply plus its end-of-turn marker, without the header or trailing space."""
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = _render(tokenizer, messages[:index], True, kwargs)
        turn = _render(tokenizer, messages[: index + 1], False, kwargs)
        end = len(prompt) + len(turn[len(prompt) :].rstrip())
        if not turn.startswith(prompt) or not text.startswith(turn[:end]):
            raise ModelError(
                f"the chat template of {_model_name(tokenizer)} is not prefix-consistent at message {index}: the "
                "conversation rendered up to a reply does not continue the same text, so the reply cannot be "
                "located\n  fix: use a template that renders earlier turns the same way whatever follows them "
                "(e.g. set tokenizer.chat_template to a ChatML template)"
            )
        spans.append((len(prompt), end))
    return spans


def _tokenize_with_offsets(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Python (slow) tokenizers raise or silently omit offsets; both become one actionable error."""
    try:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    except NotImplementedError:
        encoded = {}
    if "offset_mapping" not in encoded:
        raise ModelError(
            f"tokenizer {_model_name(tokenizer)} cannot report character offsets, which the loss mask needs\n"
            "  fix: load the model's fast tokenizer (tokenizer.json), e.g. AutoTokenizer.from_pretrained(..., "
            "use_fast=True)"
        )
    return list(encoded["input_ids"]), [tuple(pair) for pair in encoded["offset_mapping"]]


def tokenize_examples(records: list[dict], tokenizer, max_length: int) -> tuple[list[dict], dict]:
    """Encode canonical records, keep the first `max_length` tokens, drop rows left with nothing to train on."""
    rows, lengths, truncated, dropped = [], [], [], []
    for position, record in enumerate(records):
        record_id = str(record.get("id", position)) if isinstance(record, Mapping) else str(position)
        input_ids, labels = _encode_record(tokenizer, record, record_id)
        lengths.append(len(input_ids))
        if len(input_ids) > max_length:
            truncated.append(record_id)
            input_ids, labels = input_ids[:max_length], labels[:max_length]
        if all(label == IGNORE_INDEX for label in labels):
            dropped.append(record_id)
            continue
        rows.append({"id": record_id, "input_ids": input_ids, "labels": labels})
    return rows, _stats(rows, lengths, truncated, dropped, max_length)


def _encode_record(tokenizer, record: Any, record_id: str) -> tuple[list[int], list[int]]:
    where = f"record {record_id}"
    if not isinstance(record, Mapping) or "messages" not in record:
        raise DataError(where, "has no 'messages' field", "convert the data to canonical records first")
    try:
        return encode_conversation(tokenizer, record["messages"], record.get("tools"))
    except DataError as error:
        raise DataError(f"{where} {error.where}", error.problem, error.fix) from None
    except ModelError as error:
        raise ModelError(f"{where}: {error}") from None


def _stats(rows: list[dict], lengths: list[int], truncated: list[str], dropped: list[str], max_length: int) -> dict:
    kept = [len(row["input_ids"]) for row in rows]
    return {
        "total": len(lengths),
        "kept": len(rows),
        "max_length": max_length,
        "truncated": len(truncated),
        "truncated_ids": truncated,
        "dropped_no_target": len(dropped),
        "dropped_no_target_ids": dropped,
        "length_min": min(kept, default=0),
        "length_median": statistics.median(kept) if kept else 0,
        "length_max": max(kept, default=0),
        "length_max_before_truncation": max(lengths, default=0),
        "trainable_tokens": sum(sum(label != IGNORE_INDEX for label in row["labels"]) for row in rows),
    }


def preview_spans(tokenizer, input_ids: list[int], labels: list[int]) -> list[tuple[str, bool]]:
    """Decoded runs of consecutive tokens, each with whether it is trained."""
    spans: list[tuple[list[int], bool]] = []
    for token, label in zip(input_ids, labels, strict=True):
        trained = label != IGNORE_INDEX
        if spans and spans[-1][1] == trained:
            spans[-1][0].append(token)
        else:
            spans.append(([token], trained))
    return [(tokenizer.decode(ids, skip_special_tokens=False), trained) for ids, trained in spans]


def render_preview(tokenizer, input_ids: list[int], labels: list[int]) -> str:
    """One decoded example with trained spans wrapped in [[ ]], for logs and plain terminals."""
    return "".join(f"[[{text}]]" if trained else text for text, trained in preview_spans(tokenizer, input_ids, labels))


def render_preview_rich(tokenizer, input_ids: list[int], labels: list[int]):
    """The same preview as a `rich.text.Text`: trained spans bold green, the rest dim."""
    from rich.text import Text

    text = Text()
    for piece, trained in preview_spans(tokenizer, input_ids, labels):
        text.append(piece, style="bold green" if trained else "dim")
    return text


def prompt_ids_for_generation(tokenizer, messages: list[dict], tools: Any = None) -> list[int]:
    """Prompt token ids for generation: the conversation without a final assistant reply, plus the reply header.

    Uses the same template and tool handling as training, so evaluation and chat prompt the model the way it learnt.
    """
    if messages and isinstance(messages[-1], Mapping) and messages[-1].get("role") == "assistant":
        messages = messages[:-1]
    _check_messages(messages)
    messages, template_kwargs = _with_tools(tokenizer, messages, tools)
    return _as_ids(_call_template(tokenizer, messages, True, template_kwargs, tokenize=True))
