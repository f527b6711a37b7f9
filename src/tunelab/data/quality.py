"""Per-record quality checks for the audit: lengths in tokens, truncation, short answers, echoes, language mix.

An answer that repeats the prompt (an echo) is a warning; one that extracts from it (a span, or JSON built from
the prompt's values) is counted as information: in extraction tasks copying from the prompt is the task.

Token lengths are estimated from batched tokenization of the message contents plus the template's per-message
overhead (measured once on the tokenizer's own template). Rendering the template for every record would be exact but
costs ~0.2 ms per record in Jinja, too slow for 100k-record audits; the estimate is within a few tokens.
"""

from __future__ import annotations

import json
import re
import statistics
import string
import unicodedata
from typing import Any

CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]")
ASCII_LETTERS = string.ascii_letters.encode()
NOT_ALNUM = re.compile(r"[\W_]+")  # exactly the characters str.isalnum() rejects; one C-level pass instead of a loop
WHITESPACE = re.compile(r"\s+")
FENCE = re.compile(r"^```[\w-]*\s*|\s*```$")
MIN_ANSWER_CHARS = 2
ECHO_SHARE = 0.8
"""An answer that is a span of the prompt covering this share of it (without punctuation) echoes the prompt."""
CONTAINED_SHARE = 0.5
"""An answer that contains the whole prompt echoes it when the prompt is at least this share of the answer."""
EXTRACTED_SHARE = 0.8
"""A JSON answer is extracted from the prompt when this share of its values' distinct words occur in the prompt."""
QUICK_WORDS = 8
"""Words of a text answer checked against the prompt before all of them are (most answers fail there)."""
INFO_FLAGS = frozenset({"answer_extracted_from_prompt"})
"""Flags that describe the data rather than point at a problem (counted, but not warnings)."""


def prompt_text(record: dict) -> str:
    return "\n".join(m["content"] for m in record["messages"] if m["role"] == "user")


def answer_text(record: dict) -> str:
    return "\n".join(m["content"] for m in record["messages"] if m["role"] == "assistant")


def language(text: str) -> str:
    """'zh' (CJK script), 'en' (Latin script), 'mixed' or 'other', by the share of letters of each script."""
    # counted as what a deletion removes: C-level, without building a list of matches; ASCII letters are counted on
    # the UTF-8 bytes (bytes.translate is ~7x faster than a regex substitution, and no other byte is one)
    cjk = 0 if text.isascii() else len(text) - len(CJK.sub("", text))
    data = text.encode("utf-8")
    latin = len(data) - len(data.translate(None, ASCII_LETTERS))
    if cjk + latin == 0:
        return "other"
    share = cjk / (cjk + latin / 4)  # a CJK character carries roughly a word, a Latin word ~4 letters
    return "zh" if share >= 0.7 else "en" if share <= 0.3 else "mixed"


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text).casefold()


def answer_flags(record: dict) -> list[str]:
    """Problems with a record's answers (too short, echoing the prompt, in another language) and, as information
    (`INFO_FLAGS`), answers extracted from the prompt: copying spans or values out of it is what extraction is."""
    raw_answer, raw_prompt = answer_text(record), prompt_text(record)
    answer, prompt = _fold(raw_answer), _fold(raw_prompt)
    squashed, prompt_squashed = NOT_ALNUM.sub("", answer), NOT_ALNUM.sub("", prompt)
    structured = _structured(raw_answer)
    flags = []
    if len(squashed) < MIN_ANSWER_CHARS:
        flags.append("short_answer")
    elif (
        _echoes(WHITESPACE.sub("", answer), WHITESPACE.sub("", prompt))
        if structured
        else _echoes(squashed, prompt_squashed)
    ):
        flags.append("answer_repeats_prompt")
    elif _extracted(raw_answer, answer, squashed, prompt, prompt_squashed):
        flags.append("answer_extracted_from_prompt")
    if not structured:  # JSON or code answers have no language of their own
        asked, answered = language(raw_prompt), language(raw_answer)
        if asked in {"zh", "en"} and answered in {"zh", "en"} and asked != answered:
            flags.append("answer_in_other_language")
    return flags


def _echoes(answer: str, prompt: str) -> bool:
    """The answer reproduces the prompt, or most of it, instead of answering it.

    Plain answers are compared without punctuation and spaces, structured ones (JSON, code) without spaces only:
    JSON built from "Name: Lisa Chen; City: Boston" has the prompt's very letters, but restructured, not echoed.
    """
    if not prompt:
        return False
    if answer == prompt:
        return True
    if prompt in answer:  # the whole prompt, and it is most of the answer
        return len(prompt) >= CONTAINED_SHARE * len(answer)
    return answer in prompt and len(answer) >= ECHO_SHARE * len(prompt)  # nearly the whole prompt


