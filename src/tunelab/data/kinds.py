"""The three kinds of canonical record, and the views of them the rest of the data code needs.

- "messages": a conversation, `{"id", "messages": [...], "tools"?, "category"?, "source"}` (SFT);
- "preference": a pair, `{"id", "prompt": [messages up to and including the last user turn, system first if any],
  "chosen": [{"role": "assistant", "content"}], "rejected": [{"role": "assistant", "content"}], ...}` (reward
  models, DPO, ORPO, SimPO, CPO);
- "unpaired": `{"id", "prompt": [...], "completion": [{"role": "assistant", "content"}], "label": bool, ...}` (KTO).

All three are TRL's conversational shapes; `preference.py` reads the layouts people have into them. One set of data
(and one run) holds one kind: `check_one_kind` says which, or which record breaks the rule and what to do; the one
mix allowed is unpaired (KTO) training data held out on pairs (`sets_kind`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from tunelab.errors import DataError

KINDS = ("messages", "preference", "unpaired")
FIELDS = {"messages": ("messages",), "preference": ("prompt", "chosen", "rejected"),
          "unpaired": ("prompt", "completion", "label")}  # fmt: skip
DESCRIPTIONS = {
    "messages": "a conversation (messages: SFT data)",
    "preference": "a preference pair (prompt, chosen, rejected)",
    "unpaired": "an unpaired preference (prompt, completion, label: KTO data)",
}
ONE_KIND_FIX = (
    "keep one kind of record per run: conversations for sft, preference pairs for the reward model and "
    "DPO/ORPO/SimPO/CPO, unpaired preferences for KTO; `tunelab data convert --to preference` converts pair layouts"
)


def record_kind(record: Mapping[str, Any]) -> str:
    """ "messages", "preference" or "unpaired", by the fields the canonical record has."""
    found = [kind for kind in KINDS if all(name in record for name in FIELDS[kind])]
    if len(found) == 1:
        return found[0]
    fields = ", ".join(map(str, record)) or "none"
    raise DataError(
        where(record),
        f"is not a canonical record (fields: {fields})",
        fix="expected messages, prompt + chosen + rejected, or prompt + completion + label; load data files with "
        "tunelab's loader, which converts the layouts it knows",
    )


def check_one_kind(records: Iterable[Mapping[str, Any]], what: str = "data") -> str | None:
    """The kind every record has (None when there are none); a DataError at the first record of another kind."""
    first: Mapping[str, Any] | None = None
    kind = None
    for record in records:
        other = record_kind(record)
        if first is None:
            first, kind = record, other
        elif other != kind:
            raise DataError(
                f"{what}: {where(record)}",
                f"is {DESCRIPTIONS[other]}, but {where(first)} is {DESCRIPTIONS[kind]}",
                fix=ONE_KIND_FIX,
            )
    return kind


def sets_kind(sets: Mapping[str, Sequence[Mapping[str, Any]]], roles: Mapping[str, str] | None = None) -> str:
    """The one kind of every record of every set ("messages" when there are none).

    One mix is allowed, given the sets' `roles` ("train" or "eval"): unpaired training data (KTO) with held-out sets of
    pairs. A pair holds more than an unpaired record (both answers to one prompt, so a pair accuracy), and unpairs
    into two without loss (`unpair`); the kind is then "unpaired"."""
    if roles and _unpaired_training_with_held_out_pairs(sets, roles):
        return "unpaired"
    return check_one_kind((record for rows in sets.values() for record in rows), "data") or "messages"


def _unpaired_training_with_held_out_pairs(sets: Mapping[str, Sequence[Mapping[str, Any]]],
                                           roles: Mapping[str, str]) -> bool:  # fmt: skip
    training = [record for name, rows in sets.items() if roles.get(name, "train") == "train" for record in rows]
    held_out = [rows for name, rows in sets.items() if roles.get(name, "train") != "train" and rows]
    if not held_out or check_one_kind(training, "training data") != "unpaired":
        return False
    kinds = [check_one_kind(rows, "held-out data") for rows in held_out]
    return "preference" in kinds and set(kinds) <= {"preference", "unpaired"}


def as_unpaired(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Records of an "unpaired" run as unpaired records: pairs unpaired (see `sets_kind`), the rest as they are."""
    return [out for record in rows for out in (unpair([record]) if "chosen" in record else [dict(record)])]


def prompt_of(record: Mapping[str, Any]) -> list[dict]:
    """The messages before the answer: the prompt of a pair, or a conversation up to its last assistant turn."""
    if "prompt" in record:
        return list(record["prompt"])
    messages = list(record["messages"])
    last = max((index for index, m in enumerate(messages) if m["role"] == "assistant"), default=len(messages))
    return messages[:last]


def conversation(record: Mapping[str, Any]) -> dict[str, Any]:
    """The record as one conversation: itself, or the prompt with the chosen answer (a pair) or the completion."""
    if "messages" in record:
        return dict(record)
    answer = record["chosen"] if "chosen" in record else record["completion"]
    rest = {key: value for key, value in record.items() if key not in (*FIELDS["preference"], *FIELDS["unpaired"])}
    return rest | {"messages": [*record["prompt"], *answer]}


def prompt_key(record: dict) -> str:
    return json.dumps(record["prompt"], sort_keys=True, ensure_ascii=False)


def as_conversations(records: list[dict]) -> list[dict]:
    """Held-out pairs as SFT test records for the generation metrics: one per distinct prompt (several pairs often
    share one), with its first pair's id and chosen answer as the reference; a category only when its pairs agree."""
    by_prompt: dict[str, dict] = {}
    for record in records:
        known = by_prompt.setdefault(prompt_key(record), {
            "id": record.get("id"), "category": record.get("category"), "tools": record.get("tools"),
            "messages": [*record["prompt"], *record["chosen"]],
            **({"source": record["source"]} if "source" in record else {})})  # fmt: skip
        if known["category"] != record.get("category"):
            known["category"] = None
    return list(by_prompt.values())


def with_system(record: dict, system: str | None) -> dict:
    """The record with this system prompt first, unless it already begins with one."""
    key = "messages" if "messages" in record else "prompt"
    if not system or record[key][0]["role"] == "system":
        return record
    return record | {key: [{"role": "system", "content": system}, *record[key]]}


def answer_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The text of one side of a pair (its messages' contents, one per line), as lengths are measured on it."""
    return "\n".join(str(message.get("content") or "") for message in messages)


def unpair(records: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Preference pairs → unpaired preferences (KTO): the chosen answer desirable, the rejected one not.

    Ids become "<id>-chosen" and "<id>-rejected"; the rest of each record (tools, category, source) is kept.
    """
    out = []
    for record in records:
        rest = {key: value for key, value in record.items() if key not in ("id", *FIELDS["preference"])}
        for side, label in (("chosen", True), ("rejected", False)):
            unpaired = {"prompt": record["prompt"], "completion": record[side], "label": label}
            out.append({"id": f"{record.get('id')}-{side}", **unpaired, **rest})
    return out


def where(record: Mapping[str, Any]) -> str:
    """How errors name a record: its id and, when known, its file and line."""
    name = f"record {record.get('id')!r}"
    return f"{name} ({record['source']})" if record.get("source") else name
