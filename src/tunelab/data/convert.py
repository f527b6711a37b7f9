"""Write canonical records in the layouts other tools read, and read preference pairs in the layouts people have.

SFT records (`{"id", "messages", "tools"?, "category"?}`) are written as Alpaca (multi-turn → `history`), ShareGPT
(LLaMA-Factory flavour: human/gpt/function_call/observation, `system` column) or OpenAI `messages` rows.

Preference records are TRL's conversational preference format: `{"id", "prompt": [messages], "chosen": [assistant
message], "rejected": [assistant message]}`. They are read from and written to LLaMA-Factory's ShareGPT ranking rows
(`conversations` + `chosen`/`rejected` {from, value}), Alpaca-style rows ({instruction, input, chosen, rejected}),
torchtune's stack-exchange rows ({question, response_j, response_k}) and TRL's own layout (format name "openai",
alias "trl"). Row converters are pure; `read_preference` and `convert_file` do the I/O.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tunelab.data.formats import alpaca_to_record, openai_to_record, sharegpt_to_record
from tunelab.data.sources import read_rows
from tunelab.errors import DataError

SFT_FORMATS = ("alpaca", "sharegpt", "openai")
PREFERENCE_FORMATS = ("alpaca", "sharegpt", "openai", "stack_exchange")
ALIASES = {"trl": "openai"}
OUTPUT_SUFFIXES = (".jsonl", ".json", ".ndjson")
SHAREGPT_ROLES = {"user": "human", "assistant": "gpt", "tool": "observation", "system": "system"}
KEEPS_EVERY_TURN = "convert to sharegpt or openai, which keep every turn"

Row = dict[str, Any]


# --- SFT writers --------------------------------------------------------------------------------------------------


def record_to_alpaca(record: Mapping[str, Any]) -> Row:
    """Last user/assistant pair → instruction/output, earlier pairs → history; the whole user turn is the instruction.

    `input` is written empty: the canonical record no longer knows where the instruction ended and the input began.
    """
    system, pairs = _alpaca_pairs(record["messages"], _where(record))
    instruction, output = pairs[-1]
    row = _id(record) | {"instruction": instruction, "input": "", "output": output}
    if system is not None:
        row["system"] = system
    if len(pairs) > 1:
        row["history"] = [list(pair) for pair in pairs[:-1]]
    return row | _extras(record)


def record_to_sharegpt(record: Mapping[str, Any]) -> Row:
    """`conversations` of {from, value}; an assistant turn answered by a tool turn is a function_call."""
    system, body = _split_system(record["messages"])
    conversations = []
    for index, message in enumerate(body):
        name = SHAREGPT_ROLES[message["role"]]
        if message["role"] == "assistant" and index + 1 < len(body) and body[index + 1]["role"] == "tool":
            name = "function_call"
        conversations.append({"from": name, "value": message["content"]})
    row = _id(record) | {"conversations": conversations}
    if system is not None:
        row["system"] = system
    return row | _extras(record)


def record_to_openai(record: Mapping[str, Any]) -> Row:
    """`messages` of {role, content}; tool calls stay as the assistant's text, `tools` as JSON text."""
    messages = [{"role": message["role"], "content": message["content"]} for message in record["messages"]]
    return _id(record) | {"messages": messages} | _extras(record)


# --- preference readers (rows → canonical) ------------------------------------------------------------------------


def detect_preference_format(row: Mapping[str, Any]) -> str | None:
    """The preference layout of a row, or None when the row is not a preference pair."""
    if "response_j" in row or "response_k" in row:
        return "stack_exchange"
    if "chosen" not in row and "rejected" not in row:
        return None
    if "conversations" in row:
        return "sharegpt"
    if "instruction" in row:
        return "alpaca"
    return "openai" if "prompt" in row else None


