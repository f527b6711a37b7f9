"""Convert data files between layouts: conversations (SFT) and both kinds of preference data, each way.

Reading is the loader's (`load.py`: `formats.py` for conversations, `preference.py` for pairs and unpaired
preferences), so a file converts exactly as it would load for training. Writing is here:

- conversations (`{"id", "messages", "tools"?, "category"?}`) as Alpaca (multi-turn → `history`), ShareGPT
  (LLaMA-Factory flavour: human/gpt/function_call/observation, `system` column) or OpenAI `messages` rows;
- preference pairs (`{"id", "prompt", "chosen", "rejected"}`, TRL's conversational shape) as tunelab's own records
  (`preference`; also `openai`/`trl`), LLaMA-Factory ranking rows (`sharegpt`: conversations + chosen/rejected
  {from, value}; `alpaca`: {instruction, input, chosen, rejected}), TRL's standard text rows (`trl_standard`) or
  torchtune's stack-exchange rows (`stack_exchange`);
- unpaired preferences (`{"id", "prompt", "completion", "label"}`) as tunelab's own (`unpaired`; also
  `openai`/`trl`), LLaMA-Factory KTO rows (`sharegpt`, `alpaca`: with `kto_tag`) or TRL standard text rows.

Writers are pure; `convert_file` does the I/O, all or nothing.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tunelab.data.kinds import record_kind, unpair
from tunelab.data.kinds import where as _where
from tunelab.errors import DataError

SFT_FORMATS = ("alpaca", "sharegpt", "openai")
PREFERENCE_FORMATS = ("alpaca", "sharegpt", "openai", "preference", "unpaired", "stack_exchange", "trl_standard")
"""Every layout preference data can be written in (`--to`); `openai` is TRL's conversational shape."""
ALIASES = {"trl": "openai"}
SOURCE_LAYOUTS = {"openai": "trl", "trl": "trl"}
"""`--from` names of preference layouts that differ from the loader's (`preference.py`)."""
OUTPUT_SUFFIXES = (".jsonl", ".json", ".ndjson")
SHAREGPT_ROLES = {"user": "human", "assistant": "gpt", "tool": "observation", "system": "system"}
KEEPS_EVERY_TURN = "convert to sharegpt or openai, which keep every turn"
KEEPS_THE_PROMPT = "convert to preference (or sharegpt, alpaca), which keep system prompts and earlier turns"

Row = dict[str, Any]
Writer = Callable[[Mapping[str, Any]], Row]


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


# --- preference writers -------------------------------------------------------------------------------------------


def preference_to_sharegpt(record: Mapping[str, Any]) -> Row:
    """LLaMA-Factory ranking row (its `dataset_info.json` entry needs `"ranking": true`)."""
    row = record_to_sharegpt({"messages": record["prompt"]})
    row["chosen"] = {"from": "gpt", "value": _single_reply(record, "chosen")}
    row["rejected"] = {"from": "gpt", "value": _single_reply(record, "rejected")}
    return _id(record) | row | _extras(record)


def preference_to_alpaca(record: Mapping[str, Any]) -> Row:
    """{instruction, input, chosen, rejected} (+ system, history); the prompt must alternate user/assistant."""
    chosen = {"role": "assistant", "content": _single_reply(record, "chosen")}
    row = record_to_alpaca({**record, "messages": [*record["prompt"], chosen]})
    row["chosen"] = row.pop("output")
    row["rejected"] = _single_reply(record, "rejected")
    return {key: row.pop(key) for key in ("id", "instruction", "input", "chosen", "rejected") if key in row} | row


def preference_to_stack_exchange(record: Mapping[str, Any]) -> Row:
    """{question, response_j (chosen), response_k (rejected)}: only a single user question fits."""
    question = _single_question(record, "stack_exchange")
    answers = {"response_j": _single_reply(record, "chosen"), "response_k": _single_reply(record, "rejected")}
    return _id(record) | {"question": question} | answers | _extras(record)


def preference_to_trl_standard(record: Mapping[str, Any]) -> Row:
    """TRL's standard (text) preference row {prompt, chosen, rejected}: only a single user question fits."""
    prompt = _single_question(record, "trl_standard")
    answers = {"chosen": _single_reply(record, "chosen"), "rejected": _single_reply(record, "rejected")}
    return _id(record) | {"prompt": prompt} | answers | _extras(record)


def preference_to_openai(record: Mapping[str, Any]) -> Row:
    """TRL's conversational preference row, which is the canonical record without its `source`."""
    pairs = {key: [dict(message) for message in record[key]] for key in ("prompt", "chosen", "rejected")}
    return _id(record) | pairs | _extras(record)


# --- unpaired writers ---------------------------------------------------------------------------------------------


def unpaired_to_openai(record: Mapping[str, Any]) -> Row:
    """TRL's conversational unpaired row {prompt, completion, label}: the canonical record without its `source`."""
    sides = {key: [dict(message) for message in record[key]] for key in ("prompt", "completion")}
    return _id(record) | sides | {"label": record["label"]} | _extras(record)


def unpaired_to_trl_standard(record: Mapping[str, Any]) -> Row:
    prompt = _single_question(record, "trl_standard")
    completion = _single_reply(record, "completion")
    return _id(record) | {"prompt": prompt, "completion": completion, "label": record["label"]} | _extras(record)


def unpaired_to_sharegpt(record: Mapping[str, Any]) -> Row:
    """LLaMA-Factory KTO row: the whole conversation and `kto_tag` (its entry maps columns `"kto_tag": "kto_tag"`)."""
    return record_to_sharegpt(_unpaired_conversation(record)) | {"kto_tag": record["label"]}


