"""Pure converters from the row formats people already have to tunelab's canonical record.

The canonical record is TRL's conversational format, `{"messages": [{"role": ..., "content": ...}, ...]}`, plus
optional "tools" (JSON text of the tool schemas), "category" and "id" when the row has them. `load.py` adds "source"
and the default "id"; nothing here does I/O. Preference data (pairs, KTO) is `preference.py`'s, built on these.

`columns` and `tags` mean what they mean in LLaMA-Factory's dataset_info.json: `columns` renames the fields of a row,
`tags` renames the keys and role names inside a conversation, so a registry entry converts the same way it does there.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from tunelab.errors import DataError

FORMATS = ("alpaca", "sharegpt", "openai")
ROLES = ("system", "user", "assistant", "tool")

ALPACA_JOIN = "\n\n"
"""Between an Alpaca instruction and its input. (LLaMA-Factory joins them with a single newline.)"""

OPENAI_PART_JOIN = "\n"
"""Between the text parts of one OpenAI message, as vLLM joins them for text-only chat templates."""

DEFAULT_COLUMNS: dict[str, dict[str, str]] = {
    "alpaca": {
        "prompt": "instruction",
        "query": "input",
        "response": "output",
        "history": "history",
        "system": "system",
        "tools": "tools",
    },
    "sharegpt": {"messages": "conversations", "system": "system", "tools": "tools"},
    "openai": {"messages": "messages", "system": "system", "tools": "tools"},
}
DEFAULT_TAGS = {
    "sharegpt": {"role_tag": "from", "content_tag": "value"},
    "openai": {"role_tag": "role", "content_tag": "content"},
}
TAG_ROLES = {
    "user_tag": "user",
    "assistant_tag": "assistant",
    "observation_tag": "tool",
    "function_tag": "assistant",
    "system_tag": "system",
}
TAG_KEYS = ("role_tag", "content_tag", *TAG_ROLES)
ROLE_NAMES = {
    "sharegpt": {
        "human": "user",
        "user": "user",
        "gpt": "assistant",
        "assistant": "assistant",
        "model": "assistant",
        "function_call": "assistant",
        "observation": "tool",
        "tool": "tool",
        "system": "system",
    },
    "openai": {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"},
}

Names = Mapping[str, str] | None
Turn = tuple[str, str, str]  # (field it came from, canonical role, content)


def detect_format(row: Mapping[str, Any], where: str = "record") -> str:
    """Tell the format by the row's fields: messages → openai, conversations → sharegpt, instruction/output → alpaca."""
    if "messages" in row:
        return "openai"
    if "conversations" in row:
        return "sharegpt"
    if "instruction" in row or "output" in row:
        return "alpaca"
    raise DataError(
        where,
        f"cannot tell the data format from the fields {_field_list(row)}",
        fix="expected `messages` (OpenAI), `conversations` (ShareGPT) or `instruction` + `output` (Alpaca); "
        "otherwise set the format and map your field names with `columns`",
    )


def check_mapping(fmt: str, columns: Names, tags: Names, where: str) -> None:
    """Reject column or tag names that do not apply to `fmt`, before any row is converted."""
    if fmt not in FORMATS:
        raise DataError(where, f"unknown format {fmt!r}", fix=f"use one of: auto, {', '.join(FORMATS)}")
    for key, value in (columns or {}).items():
        if key not in DEFAULT_COLUMNS[fmt]:
            allowed = ", ".join(DEFAULT_COLUMNS[fmt])
            raise DataError(where, f"columns.{key} does not apply to the {fmt} format", fix=f"use: {allowed}")
        _check_name(value, f"columns.{key}", where)
    for key, value in (tags or {}).items():
        if fmt == "alpaca":
            raise DataError(where, "tags apply to conversations only", fix="set the format to sharegpt or drop tags")
        if key not in TAG_KEYS:
            raise DataError(where, f"unknown tag {key!r}", fix=f"use: {', '.join(TAG_KEYS)}")
        _check_name(value, f"tags.{key}", where)


def alpaca_to_record(row: Mapping[str, Any], where: str, columns: Names = None, tags: Names = None) -> dict:
    """instruction (+ blank line + input) → user, output → assistant; optional system and [[user, answer]] history."""
    col = {**DEFAULT_COLUMNS["alpaca"], **(columns or {})}
    turns = _system_turns(row, col["system"], where)
    turns += _history_turns(row, col["history"], where)
    parts = [_optional_text(row, col[key], where) for key in ("prompt", "query")]
    if not any(part.strip() for part in parts):
        raise DataError(_at(where, col["prompt"]), "missing or empty", fix="every record needs an instruction")
    turns.append((col["prompt"], "user", ALPACA_JOIN.join(part for part in parts if part.strip())))
    response = _text(_require(row, col["response"], where), where, col["response"])
    turns.append((col["response"], "assistant", response))
    return _record(row, turns, col, where, col["response"])