def _extracted(raw_answer: str, answer: str, squashed: str, prompt: str, prompt_squashed: str) -> bool:
    """The answer is a span of the prompt, or made of its words (for JSON: at least `EXTRACTED_SHARE` of the words
    of its values; keys, booleans and nulls are structure). Set operations and C-level splits, no character loops."""
    if squashed in prompt_squashed:
        return True
    values = json_values(raw_answer)
    if values is None and not all(word in prompt_squashed for word in NOT_ALNUM.split(answer, QUICK_WORDS)[:-1]):
        return False  # a text answer must use only the prompt's words: most fail on their first few (cheap)
    words = set(NOT_ALNUM.split(_fold(values) if values is not None else answer))
    words.discard("")
    if not words:
        return False
    missing = words - set(NOT_ALNUM.split(prompt))
    allowed = len(words) * (1 - EXTRACTED_SHARE) if values is not None else 0
    if len(missing) <= allowed:
        return True
    if not CJK.search(" ".join(missing)):
        return False
    # unspaced scripts: a Chinese word is a substring of the prompt, not one of its space-separated words (a number
    # is not: "5" inside "45" was not taken from the prompt)
    return sum(1 for word in missing if not CJK.search(word) or word not in prompt_squashed) <= allowed


def json_values(text: str) -> str | None:
    """The strings and numbers of a JSON object or array answer (code fences allowed), joined; None if not JSON."""
    text = FENCE.sub("", text.strip())
    if not text.startswith(("{", "[")):
        return None
    try:
        stack = [json.loads(text)]
    except (ValueError, RecursionError):  # not JSON, or nested beyond the parser's depth
        return None
    leaves = []
    while stack:
        node = stack.pop()
        if isinstance(node, dict | list):
            stack.extend(node.values() if isinstance(node, dict) else node)
        elif isinstance(node, str | int | float) and not isinstance(node, bool):
            leaves.append(str(node))
    return " ".join(leaves)


def _structured(text: str) -> bool:
    stripped = text.strip()
    return stripped.startswith(("{", "[", "```", "<")) or stripped.endswith(("}", "]", "```"))


def template_overhead(tokenizer) -> int:
    """Tokens the chat template adds per message (role headers, end markers), measured on a two-message chat."""
    messages = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    total = len(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    content = sum(len(tokenizer(m["content"], add_special_tokens=False)["input_ids"]) for m in messages)
    return max(0, round((total - content) / len(messages)))


def token_lengths(records: list[dict], tokenizer) -> list[dict[str, int]]:
    """For each record: estimated total tokens and tokens before its first answer begins."""
    overhead = template_overhead(tokenizer)
    counts = iter(_content_lengths(records, tokenizer))
    lengths = []
    for record in records:
        total, before_answer = 0, None
        for message in record["messages"]:
            if message["role"] == "assistant" and before_answer is None:
                before_answer = total + overhead
            total += next(counts) + overhead
        lengths.append({"total": total, "before_answer": before_answer if before_answer is not None else total})
    return lengths


def _content_lengths(records: list[dict], tokenizer, chunk: int = 4096) -> list[int]:
    """Token counts of every message content, tokenized in batches (fast) but a chunk at a time (bounded memory)."""
    contents = [m["content"] for r in records for m in r["messages"]]
    # The Rust backend's encode_batch_fast skips offsets and Python-side BatchEncoding objects: 3x faster and flat in
    # memory on 100k records (the tokenizer call grew to 3.8 GB there).
    backend = getattr(tokenizer, "backend_tokenizer", None)
    counts: list[int] = []
    for start in range(0, len(contents), chunk):
        batch = contents[start : start + chunk]
        if backend is not None and hasattr(backend, "encode_batch_fast"):
            counts += [len(e.ids) for e in backend.encode_batch_fast(batch, add_special_tokens=False)]
        else:
            counts += [len(ids) for ids in tokenizer(batch, add_special_tokens=False)["input_ids"]]
    return counts


def length_summary(lengths: list[dict[str, int]], max_length: int | None) -> dict[str, Any]:
    totals = [item["total"] for item in lengths]
    if not totals:
        return {"count": 0}
    ordered = sorted(totals)
    summary: dict[str, Any] = {
        "count": len(totals),
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max": ordered[-1],
    }
    if max_length:
        truncated = sum(1 for t in totals if t > max_length)
        summary |= {
            "max_length": max_length,
            "truncated": truncated,
            "truncated_share": truncated / len(totals),
            "answer_cut_off": sum(1 for item in lengths if item["before_answer"] >= max_length),
        }
    return summary


def turns(record: dict) -> int:
    return sum(1 for m in record["messages"] if m["role"] == "assistant")