def unpaired_to_alpaca(record: Mapping[str, Any]) -> Row:
    return record_to_alpaca(_unpaired_conversation(record)) | {"kto_tag": record["label"]}


SFT_WRITERS: dict[str, Writer] = {
    "alpaca": record_to_alpaca,
    "sharegpt": record_to_sharegpt,
    "openai": record_to_openai,
}
PREFERENCE_WRITERS: dict[str, Writer] = {
    "alpaca": preference_to_alpaca,
    "sharegpt": preference_to_sharegpt,
    "openai": preference_to_openai,
    "preference": preference_to_openai,
    "stack_exchange": preference_to_stack_exchange,
    "trl_standard": preference_to_trl_standard,
}
UNPAIRED_WRITERS: dict[str, Writer] = {
    "alpaca": unpaired_to_alpaca,
    "sharegpt": unpaired_to_sharegpt,
    "openai": unpaired_to_openai,
    "unpaired": unpaired_to_openai,
    "trl_standard": unpaired_to_trl_standard,
}
WRITERS = {
    "messages": (SFT_WRITERS, "SFT conversations"),
    "preference": (PREFERENCE_WRITERS, "preference pairs"),
    "unpaired": (UNPAIRED_WRITERS, "unpaired preferences"),
}


# --- files --------------------------------------------------------------------------------------------------------


def convert_file(
    in_path: str | Path, out_path: str | Path, to_format: str, from_format: str = "auto", overwrite: bool = False
) -> int:
    """Convert a whole file and return the number of records written.

    The kind of data (conversations, pairs, unpaired) is told from the first row, and `from_format` names its layout
    ("auto": told from the fields). Pairs written as `unpaired` become two records each (chosen: desirable). Every
    record is converted before anything is written, and the file appears under its name only when complete, so a bad
    record never leaves half a file behind.
    """
    from tunelab.data.load import convert_rows
    from tunelab.data.preference import detect_layout
    from tunelab.data.sources import read_rows

    in_path, out_path = Path(in_path), Path(out_path)
    _check_output(in_path, out_path, overwrite)
    rows = read_rows(in_path)
    records = convert_rows(rows, in_path, _source_format(from_format, detect_layout(rows[0][1])))
    kind = record_kind(records[0]) if records else "messages"
    fmt = ALIASES.get(to_format, to_format)
    if kind == "preference" and fmt == "unpaired":  # each pair → its chosen answer desirable, its rejected one not
        records, kind = unpair(records), "unpaired"
    writers, what = WRITERS[kind]
    if fmt not in writers:
        raise DataError(f"to_format={to_format!r}", f"cannot write {what} in this format", fix=_choices(writers))
    write_rows(out_path, [writers[fmt](record) for record in records])
    return len(records)


def _source_format(from_format: str, detected: str | None) -> str:
    """The loader's format for `--from`: SFT names as they are; for preference data, the layout within its kind."""
    if from_format == "auto" or detected is None:
        return ALIASES.get(from_format, from_format)
    kind = detected.partition(":")[0]
    if from_format in ("preference", "unpaired"):
        return from_format
    return f"{kind}:{SOURCE_LAYOUTS.get(from_format, from_format)}"


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


def _check_output(in_path: Path, out_path: Path, overwrite: bool) -> None:
    if out_path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise DataError(str(out_path), "unsupported output file type", fix="name it .jsonl (or .json for a list)")
    if out_path.resolve() == in_path.resolve() or (
        out_path.exists() and in_path.exists() and os.path.samefile(in_path, out_path)
    ):
        raise DataError(str(out_path), "is the input file", fix="write the converted records to a new file")
    if out_path.exists() and not overwrite:
        raise DataError(str(out_path), "already exists", fix="choose another name, or allow overwriting it")


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


def _split_system(messages: Sequence[Mapping[str, Any]]) -> tuple[str | None, list[Mapping[str, Any]]]:
    if messages and messages[0]["role"] == "system":
        return messages[0]["content"], list(messages[1:])
    return None, list(messages)


def _single_question(record: Mapping[str, Any], fmt: str) -> str:
    prompt = record["prompt"]
    if len(prompt) != 1 or prompt[0]["role"] != "user":
        roles = " → ".join(message["role"] for message in prompt)
        raise DataError(_where(record), f"{fmt} holds one user question, this prompt has {roles}", fix=KEEPS_THE_PROMPT)
    return prompt[0]["content"]


def _single_reply(record: Mapping[str, Any], key: str) -> str:
    replies = record[key]
    if len(replies) != 1 or replies[0]["role"] != "assistant":
        raise DataError(
            _where(record),
            f"{key} has {len(replies)} messages, this format holds one assistant answer",
            fix="convert to openai (TRL's preference format), which keeps every message",
        )
    return replies[0]["content"]


def _unpaired_conversation(record: Mapping[str, Any]) -> Row:
    rest = {key: value for key, value in record.items() if key not in ("prompt", "completion", "label")}
    return rest | {"messages": [*record["prompt"], *record["completion"]]}


def _id(record: Mapping[str, Any]) -> Row:
    return {"id": record["id"]} if record.get("id") is not None else {}


def _extras(record: Mapping[str, Any]) -> Row:
    return {key: record[key] for key in ("tools", "category") if key in record}


def _choices(formats: Sequence[str] | Mapping[str, Any]) -> str:
    return f"use one of: {', '.join(formats)}"
