"""Pure readers of preference data: the row layouts people have → tunelab's two preference record kinds.

The kinds are TRL's conversational shapes, which its trainers take as they are (`kinds.py` tells them apart):
- a preference pair: `{"id", "prompt": [messages: system first if any, ending with the user's (or a tool's) turn],
  "chosen": [one assistant message], "rejected": [one assistant message], "tools"?, "category"?}`;
- an unpaired preference (KTO): `{"id", "prompt": [...], "completion": [one assistant message], "label": bool, ...}`.

Layouts, named "<kind>:<layout>" in the loader's table (`load.py`; a recipe says `preference` or `unpaired` and the
layout is told from the fields):
- pairs: `trl` {prompt, chosen, rejected} as texts (TRL standard) or messages (TRL conversational, tunelab's own);
  `implicit` {chosen, rejected}: two whole conversations whose shared beginning is the prompt; `hh`: Anthropic HH
  texts ("\\n\\nHuman: …\\n\\nAssistant: …"); `sharegpt` / `openai`: LLaMA-Factory ranking rows (a conversation plus
  chosen/rejected message objects); `alpaca`: LLaMA-Factory ranking rows {instruction, input, chosen, rejected};
  `stack_exchange`: torchtune's {question, response_j (chosen), response_k}.
- unpaired: `trl` {prompt, completion, label}; `sharegpt` / `openai` / `alpaca`: LLaMA-Factory KTO rows, whose
  conversation's last answer is the completion and `kto_tag` (or `label`) says whether it is desirable.

`columns` and `tags` mean what they mean in LLaMA-Factory (`formats.py`), plus `chosen`, `rejected` and `kto_tag`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from tunelab.data.formats import (
    CONVERTERS,
    DEFAULT_COLUMNS,
    _as_list,
    _at,
    _kind,
    _require,
    _text,
    alpaca_to_record,
    check_mapping,
    conversation_message,
    openai_to_record,
)
from tunelab.errors import DataError

PAIR = ("chosen", "rejected")
KTO_TAG = "kto_tag"
LABELS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")
HH_ROLES = {"Human": "user", "Assistant": "assistant"}
ONE_ANSWER = "give one assistant answer per side; earlier turns belong in the prompt"

# The fields each layout reads, by default (`columns` may rename them).
OWN_COLUMNS: dict[str, dict[str, str]] = {
    "preference:trl": {"prompt": "prompt", "chosen": "chosen", "rejected": "rejected", "tools": "tools"},
    "preference:implicit": {"chosen": "chosen", "rejected": "rejected"},
    "preference:hh": {"chosen": "chosen", "rejected": "rejected"},
    "preference:stack_exchange": {"question": "question", "response_j": "response_j", "response_k": "response_k"},
    "unpaired:trl": {"prompt": "prompt", "completion": "completion", "label": "label", "tools": "tools"},
}
# Layouts on top of an SFT format: that format's columns and tags, plus these.
EXTRA_COLUMNS = {"preference": PAIR, "unpaired": (KTO_TAG,)}

# (a field the row has, its layout), first match wins
PAIR_MARKS = (("conversations", "sharegpt"), ("instruction", "alpaca"), ("prompt", "trl"), ("messages", "openai"))
UNPAIRED_MARKS = (
    ("conversations", "sharegpt"),
    ("messages", "openai"),
    ("instruction", "alpaca"),
    ("output", "alpaca"),
)

Reader = Callable[..., dict]


def detect_layout(row: Mapping[str, Any]) -> str | None:
    """ "preference:<layout>" or "unpaired:<layout>" by the row's fields; None for anything else (SFT rows).

    An unpaired row needs `completion` + `label`, a `kto_tag`, or a true/false `label` beside a conversation: a text
    label on a conversation is a classification target (SFT), as it always was.
    """
    if "response_j" in row or "response_k" in row:
        return "preference:stack_exchange"
    if "chosen" in row or "rejected" in row:
        layout = next((name for key, name in PAIR_MARKS if key in row), None)
        return f"preference:{layout or ('hh' if _is_hh(row.get('chosen')) else 'implicit')}"
    if "completion" in row and "label" in row:
        return "unpaired:trl"
    if KTO_TAG in row or isinstance(row.get("label"), bool):
        layout = next((name for key, name in UNPAIRED_MARKS if key in row), None)
        return f"unpaired:{layout}" if layout else None
    return None


def check_layout_mapping(
    fmt: str, columns: Mapping[str, str] | None, tags: Mapping[str, str] | None, where: str
) -> None:
    """Reject column or tag names that do not apply to the layout, before any row is converted."""
    kind, _, layout = fmt.partition(":")
    if fmt in OWN_COLUMNS:
        allowed = OWN_COLUMNS[fmt]
        for key in columns or {}:
            if key not in allowed:
                raise DataError(where, f"columns.{key} does not apply to {fmt}", fix=f"use: {', '.join(allowed)}")
        if tags:
            raise DataError(where, f"tags do not apply to {fmt}", fix="tags map LLaMA-Factory conversations only")
        return
    _, base = _split_columns(columns, EXTRA_COLUMNS[kind])
    check_mapping(layout, base, tags, where)


# --- pairs --------------------------------------------------------------------------------------------------------


def trl_pair(row: Mapping[str, Any], where: str, columns: Mapping | None = None, tags: Mapping | None = None) -> dict:
    """TRL's {prompt, chosen, rejected}: texts (standard) or message lists (conversational). Sides that repeat the
    prompt before their answer (as UltraFeedback's do) are read as whole conversations, like implicit pairs."""
    col = {**OWN_COLUMNS["preference:trl"], **(columns or {})}
    sides = [_messages_or_text(row.get(col[key])) for key in PAIR]
    if all(isinstance(side, list) and len(side) > 1 for side in sides):
        return implicit_pair(row, where, {key: col[key] for key in PAIR})
    chosen, rejected = (_answer(row, col[key], where) for key in PAIR)
    return _pair(_with_prompt(row, col, chosen, where), rejected, where, col["prompt"])


def implicit_pair(
    row: Mapping[str, Any], where: str, columns: Mapping | None = None, tags: Mapping | None = None
) -> dict:
    """{chosen, rejected} as two whole conversations: their shared beginning is the prompt."""
    col = {**OWN_COLUMNS["preference:implicit"], **(columns or {})}
    for key in PAIR:
        if isinstance(_messages_or_text(row.get(col[key])), str):
            raise DataError(
                _at(where, col[key]),
                "is plain text, and the prompt is not given: there is no telling where it ends",
                fix="give the prompt separately ({prompt, chosen, rejected}) or both sides as conversations",
            )
    chosen, rejected = (_conversation(row, col[key], where) for key in PAIR)
    return _split_shared(chosen, rejected["messages"], where)


def hh_pair(row: Mapping[str, Any], where: str, columns: Mapping | None = None, tags: Mapping | None = None) -> dict:
    """Anthropic HH: both sides are the whole dialogue as "\\n\\nHuman: …\\n\\nAssistant: …" text."""
    col = {**OWN_COLUMNS["preference:hh"], **(columns or {})}
    chosen, rejected = (_conversation({**row, col[key]: _hh_messages(row, col[key], where)}, col[key], where)
                        for key in PAIR)  # fmt: skip
    return _split_shared(chosen, rejected["messages"], where)


def conversation_pair(
    fmt: str, row: Mapping[str, Any], where: str, columns: Mapping | None = None, tags: Mapping | None = None
) -> dict:
    """LLaMA-Factory ranking: the conversation is the prompt, `chosen` and `rejected` are single message objects."""
    col, base = _split_columns(columns, PAIR)
    chosen, rejected = (
        conversation_message(_require(row, col[key], where), where, col[key], fmt, tags) for key in PAIR
    )
    for key, answer in zip(PAIR, (chosen, rejected), strict=True):
        _check_answer(answer, where, col[key])
    field = (base or {}).get("messages", DEFAULT_COLUMNS[fmt]["messages"])
    prompt = _as_list(_require(row, field, where), where, field)
    record = CONVERTERS[fmt]({**row, field: [*prompt, row[col["chosen"]]]}, where, base, tags)
    return _pair(record, rejected, where, field, chosen=col["chosen"])


def alpaca_pair(
    row: Mapping[str, Any], where: str, columns: Mapping | None = None, tags: Mapping | None = None
) -> dict:
    """LLaMA-Factory ranking {instruction, input, chosen, rejected} (+ system, history): answers are texts."""
    col, base = _split_columns(columns, PAIR)
    record = alpaca_to_record(row, where, {**(base or {}), "response": col["chosen"]})
    rejected = {"role": "assistant", "content": _text(_require(row, col["rejected"], where), where, col["rejected"])}
    return _pair(record, rejected, where, (base or {}).get("prompt", "instruction"))


def stack_exchange_pair(
    row: Mapping[str, Any], where: str, columns: Mapping | None = None, tags: Mapping | None = None
) -> dict:
    """torchtune's stack_exchange_paired: response_j is the preferred answer to `question`, response_k the other."""
    col = {**OWN_COLUMNS["preference:stack_exchange"], **(columns or {})}
    record = alpaca_to_record(row, where, {"prompt": col["question"], "response": col["response_j"]})
    key = col["response_k"]
    rejected = {"role": "assistant", "content": _text(_require(row, key, where), where, key)}
    return _pair(record, rejected, where, col["question"])


# --- unpaired -----------------------------------------------------------------------------------------------------


def trl_unpaired(
    row: Mapping[str, Any], where: str, columns: Mapping | None = None, tags: Mapping | None = None
) -> dict:
    """TRL's {prompt, completion, label}: texts or message lists; `label` true when the completion is desirable."""
    col = {**OWN_COLUMNS["unpaired:trl"], **(columns or {})}
    completion = _answer(row, col["completion"], where)
    record = _with_prompt(row, col, completion, where)
    return _unpaired(record, _label(row, col["label"], where), where, col["prompt"], col["completion"])


def conversation_unpaired(
    fmt: str, row: Mapping[str, Any], where: str, columns: Mapping | None = None, tags: Mapping | None = None
) -> dict:
    """LLaMA-Factory KTO: the conversation's last answer is the completion, `kto_tag` (or `label`) its label."""
    col, base = _split_columns(columns, (KTO_TAG,))
    label = col[KTO_TAG] if KTO_TAG in (columns or {}) or KTO_TAG in row else "label"
    record = CONVERTERS[fmt](row, where, base, tags)
    names = {**DEFAULT_COLUMNS[fmt], **(base or {})}
    prompt, completion = (names["prompt"], names["response"]) if fmt == "alpaca" else (names["messages"],) * 2
    return _unpaired(record, _label(row, label, where), where, prompt, completion)


PAIR_READERS: dict[str, Reader] = {
    "trl": trl_pair,
    "implicit": implicit_pair,
    "hh": hh_pair,
    "sharegpt": partial(conversation_pair, "sharegpt"),
    "openai": partial(conversation_pair, "openai"),
    "alpaca": alpaca_pair,
    "stack_exchange": stack_exchange_pair,
}
UNPAIRED_READERS: dict[str, Reader] = {
    "trl": trl_unpaired,
    "sharegpt": partial(conversation_unpaired, "sharegpt"),
    "openai": partial(conversation_unpaired, "openai"),
    "alpaca": partial(conversation_unpaired, "alpaca"),
}
READERS: dict[str, Reader] = {
    **{f"preference:{name}": reader for name, reader in PAIR_READERS.items()},
    **{f"unpaired:{name}": reader for name, reader in UNPAIRED_READERS.items()},
}


# --- shared pieces ------------------------------------------------------------------------------------------------


def _pair(record: dict, rejected: dict, where: str, prompt_field: str, chosen: str = "chosen") -> dict:
    """An SFT record whose last message is the chosen answer, and the rejected answer → a preference pair."""
    prompt, answer = record["messages"][:-1], record["messages"][-1]
    _check_prompt(prompt, where, prompt_field)
    _check_answer(answer, where, chosen)
    _check_answer(rejected, where, "rejected")
    meta = {key: value for key, value in record.items() if key not in ("id", "messages")}
    return _id(record) | {"prompt": prompt, "chosen": [answer], "rejected": [dict(rejected)]} | meta


def _unpaired(record: dict, label: bool, where: str, prompt_field: str, completion_field: str) -> dict:
    prompt, answer = record["messages"][:-1], record["messages"][-1]
    _check_prompt(prompt, where, prompt_field)
    _check_answer(answer, where, completion_field)
    meta = {key: value for key, value in record.items() if key not in ("id", "messages")}
    return _id(record) | {"prompt": prompt, "completion": [answer], "label": label} | meta


def _check_prompt(prompt: list[dict], where: str, field: str) -> None:
    if not prompt:
        raise DataError(_at(where, field), "the prompt is empty", fix="every pair needs the user's question")
    if prompt[-1]["role"] not in ("user", "tool"):
        raise DataError(
            _at(where, field),
            f"the prompt ends with the {prompt[-1]['role']}'s turn",
            fix="end the prompt with the user's turn; the answers compared come after it",
        )


def _check_answer(message: Mapping[str, Any], where: str, field: str) -> None:
    if message["role"] != "assistant":
        raise DataError(
            _at(where, field), f"the answer comes from the {message['role']}, not the assistant", fix=ONE_ANSWER
        )


def _with_prompt(row: Mapping[str, Any], col: dict[str, str], answer: dict, where: str) -> dict:
    """The prompt (a text → one user turn, or messages) followed by the answer, as a checked SFT record."""
    field = col["prompt"]
    value = _messages_or_text(_require(row, field, where))
    if isinstance(value, str):
        value = [{"role": "user", "content": _text(value, where, field)}]
    prompt = _as_list(value, where, field)
    return openai_to_record({**row, field: [*prompt, answer]}, where, {"messages": field, "tools": col["tools"]})


def _answer(row: Mapping[str, Any], field: str, where: str) -> dict:
    """One answer: a text, one message object, or a list of one message (TRL's conversational shape)."""
    value = _messages_or_text(_require(row, field, where))
    if isinstance(value, str):
        return {"role": "assistant", "content": _text(value, where, field)}
    if isinstance(value, Mapping):
        answer = conversation_message(value, where, field)
    else:
        messages = _as_list(value, where, field)
        if len(messages) != 1:
            raise DataError(_at(where, field), f"expected one assistant message, got {len(messages)}", fix=ONE_ANSWER)
        answer = conversation_message(messages[0], where, f"{field}[0]")
    _check_answer(answer, where, field)
    return answer


def _messages_or_text(value: Any) -> Any:
    """A text that is JSON of a message list (as CSV and Parquet store lists) → that list; any other value as it is.

    A text answer may itself be JSON ("[1, 2]", '{"qty": 2}'): only a list of role/content (or from/value) objects
    is taken for messages.
    """
    if not isinstance(value, str) or not value.lstrip().startswith("["):
        return value
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        return value
    is_messages = isinstance(parsed, list) and parsed and all(isinstance(m, Mapping) for m in parsed)
    return parsed if is_messages and all("role" in m or "from" in m for m in parsed) else value


def _conversation(row: Mapping[str, Any], field: str, where: str) -> dict:
    """A whole conversation in `field` (role/content or from/value messages) → a checked SFT record."""
    messages = _as_list(_require(row, field, where), where, field)
    fmt = "sharegpt" if messages and isinstance(messages[0], Mapping) and "from" in messages[0] else "openai"
    return CONVERTERS[fmt](row, where, {"messages": field})


def _split_shared(chosen: dict, rejected: list[dict], where: str) -> dict:
    """Two conversations that agree up to their last answers → prompt, chosen, rejected."""
    ours = chosen["messages"]
    limit = min(len(ours), len(rejected)) - 1
    shared = next((index for index in range(limit) if ours[index] != rejected[index]), limit)
    if len(ours) - shared != 1 or len(rejected) - shared != 1:
        raise DataError(
            _at(where, "chosen"),
            f"chosen and rejected differ from message {shared} on ({len(ours) - shared} and "
            f"{len(rejected) - shared} messages after the shared part), not only in their last answer",
            fix="give the prompt separately ({prompt, chosen, rejected}) with one answer on each side",
        )
    return _pair(chosen, rejected[-1], where, "chosen")


def _hh_messages(row: Mapping[str, Any], field: str, where: str) -> list[dict[str, str]]:
    text = _require(row, field, where)
    if not isinstance(text, str):
        raise DataError(_at(where, field), f"expected the dialogue as text, got {_kind(text)}")
    parts = HH_TURN.split(text)
    if parts[0].strip():
        raise DataError(_at(where, field), 'has text before the first "Human:" turn', fix="start with \\n\\nHuman:")
    return [
        {"role": HH_ROLES[name], "content": content.strip()}
        for name, content in zip(parts[1::2], parts[2::2], strict=True)
    ]


def _is_hh(value: Any) -> bool:
    return isinstance(value, str) and bool(HH_TURN.match(value)) and "Assistant:" in value


def _label(row: Mapping[str, Any], field: str, where: str) -> bool:
    value = _require(row, field, where)
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in LABELS:
        return LABELS[value.strip().lower()]
    raise DataError(
        _at(where, field),
        f"expected true or false, got {_kind(value)} {value!r}"[:200],
        fix="the label says whether the completion is desirable (true) or undesirable (false)",
    )


def _split_columns(columns: Mapping[str, str] | None, own: tuple[str, ...]) -> tuple[dict[str, str], dict | None]:
    """(this layout's own columns with defaults, the rest for the SFT converter underneath, or None)."""
    col = {key: key for key in own} | {key: value for key, value in (columns or {}).items() if key in own}
    base = {key: value for key, value in (columns or {}).items() if key not in own}
    return col, base or None


def _id(record: Mapping[str, Any]) -> dict:
    return {"id": record["id"]} if "id" in record else {}
