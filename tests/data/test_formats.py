"""Row converters (formats.py): each format to canonical messages, and the errors that name the field."""

from __future__ import annotations

import json

import pytest

from tunelab.data.formats import (
    alpaca_to_record,
    check_mapping,
    detect_format,
    openai_to_record,
    sharegpt_to_record,
)
from tunelab.errors import DataError

WHERE = "orders.jsonl line 12"


def roles(record: dict) -> list[str]:
    return [m["role"] for m in record["messages"]]


# --- detection ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"messages": []}, "openai"),
        ({"conversations": []}, "sharegpt"),
        ({"instruction": "a", "output": "b"}, "alpaca"),
        ({"output": "b"}, "alpaca"),
    ],
)
def test_detect_format(row, expected):
    assert detect_format(row) == expected


def test_detect_format_unknown_names_the_fields():
    with pytest.raises(DataError, match=r"^orders\.jsonl line 12: cannot tell the data format from the fields q, a"):
        detect_format({"q": 1, "a": 2}, WHERE)


def test_check_mapping_rejects_foreign_columns_and_tags():
    with pytest.raises(DataError, match="columns.messages does not apply to the alpaca format"):
        check_mapping("alpaca", {"messages": "m"}, None, "x.json")
    with pytest.raises(DataError, match="tags apply to conversations only"):
        check_mapping("alpaca", None, {"role_tag": "role"}, "x.json")
    with pytest.raises(DataError, match="unknown tag 'speaker'"):
        check_mapping("sharegpt", None, {"speaker": "who"}, "x.json")
    check_mapping("sharegpt", {"messages": "dialog", "tools": "functions"}, {"role_tag": "role"}, "x.json")


# --- alpaca -------------------------------------------------------------------------------------------------------


def test_alpaca_instruction_and_input_become_one_user_turn():
    record = alpaca_to_record({"instruction": "Translate.", "input": "bonjour", "output": "hello"}, WHERE)
    assert record["messages"] == [
        {"role": "user", "content": "Translate.\n\nbonjour"},
        {"role": "assistant", "content": "hello"},
    ]
    assert "id" not in record and "tools" not in record


def test_alpaca_system_and_history_come_first():
    row = {
        "instruction": "And now?",
        "input": "",
        "output": "Now 3.",
        "system": "Count.",
        "history": [["Start", "1."], ["Next", "2."]],
        "id": 7,
    }
    record = alpaca_to_record(row, WHERE)
    assert roles(record) == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    assert [m["content"] for m in record["messages"]] == ["Count.", "Start", "1.", "Next", "2.", "And now?", "Now 3."]
    assert record["id"] == "7"


def test_alpaca_renamed_columns():
    row = {"q": "Why?", "ctx": "sky", "a": "Rayleigh.", "sys": "Be short."}
    columns = {"prompt": "q", "query": "ctx", "response": "a", "system": "sys"}
    record = alpaca_to_record(row, WHERE, columns)
    assert record["messages"] == [
        {"role": "system", "content": "Be short."},
        {"role": "user", "content": "Why?\n\nsky"},
        {"role": "assistant", "content": "Rayleigh."},
    ]


def test_alpaca_empty_output_names_the_field():
    with pytest.raises(DataError, match=r'^orders\.jsonl line 12, field "output": is empty'):
        alpaca_to_record({"instruction": "Hi", "output": "  "}, WHERE)


def test_alpaca_missing_output_lists_the_fields():
    with pytest.raises(DataError, match=r'field "output": missing\n  fix: the fields present are instruction'):
        alpaca_to_record({"instruction": "Hi"}, WHERE)


def test_alpaca_bad_history_pair():
    with pytest.raises(DataError, match=r'field "history\[0\]": expected a \[user, assistant\] pair'):
        alpaca_to_record({"instruction": "Hi", "output": "Yo", "history": [["only one"]]}, WHERE)


# --- sharegpt -----------------------------------------------------------------------------------------------------


def sharegpt(*turns: tuple[str, str], **extra) -> dict:
    return {"conversations": [{"from": who, "value": text} for who, text in turns], **extra}


def test_sharegpt_multi_turn_with_system_column():
    row = sharegpt(("human", "Hi"), ("gpt", "Hello"), ("user", "Bye"), ("assistant", "Bye!"), system="Be nice.")
    record = sharegpt_to_record(row, WHERE)
    assert roles(record) == ["system", "user", "assistant", "user", "assistant"]
    assert record["messages"][0]["content"] == "Be nice." and record["messages"][-1]["content"] == "Bye!"


def test_sharegpt_tool_turns_and_tools():
    call = '{"name": "weather", "arguments": {"city": "Oslo"}}'
    tools = json.dumps([{"name": "weather", "parameters": {"type": "object"}}])
    row = sharegpt(
        ("system", "Use tools."),
        ("human", "Weather in Oslo?"),
        ("function_call", call),
        ("observation", '{"temp": 3}'),
        ("gpt", "It is 3 degrees."),
        tools=tools,
    )
    record = sharegpt_to_record(row, WHERE)
    assert roles(record) == ["system", "user", "assistant", "tool", "assistant"]
    assert record["messages"][2]["content"] == call
    assert record["tools"] == tools


@pytest.mark.parametrize("empty", ["", "[]", None])
def test_sharegpt_empty_tools_are_dropped(empty):
    record = sharegpt_to_record(sharegpt(("human", "Hi"), ("gpt", "Yo"), tools=empty), WHERE)
    assert "tools" not in record


