"""Paraphrase augmentation: more ways of asking for the same thing, each with the original answer.

The instruction (first user message) of each record is rewritten by a local model (`model/paraphrase.py`) or an
OpenAI-compatible endpoint. Originals are kept; a paraphrase is rejected when empty, unchanged, far longer or shorter,
or a duplicate. Generated records carry `"generated": {"by", "from", "method"}` so a split can keep them on their
original's side.
Duplicates are judged on instruction text: on whole records every paraphrase shares its original's answer, so those
with long answers would all look like near-duplicates. The first paraphrase per record is greedy (reproducible);
the k-th (`per_record > 1`) is sampled with seed `seed + k - 1` (endpoints reproduce it only if they honour `seed`).
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tunelab.data.dedup import find_duplicates, normalize
from tunelab.errors import DataError, TunelabError
from tunelab.jsonl import write_jsonl

DEFAULT_PROMPT = """Rewrite the instruction below in different words. It must ask for exactly the same thing: keep \
every name, number, format and constraint, and keep its language. Do not answer it, explain it or add anything.

Instruction:
{instruction}

Reply with only the rewritten instruction."""
PLACEHOLDER = "{instruction}"
LENGTH_RATIO = (0.5, 2.0)  # paraphrase length / original length, in characters
LENGTH_SLACK = 40  # characters a short instruction may grow beyond the ratio ("Please ..." on a 10-character ask)
REJECT_REASONS = ("empty", "unchanged", "length", "duplicate", "error")
MAX_ERROR_SAMPLES = 5

_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’", "«": "»", "`": "`"}
_PREAMBLE = re.compile(r"^(?:sure|certainly|of course|okay|ok)\b[!,.]?\s*", re.IGNORECASE)
_LEAD_IN = re.compile(r"^here(?:'s| is| are)\b[^:\n]*:\s*", re.IGNORECASE)
_LABEL = re.compile(
    r"^(?:paraphrased|rewritten|reworded|new)?\s*(?:paraphrase|instruction|rewrite|prompt)\s*:\s*", re.I
)


@dataclass
class Completion:
    """One model reply; `error` is set (and `text` empty) when the request failed."""

    text: str = ""
    error: str = ""


class Paraphraser(Protocol):
    """Anything that completes prompts; `name` goes into each generated record's `generated.by`."""

    name: str

    def complete(self, prompts: list[str], sample: bool = False, seed: int = 0) -> list[Completion]: ...


@dataclass
class AugmentReport:
    """Where every requested paraphrase went: requested == kept + sum(rejected.values())."""

    by: str
    requested: int = 0
    generated: int = 0  # the paraphraser returned text (requested minus errors)
    kept: int = 0
    rejected: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REJECT_REASONS, 0))
    skipped_records: int = 0  # no user message, or already a generated record
    errors: list[str] = field(default_factory=list)  # the first few distinct request errors

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        rejected = ", ".join(f"{reason} {count}" for reason, count in self.rejected.items() if count) or "none"
        text = f"paraphrases: {self.requested} requested, {self.kept} kept; rejected: {rejected}"
        if self.skipped_records:
            text += f"; {self.skipped_records} records skipped (no user message or already generated)"
        return text + "".join(f"\n  error: {error}" for error in self.errors)