def sharegpt_to_record(row: Mapping[str, Any], where: str, columns: Names = None, tags: Names = None) -> dict:
    """`conversations` of {from, value}; function_call → assistant (the call text), observation → tool."""
    return _conversation_record(row, where, "sharegpt", columns, tags)


def openai_to_record(row: Mapping[str, Any], where: str, columns: Names = None, tags: Names = None) -> dict:
    """`messages` of {role, content}; developer → system, text parts joined, tool_calls → the call JSON."""
    return _conversation_record(row, where, "openai", columns, tags)


CONVERTERS: dict[str, Callable[..., dict]] = {
    "alpaca": alpaca_to_record,
    "sharegpt": sharegpt_to_record,
    "openai": openai_to_record,
}


# --- conversations ------------------------------------------------------------------------------------------------


def conversation_message(message: Any, where: str, name: str, fmt: str = "openai", tags: Names = None) -> dict:
    """One message object of a conversation in `fmt` ({from, value} or {role, content}) → {"role", "content"}.

    `name` is the field it sits in ("chosen", "conversations[2]"), for errors. Preference readers use it for the
    answers they keep outside the conversation.
    """
    _, role, content = _turn(message, where, name, fmt, *_tag_names(fmt, tags))
    return {"role": role, "content": content}


def _conversation_record(row: Mapping[str, Any], where: str, fmt: str, columns: Names, tags: Names) -> dict:
    col = {**DEFAULT_COLUMNS[fmt], **(columns or {})}
    tag, role_names = _tag_names(fmt, tags)
    field = col["messages"]
    turns = _system_turns(row, col["system"], where)
    for index, message in enumerate(_as_list(_require(row, field, where), where, field)):
        turns.append(_turn(message, where, f"{field}[{index}]", fmt, tag, role_names))
    return _record(row, turns, col, where, field)


def _tag_names(fmt: str, tags: Names) -> tuple[dict[str, str], dict[str, str]]:
    """The tags in force (defaults + `tags`) and the role names they map to canonical roles."""
    tag = {**DEFAULT_TAGS[fmt], **(tags or {})}
    role_names = dict(ROLE_NAMES[fmt])
    role_names.update({tag[key]: role for key, role in TAG_ROLES.items() if key in tag})
    return tag, role_names


def _turn(message: Any, where: str, name: str, fmt: str, tag: dict[str, str], role_names: dict[str, str]) -> Turn:
    if not isinstance(message, Mapping):
        raise DataError(_at(where, name), f"expected an object with a role and a text, got {_kind(message)}")
    role = _role(message, tag["role_tag"], role_names, where, name, fmt)
    if fmt == "openai":
        return name, role, _openai_content(message, role, tag["content_tag"], where, name)
    key = tag["content_tag"]
    return name, role, _text(_require(message, key, where, f"{name}.{key}"), where, f"{name}.{key}")


def _role(message: Mapping[str, Any], role_tag: str, role_names: dict, where: str, name: str, fmt: str) -> str:
    field = f"{name}.{role_tag}"
    if role_tag not in message:
        fix = f"each message needs `{role_tag}`; if yours use other keys, set tags.role_tag and tags.content_tag"
        if fmt == "sharegpt" and "role" in message:
            fix = "these messages use role/content keys: use the openai format (columns.messages names the list)"
        raise DataError(_at(where, field), "missing", fix=fix)
    value = message[role_tag]
    if not isinstance(value, str) or value not in role_names:
        allowed = ", ".join(sorted(role_names))
        raise DataError(
            _at(where, field), f"unknown role {value!r}", fix=f"use one of: {allowed} (or map it with tags)"
        )
    return role_names[value]


def _openai_content(message: Mapping[str, Any], role: str, content_tag: str, where: str, name: str) -> str:
    calls = message.get("tool_calls")
    if role == "assistant" and calls:
        return _tool_calls_text(calls, where, f"{name}.tool_calls")
    field = f"{name}.{content_tag}"
    content = _require(message, content_tag, where, field)
    if isinstance(content, list):
        return _join_text_parts(content, where, field)
    return _text(content, where, field)


def _join_text_parts(parts: list, where: str, field: str) -> str:
    texts = []
    for index, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind != "text":
            found = f"a {kind!r} part" if kind else _kind(part)
            raise DataError(
                _at(where, f"{field}[{index}]"), f"expected a text part, got {found}", fix="tunelab trains on text only"
            )
        texts.append(_text(part.get("text"), where, f"{field}[{index}].text"))
    return OPENAI_PART_JOIN.join(texts)


def _tool_calls_text(calls: Any, where: str, field: str) -> str:
    """The calls as LLaMA-Factory writes them: a JSON list of {"name", "arguments"}."""
    if not isinstance(calls, list):
        raise DataError(_at(where, field), f"expected a list of tool calls, got {_kind(calls)}")
    functions = []
    for index, call in enumerate(calls):
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            expected = 'expected {"type": "function", "function": {"name": ..., "arguments": ...}}'
            raise DataError(_at(where, f"{field}[{index}]"), expected)
        functions.append(dict(function))
    return json.dumps(functions, ensure_ascii=False)