def sharegpt_preference(row: Mapping[str, Any], where: str) -> Row:
    """LLaMA-Factory ranking row: `conversations` is the prompt, `chosen`/`rejected` are single {from, value} turns."""
    conversation = row.get("conversations")
    if not isinstance(conversation, list):
        raise DataError(_at(where, "conversations"), "expected a list of {from, value} turns")
    chosen = _sharegpt_reply(row, "chosen", where)
    record = sharegpt_to_record({**row, "conversations": [*conversation, {"from": "gpt", "value": chosen}]}, where)
    return _preference(record, [_assistant(_sharegpt_reply(row, "rejected", where))], where)


def alpaca_preference(row: Mapping[str, Any], where: str) -> Row:
    """{instruction, input, chosen, rejected} with optional system and history, as LLaMA-Factory reads it."""
    chosen = _reply_text(row, "chosen", where)
    record = alpaca_to_record({**row, "output": chosen}, where)
    return _preference(record, [_assistant(_reply_text(row, "rejected", where))], where)


def stack_exchange_preference(row: Mapping[str, Any], where: str) -> Row:
    """torchtune's stack_exchange_paired: response_j is the preferred answer to `question`, response_k the other."""
    question = _reply_text(row, "question", where)
    chosen = _reply_text(row, "response_j", where)
    record = alpaca_to_record({"id": row.get("id"), "instruction": question, "output": chosen}, where)
    return _preference(record, [_assistant(_reply_text(row, "response_k", where))], where)


def trl_preference(row: Mapping[str, Any], where: str) -> Row:
    """TRL: `prompt` and `chosen`/`rejected` as message lists (or plain text for a one-turn exchange)."""
    prompt = _messages(row, "prompt", "user", where)
    chosen = _messages(row, "chosen", "assistant", where)
    rejected = _messages(row, "rejected", "assistant", where)
    record = openai_to_record({**row, "messages": [*prompt, *chosen]}, where)
    rejected_record = openai_to_record({"messages": [*prompt, *rejected]}, where)
    return _preference(record, rejected_record["messages"][len(prompt) :], where, replies=len(chosen))


PREFERENCE_READERS: dict[str, Callable[[Mapping[str, Any], str], Row]] = {
    "sharegpt": sharegpt_preference,
    "alpaca": alpaca_preference,
    "stack_exchange": stack_exchange_preference,
    "openai": trl_preference,
}


# --- preference writers -------------------------------------------------------------------------------------------


def preference_to_sharegpt(record: Mapping[str, Any]) -> Row:
    """LLaMA-Factory ranking row (its `dataset_info.json` entry needs `"ranking": true`)."""
    row = record_to_sharegpt({"messages": record["prompt"]})
    row["chosen"] = {"from": "gpt", "value": _single_reply(record, "chosen")}
    row["rejected"] = {"from": "gpt", "value": _single_reply(record, "rejected")}
    return _id(record) | row | _extras(record)


def preference_to_alpaca(record: Mapping[str, Any]) -> Row:
    """{instruction, input, chosen, rejected} (+ system, history); the prompt must alternate user/assistant."""
    chosen = _assistant(_single_reply(record, "chosen"))
    row = record_to_alpaca({**record, "messages": [*record["prompt"], chosen]})
    row["chosen"] = row.pop("output")
    row["rejected"] = _single_reply(record, "rejected")
    return {key: row.pop(key) for key in ("id", "instruction", "input", "chosen", "rejected") if key in row} | row


def preference_to_stack_exchange(record: Mapping[str, Any]) -> Row:
    """{question, response_j (chosen), response_k (rejected)}: only a single user question fits."""
    prompt = record["prompt"]
    if len(prompt) != 1 or prompt[0]["role"] != "user":
        roles = " → ".join(message["role"] for message in prompt)
        raise DataError(
            _where(record),
            f"stack_exchange holds one user question, this prompt has {roles}",
            fix="convert to sharegpt, alpaca or openai, which keep system prompts and earlier turns",
        )
    answers = {"response_j": _single_reply(record, "chosen"), "response_k": _single_reply(record, "rejected")}
    return _id(record) | {"question": prompt[0]["content"]} | answers | _extras(record)


def preference_to_openai(record: Mapping[str, Any]) -> Row:
    """TRL's conversational preference row, which is the canonical record without its `source`."""
    pairs = {key: [dict(message) for message in record[key]] for key in ("prompt", "chosen", "rejected")}
    return _id(record) | pairs | _extras(record)