class EndpointParaphraser:
    """An OpenAI-compatible chat endpoint (vLLM, llama.cpp, Ollama, `tunelab serve`, OpenAI) with bounded concurrency.

    The API key is read from the environment variable named by `api_key_env`; without one a placeholder is sent,
    never `OPENAI_API_KEY`, so a real key does not leak to a third-party URL by accident. A failed request becomes a
    `Completion` with an error; only an endpoint that cannot be reached at all stops the run (on the first request).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = None,
        timeout: float = 30,
        max_retries: int = 2,
        concurrency: int = 4,
        max_tokens: int = 256,
        temperature: float = 0.8,
    ):
        from openai import OpenAI

        self.base_url, self.model, self.name = base_url, model, f"{model}@{base_url}"
        self.concurrency, self.max_tokens, self.temperature = max(1, concurrency), max_tokens, temperature
        key = _api_key(api_key_env)
        self.client = OpenAI(base_url=base_url, api_key=key, timeout=timeout, max_retries=max_retries)

    def complete(self, prompts: list[str], sample: bool = False, seed: int = 0) -> list[Completion]:
        if not prompts:
            return []
        first = self._one(prompts[0], sample, seed, probe=True)
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            rest = list(pool.map(lambda prompt: self._one(prompt, sample, seed), prompts[1:]))
        return [first, *rest]

    def _one(self, prompt: str, sample: bool, seed: int, probe: bool = False) -> Completion:
        """One request; the probe (the first, sent alone) stops the run if the server cannot be reached at all."""
        import openai

        try:
            return Completion(text=self._request(prompt, sample, seed))
        except openai.APIConnectionError as error:
            if probe:
                raise TunelabError(
                    f"cannot reach the paraphrase endpoint {self.base_url} ({type(error).__name__}: {error})\n"
                    "  fix: start the server or correct the base URL; it must serve the OpenAI chat completions API "
                    "(e.g. http://127.0.0.1:8000/v1)"
                ) from None
            return Completion(error=_describe(error))
        except Exception as error:  # noqa: BLE001 - one bad reply is counted and reported, it does not end the run
            return Completion(error=_describe(error))

    def _request(self, prompt: str, sample: bool, seed: int) -> str:
        sampling = {"temperature": self.temperature, "seed": seed} if sample else {"temperature": 0.0}
        response = self.client.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": prompt}], max_tokens=self.max_tokens, **sampling
        )
        return _reply_text(response)


def _api_key(env_name: str | None) -> str:
    if not env_name:
        return "not-needed"
    value = os.environ.get(env_name, "").strip()
    if not value:
        raise TunelabError(f"the API key variable {env_name} is not set\n  fix: export {env_name}=<your key>")
    return value


def _reply_text(response: Any) -> str:
    """The message text of a chat completion; anything else is an error, since clients may not validate replies."""
    choices = getattr(response, "choices", None)
    if not isinstance(choices, list) or not choices:
        raise ValueError(f"the reply is not a chat completion (no choices): {str(response)[:120]!r}")
    content = getattr(getattr(choices[0], "message", None), "content", None)
    if not isinstance(content, str):
        raise ValueError(f"the reply has no message text: {str(choices[0])[:120]!r}")
    return content


def _describe(error: Exception) -> str:
    return f"{type(error).__name__}: {str(error)[:200]}"


def load_prompt_template(path: str | Path) -> str:
    """A user's paraphrase prompt; `{instruction}` marks where the instruction goes (other braces are left alone)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise DataError(str(path), f"cannot read the prompt template ({error.strerror})") from None
    check_prompt_template(text, str(path))
    return text


def check_prompt_template(template: str, where: str = "prompt template") -> None:
    if PLACEHOLDER not in template:
        raise DataError(where, f"no {PLACEHOLDER} placeholder", fix=f"put {PLACEHOLDER} where the instruction goes")


def render_prompt(template: str, instruction: str) -> str:
    """Plain replacement rather than str.format, so a template may contain JSON or other braces."""
    return template.replace(PLACEHOLDER, instruction)


def clean_paraphrase(text: str, original: str) -> str:
    """Strip chatter around the rewrite: lead-ins, "Paraphrase:" labels, quotes, and trailing notes.

    Keeps as many paragraphs as the original has (a one-paragraph instruction keeps the first non-empty paragraph).
    """
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text.strip()) if p.strip()]
    if len(paragraphs) > 1 and paragraphs[0].endswith(":") and len(paragraphs[0].split()) <= 12:
        paragraphs = paragraphs[1:]  # "Here is the rewritten instruction:" on its own
    wanted = max(1, len([p for p in re.split(r"\n\s*\n", original.strip()) if p.strip()]))
    result = "\n\n".join(paragraphs[:wanted])
    for pattern in (_PREAMBLE, _LEAD_IN, _LABEL):
        result = pattern.sub("", result, count=1).strip()
    return _strip_quotes(result)


def _strip_quotes(text: str) -> str:
    while len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
        text = text[1:-1].strip()
    return text


def rejection(paraphrase: str, original: str, ratio: tuple[float, float] = LENGTH_RATIO) -> str | None:
    """Why a cleaned paraphrase is unusable ("empty", "unchanged", "length"), or None when it is fine."""
    if not normalize(paraphrase):
        return "empty"
    if normalize(paraphrase) == normalize(original):
        return "unchanged"
    size, base = len(paraphrase), len(original.strip())
    if size < ratio[0] * base or size > max(ratio[1] * base, base + LENGTH_SLACK):
        return "length"
    return None


def instruction_of(record: dict[str, Any]) -> str | None:
    """The first user message's text, which is what gets paraphrased."""
    for message in record.get("messages") or []:
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) and content.strip() else None
    return None


_Candidate = tuple[int, int, str]  # (index of the original record, paraphrase number from 1, text)