# --- shared pieces ------------------------------------------------------------------------------------------------


def _record(row: Mapping[str, Any], turns: list[Turn], col: dict[str, str], where: str, field: str) -> dict:
    _check_order(turns, where, field)
    record: dict[str, Any] = {}
    if row.get("id") is not None and str(row["id"]).strip():
        record["id"] = str(row["id"])
    record["messages"] = [{"role": role, "content": content} for _, role, content in turns]
    tools = _tools(row.get(col["tools"]), where, col["tools"])
    if tools is not None:
        record["tools"] = tools
    if isinstance(row.get("category"), str) and row["category"].strip():
        record["category"] = row["category"]
    if isinstance(row.get("generated"), Mapping):  # marks records made by `tunelab data augment`
        record["generated"] = dict(row["generated"])
    return record


def _check_order(turns: list[Turn], where: str, field: str) -> None:
    """System only first, then a user turn, at least one assistant turn, and the assistant has the last word."""
    for index, (name, role, _) in enumerate(turns):
        if role == "system" and index > 0:
            raise DataError(
                _at(where, name),
                "a system message is allowed only as the first message",
                fix="merge it into the first system message (or drop the separate `system` field)",
            )
    body = turns[1:] if turns and turns[0][1] == "system" else turns
    if not body:
        raise DataError(_at(where, field), "the conversation has no messages")
    if body[0][1] != "user":
        first = "the first message after the system message" if len(body) < len(turns) else "the first message"
        raise DataError(_at(where, body[0][0]), f"{first} must come from the user, not the {body[0][1]}")
    if not any(role == "assistant" for _, role, _ in body):
        raise DataError(_at(where, field), "no assistant turn", fix="add the assistant's answer; SFT learns from it")
    if body[-1][1] != "assistant":
        raise DataError(
            _at(where, body[-1][0]),
            f"conversation ends with a {body[-1][1]} turn",
            fix="end with the assistant's answer, or drop the unanswered turn",
        )


def _system_turns(row: Mapping[str, Any], field: str, where: str) -> list[Turn]:
    value = row.get(field)
    if value is None or (isinstance(value, str) and not value.strip()):
        return []
    return [(field, "system", _text(value, where, field))]


def _history_turns(row: Mapping[str, Any], field: str, where: str) -> list[Turn]:
    value = row.get(field)
    if value is None or value == "":
        return []
    turns = []
    for index, pair in enumerate(_as_list(value, where, field)):
        name = f"{field}[{index}]"
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise DataError(_at(where, name), "expected a [user, assistant] pair")
        turns.append((f"{name}[0]", "user", _text(pair[0], where, f"{name}[0]")))
        turns.append((f"{name}[1]", "assistant", _text(pair[1], where, f"{name}[1]")))
    return turns


def _tools(value: Any, where: str, field: str) -> str | None:
    """Tool schemas as JSON text; empty values ("", "[]", null) mean no tools."""
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False) if value else None
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str):
        raise DataError(_at(where, field), f"expected the tool schemas as a JSON list, got {_kind(value)}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise DataError(_at(where, field), f"is not valid JSON: {exc.msg} (column {exc.colno})") from exc
    return value if parsed else None


def _as_list(value: Any, where: str, field: str) -> list:
    """A list, or JSON text of a list (CSV and some Parquet files store nested fields as text)."""
    if isinstance(value, str) and value.lstrip().startswith("["):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise DataError(_at(where, field), f"is not valid JSON: {exc.msg} (column {exc.colno})") from exc
    if not isinstance(value, (list, tuple)):
        raise DataError(_at(where, field), f"expected a list, got {_kind(value)}")
    return list(value)


def _require(row: Mapping[str, Any], key: str, where: str, field: str | None = None) -> Any:
    """row[key]; `field` is the full path to name in the error (default: the key)."""
    if key not in row:
        raise DataError(
            _at(where, field or key),
            "missing",
            fix=f"the fields present are {_field_list(row)}; map yours with `columns`",
        )
    return row[key]


def _optional_text(row: Mapping[str, Any], field: str, where: str) -> str:
    value = row.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise DataError(_at(where, field), f"expected a string, got {_kind(value)}")
    return value


def _text(value: Any, where: str, field: str) -> str:
    """Non-empty text, or an error naming the field."""
    if not isinstance(value, str):
        raise DataError(_at(where, field), f"expected a string, got {_kind(value)}")
    if not value.strip():
        raise DataError(_at(where, field), "is empty", fix="fill in the text or remove the record")
    return value


def _check_name(value: Any, key: str, where: str) -> None:
    if not isinstance(value, str) or not value:
        raise DataError(where, f"{key} must be a field name (a non-empty string), got {_kind(value)}")


def _at(where: str, field: str) -> str:
    return f'{where}, field "{field}"'


def _field_list(row: Mapping[str, Any]) -> str:
    names = list(row)
    return ", ".join(names[:12]) + (", ..." if len(names) > 12 else "") if names else "(none)"


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "true/false", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)