SFT_WRITERS: dict[str, Callable[[Mapping[str, Any]], Row]] = {
    "alpaca": record_to_alpaca,
    "sharegpt": record_to_sharegpt,
    "openai": record_to_openai,
}
PREFERENCE_WRITERS: dict[str, Callable[[Mapping[str, Any]], Row]] = {
    "alpaca": preference_to_alpaca,
    "sharegpt": preference_to_sharegpt,
    "openai": preference_to_openai,
    "stack_exchange": preference_to_stack_exchange,
}


# --- files --------------------------------------------------------------------------------------------------------


def read_preference(path: str | Path, format: str = "auto") -> list[Row]:
    """Canonical preference records of a file; the layout is told from the first row and the rest must agree."""
    path = Path(path)
    return _preference_records(read_rows(path), path, format)


def convert_file(
    in_path: str | Path, out_path: str | Path, to_format: str, from_format: str = "auto", overwrite: bool = False
) -> int:
    """Convert a whole file and return the number of records written.

    SFT or preference data is told from the first row. Every record is converted before anything is written, and
    the file appears under its name only when complete, so a bad record never leaves half a file behind.
    """
    in_path, out_path = Path(in_path), Path(out_path)
    _check_output(in_path, out_path, overwrite)
    rows = read_rows(in_path)
    if detect_preference_format(rows[0][1]) is not None:
        records = _preference_records(rows, in_path, from_format)
        writer = _writer(PREFERENCE_WRITERS, to_format, "preference pairs")
    else:
        from tunelab.data.load import load_source

        records = load_source(in_path, ALIASES.get(from_format, from_format))
        writer = _writer(SFT_WRITERS, to_format, "SFT conversations")
    write_rows(out_path, [writer(record) for record in records])
    return len(records)