def augment_records(
    records: Sequence[dict[str, Any]],
    paraphraser: Paraphraser,
    per_record: int = 1,
    seed: int = 0,
    dedup_threshold: float = 0.8,
    *,
    prompt_template: str = DEFAULT_PROMPT,
    length_ratio: tuple[float, float] = LENGTH_RATIO,
) -> tuple[list[dict[str, Any]], AugmentReport]:
    """Paraphrased copies of `records` (originals are not included) and a report of what happened to each request."""
    if per_record < 1:
        raise TunelabError(f"per_record must be 1 or more, got {per_record}")
    check_prompt_template(prompt_template)
    sources = [(i, text) for i, r in enumerate(records) if not r.get("generated") and (text := instruction_of(r))]
    report = AugmentReport(paraphraser.name, len(sources) * per_record, skipped_records=len(records) - len(sources))
    candidates: list[_Candidate] = []
    for variant in range(1, per_record + 1):
        prompts = [render_prompt(prompt_template, text) for _, text in sources]
        outputs = paraphraser.complete(prompts, sample=variant > 1, seed=seed + variant - 1)
        for (index, original), output in zip(sources, outputs, strict=True):
            candidate = _judge(output, original, length_ratio, report)
            if candidate is not None:
                candidates.append((index, variant, candidate))
    _fail_if_nothing_worked(report)
    kept = _without_duplicates(records, candidates, dedup_threshold)
    report.rejected["duplicate"] = len(candidates) - len(kept)
    report.kept = len(kept)
    return _generated_records(records, kept, paraphraser.name), report


def _judge(output: Completion, original: str, ratio: tuple[float, float], report: AugmentReport) -> str | None:
    """Count the output in the report; return the cleaned paraphrase if it passes the cheap checks."""
    if output.error:
        report.rejected["error"] += 1
        if output.error not in report.errors and len(report.errors) < MAX_ERROR_SAMPLES:
            report.errors.append(output.error)
        return None
    report.generated += 1
    text = clean_paraphrase(output.text, original)
    reason = rejection(text, original, ratio)
    if reason:
        report.rejected[reason] += 1
        return None
    return text


def _fail_if_nothing_worked(report: AugmentReport) -> None:
    if report.requested and report.rejected["error"] == report.requested:
        raise TunelabError(
            f"every paraphrase request to {report.by} failed ({report.requested} of {report.requested}); "
            f"first error: {report.errors[0]}\n"
            "  fix: check the model name and that the endpoint speaks the OpenAI chat completions API"
        )


def _without_duplicates(records: Sequence[dict], candidates: list[_Candidate], threshold: float) -> list[_Candidate]:
    """Drop a paraphrase that duplicates any original instruction, or an earlier paraphrase that was kept."""
    if not candidates:
        return []
    originals = [text for record in records if (text := instruction_of(record))]
    report = find_duplicates(originals + [text for _, _, text in candidates], threshold=threshold)
    links: dict[int, set[int]] = defaultdict(set)
    for group in report.exact_groups:
        for member in group:
            links[member].update(other for other in group if other != member)
    for first, second, _similarity in report.near_pairs:
        links[first].add(second)
        links[second].add(first)
    offset, kept_positions, kept = len(originals), set(), []
    for number, candidate in enumerate(candidates):
        position = offset + number
        if not any(other < offset or other in kept_positions for other in links[position]):
            kept_positions.add(position)
            kept.append(candidate)
    return kept


def _generated_records(records: Sequence[dict], kept: list[_Candidate], by: str) -> list[dict[str, Any]]:
    """Copies of the originals with the new instruction, ids `<id>-para<k>` (k bumped past ids already taken)."""
    used = {str(record.get("id")) for record in records}
    result = []
    for index, number, text in sorted(kept):
        original = records[index]
        while f"{original['id']}-para{number}" in used:
            number += 1
        new_id = f"{original['id']}-para{number}"
        used.add(new_id)
        messages = [dict(message) for message in original["messages"]]
        next(m for m in messages if m.get("role") == "user")["content"] = text  # the first user message
        generated = {"by": by, "from": original["id"], "method": "paraphrase"}
        result.append({**original, "id": new_id, "messages": messages, "generated": generated})
    return result


def augment_file(
    in_path: str | Path,
    out_path: str | Path,
    paraphraser: Paraphraser,
    *,
    overwrite: bool = False,
    prompt_file: str | Path | None = None,
    format: str = "auto",
    **options: Any,
) -> AugmentReport:
    """Write originals + kept paraphrases to `out_path` (JSONL, atomically); the input file is never modified."""
    from tunelab.data.load import load_source

    in_path, out_path = Path(in_path), Path(out_path)
    _check_output(in_path, out_path, overwrite)
    template = load_prompt_template(prompt_file) if prompt_file else DEFAULT_PROMPT
    records = load_source(in_path, format)
    new_records, report = augment_records(records, paraphraser, prompt_template=template, **options)
    write_jsonl(out_path, [*records, *new_records])
    return report


def _check_output(in_path: Path, out_path: Path, overwrite: bool) -> None:
    if out_path.resolve() == in_path.resolve():
        raise DataError(
            str(out_path),
            "the output is the input file; augment never modifies its input",
            fix=f"write to a new file, e.g. {in_path.with_name(in_path.stem + '.augmented.jsonl')}",
        )
    if out_path.exists() and not overwrite:
        raise DataError(str(out_path), "the output file already exists", fix="choose a new path, or pass --overwrite")