def test_sharegpt_invalid_tools_json():
    with pytest.raises(DataError, match=r'field "tools": is not valid JSON'):
        sharegpt_to_record(sharegpt(("human", "Hi"), ("gpt", "Yo"), tools="[{name: x}]"), WHERE)


def test_sharegpt_tags_rename_keys_and_roles():
    row = {"dialog": [{"speaker": "customer", "text": "Hi"}, {"speaker": "agent", "text": "Hello"}]}
    tags = {"role_tag": "speaker", "content_tag": "text", "user_tag": "customer", "assistant_tag": "agent"}
    record = sharegpt_to_record(row, WHERE, {"messages": "dialog"}, tags)
    assert record["messages"] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]


def test_sharegpt_role_content_messages_suggest_openai():
    row = {"conversations": [{"role": "user", "content": "Hi"}]}
    with pytest.raises(DataError, match=r'field "conversations\[0\]\.from": missing\n  fix: .*openai'):
        sharegpt_to_record(row, WHERE)


def test_sharegpt_wrong_role_lists_allowed_ones():
    with pytest.raises(DataError) as err:
        sharegpt_to_record(sharegpt(("human", "Hi"), ("bot", "Yo")), WHERE)
    message = str(err.value)
    assert message.startswith("orders.jsonl line 12, field \"conversations[1].from\": unknown role 'bot'")
    assert "gpt" in message and "human" in message and "observation" in message


# --- openai -------------------------------------------------------------------------------------------------------


def test_openai_developer_role_and_text_parts():
    row = {
        "messages": [
            {"role": "developer", "content": "Be terse."},
            {"role": "user", "content": [{"type": "text", "text": "Line one"}, {"type": "text", "text": "Line two"}]},
            {"role": "assistant", "content": "Ok."},
        ],
        "category": "support",
    }
    record = openai_to_record(row, WHERE)
    assert record["messages"][0] == {"role": "system", "content": "Be terse."}
    assert record["messages"][1]["content"] == "Line one\nLine two"
    assert record["category"] == "support"


def test_openai_image_part_is_refused():
    row = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}
    with pytest.raises(
        DataError, match=r'field "messages\[0\]\.content\[0\]": expected a text part, got a \'image_url\''
    ):
        openai_to_record(row, WHERE)


def test_openai_tool_calls_and_tools_list():
    tools = [{"type": "function", "function": {"name": "add", "parameters": {}}}]
    call = {"type": "function", "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}}
    row = {
        "messages": [
            {"role": "user", "content": "1+2?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "content": "3", "tool_call_id": "c1"},
            {"role": "assistant", "content": "3"},
        ],
        "tools": tools,
    }
    record = openai_to_record(row, WHERE)
    assert roles(record) == ["user", "assistant", "tool", "assistant"]
    assert json.loads(record["messages"][1]["content"]) == [{"name": "add", "arguments": '{"a": 1, "b": 2}'}]
    assert json.loads(record["tools"]) == tools


# --- conversation rules -------------------------------------------------------------------------------------------


def chat(*turns, **extra) -> dict:
    return {"messages": [{"role": role, "content": content} for role, content in turns], **extra}


@pytest.mark.parametrize(
    ("row", "pattern"),
    [
        (chat(("user", "Hi")), r'field "messages": no assistant turn'),
        (
            chat(("user", "Hi"), ("assistant", "Yo"), ("user", "And?")),
            r'"messages\[2\]": conversation ends with a user',
        ),
        (chat(("assistant", "Yo"), ("user", "Hi")), r'"messages\[0\]": the first message must come from the user'),
        (
            chat(("system", "S"), ("assistant", "Yo")),
            r'"messages\[1\]": the first message after the system message must come from the user',
        ),
        (chat(("user", "Hi"), ("system", "S"), ("assistant", "Yo")), r'"messages\[1\]": a system message is allowed'),
        (chat(("user", "Hi"), ("assistant", 5)), r'"messages\[1\]\.content": expected a string, got a number'),
        (chat(("user", "Hi"), ("assistant", "")), r'"messages\[1\]\.content": is empty'),
        (chat(("user", "Hi"), ("robot", "Yo")), r'"messages\[1\]\.role": unknown role \'robot\''),
        ({"messages": []}, r'field "messages": the conversation has no messages'),
        ({"messages": "hello"}, r'field "messages": expected a list, got a string'),
        ({"messages": [{"role": "user"}]}, r'"messages\[0\]\.content": missing'),
    ],
)
def test_conversation_rules(row, pattern):
    with pytest.raises(DataError, match=pattern) as err:
        openai_to_record(row, WHERE)
    assert str(err.value).startswith("orders.jsonl line 12")


def test_system_column_and_system_message_conflict():
    row = chat(("system", "A"), ("user", "Hi"), ("assistant", "Yo"), system="B")
    with pytest.raises(DataError, match=r'"messages\[0\]": a system message is allowed only as the first'):
        openai_to_record(row, WHERE)


@pytest.mark.parametrize("role", [["human"], {"a": 1}, 3, None])
def test_a_role_that_is_not_a_string_is_a_data_error(role):
    """Found by fuzzing: a list as a role raised TypeError (unhashable) instead of naming the field."""
    row = {"conversations": [{"from": role, "value": "hi"}, {"from": "gpt", "value": "hello"}]}
    with pytest.raises(DataError) as caught:
        sharegpt_to_record(row, "chat.jsonl line 7")
    assert "chat.jsonl line 7" in str(caught.value) and "unknown role" in str(caught.value)