def write_rows(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """JSON Lines (a JSON list for .json), written to a temporary name in the same folder, then renamed."""
    if path.suffix.lower() == ".json":
        text = json.dumps(list(rows), ensure_ascii=False, indent=2) + "\n"
    else:
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _preference_records(rows: list[tuple[str, dict]], path: Path, format: str) -> list[Row]:
    fmt = _preference_format(rows, ALIASES.get(format, format), path.name)
    reader = PREFERENCE_READERS[fmt]
    records = []
    for index, (where, row) in enumerate(rows):
        record = reader(row, where)
        number = where.rsplit(" ", 1)[-1]
        records.append({"id": record.get("id", f"{path.stem}-{index}"), **record, "source": f"{path.name}:{number}"})
    return records


def _preference_format(rows: list[tuple[str, dict]], format: str, name: str) -> str:
    if format != "auto":
        if format not in PREFERENCE_READERS:
            raise DataError(name, f"unknown preference format {format!r}", fix=_choices(PREFERENCE_FORMATS))
        return format
    first_where, first = rows[0]
    fmt = detect_preference_format(first)
    if fmt is None:
        raise DataError(
            first_where,
            f"not a preference pair (fields: {', '.join(first) or 'none'})",
            fix="expected conversations + chosen/rejected, instruction + chosen/rejected, prompt + chosen/rejected, "
            "or question + response_j/response_k",
        )
    for where, row in rows[1:]:
        if detect_preference_format(row) != fmt:
            raise DataError(where, f"this row is not in the {fmt} layout of the first row ({first_where})")
    return fmt


def _check_output(in_path: Path, out_path: Path, overwrite: bool) -> None:
    if out_path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise DataError(str(out_path), "unsupported output file type", fix="name it .jsonl (or .json for a list)")
    if out_path.resolve() == in_path.resolve() or (
        out_path.exists() and in_path.exists() and os.path.samefile(in_path, out_path)
    ):
        raise DataError(str(out_path), "is the input file", fix="write the converted records to a new file")
    if out_path.exists() and not overwrite:
        raise DataError(str(out_path), "already exists", fix="choose another name, or allow overwriting it")


def _writer(writers: Mapping[str, Callable], to_format: str, kind: str) -> Callable[[Mapping[str, Any]], Row]:
    fmt = ALIASES.get(to_format, to_format)
    if fmt not in writers:
        raise DataError(f"to_format={to_format!r}", f"cannot write {kind} in this format", fix=_choices(writers))
    return writers[fmt]


# --- shared pieces ------------------------------------------------------------------------------------------------


def _alpaca_pairs(messages: Sequence[Mapping[str, Any]], where: str) -> tuple[str | None, list[tuple[str, str]]]:
    """(system, [(user, assistant), ...]) or an error: Alpaca has no room for tool turns or two turns in a row."""
    system, body = _split_system(messages)
    roles = [message["role"] for message in body]
    if "tool" in roles:
        raise DataError(where, "has tool turns, which the alpaca format cannot hold", fix=KEEPS_EVERY_TURN)
    if len(body) % 2 or any(role != ("user", "assistant")[index % 2] for index, role in enumerate(roles)):
        raise DataError(
            where,
            f"alpaca holds alternating user/assistant turns only, this record has {' → '.join(roles)}",
            fix=KEEPS_EVERY_TURN,
        )
    return system, [(body[index]["content"], body[index + 1]["content"]) for index in range(0, len(body), 2)]


def _split_system(messages: Sequence[Mapping[str, Any]]) -> tuple[str | None, list[Mapping[str, Any]]]:
    if messages and messages[0]["role"] == "system":
        return messages[0]["content"], list(messages[1:])
    return None, list(messages)


def _preference(record: Row, rejected: list[dict], where: str, replies: int = 1) -> Row:
    """Split a converted conversation (prompt + chosen) into a preference record; the prompt awaits an answer."""
    prompt, chosen = record["messages"][:-replies], record["messages"][-replies:]
    if prompt[-1]["role"] not in ("user", "tool"):
        raise DataError(
            where, f"the prompt ends with the {prompt[-1]['role']}'s turn", fix="end it with the user's turn"
        )
    return _id(record) | {"prompt": prompt, "chosen": chosen, "rejected": rejected} | _extras(record)


def _sharegpt_reply(row: Mapping[str, Any], key: str, where: str) -> str:
    reply = row.get(key)
    if not isinstance(reply, Mapping) or reply.get("from") not in ("gpt", "assistant"):
        raise DataError(_at(where, key), 'expected an answer {"from": "gpt", "value": ...}')
    return _reply_text(reply, "value", where, f"{key}.value")


def _reply_text(row: Mapping[str, Any], key: str, where: str, field: str | None = None) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DataError(_at(where, field or key), "missing or empty", fix="fill in the text or remove the pair")
    return value


def _messages(row: Mapping[str, Any], key: str, role: str, where: str) -> list:
    value = row.get(key)
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if not isinstance(value, list) or not value:
        raise DataError(_at(where, key), "expected a non-empty list of {role, content} messages (or a text)")
    return value


def _single_reply(record: Mapping[str, Any], key: str) -> str:
    replies = record[key]
    if len(replies) != 1 or replies[0]["role"] != "assistant":
        raise DataError(
            _where(record),
            f"{key} has {len(replies)} messages, this format holds one assistant answer",
            fix="convert to openai (TRL's preference format), which keeps every message",
        )
    return replies[0]["content"]


def _assistant(content: str) -> dict[str, str]:
    return {"role": "assistant", "content": content}


def _id(record: Mapping[str, Any]) -> Row:
    return {"id": record["id"]} if record.get("id") is not None else {}


def _extras(record: Mapping[str, Any]) -> Row:
    return {key: record[key] for key in ("tools", "category") if key in record}


def _where(record: Mapping[str, Any]) -> str:
    where = f"record {record.get('id')!r}"
    return f"{where} ({record['source']})" if record.get("source") else where


def _at(where: str, field: str) -> str:
    return f'{where}, field "{field}"'


def _choices(formats: Sequence[str] | Mapping[str, Any]) -> str:
    return f"use one of: {', '.join(formats)}"
