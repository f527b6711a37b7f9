"""Paraphrase augmentation against a scripted OpenAI-compatible server on loopback, and a tiny local model."""

from __future__ import annotations

import copy
import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from helpers import write_jsonl
from tunelab.data.augment import (
    DEFAULT_PROMPT,
    EndpointParaphraser,
    augment_file,
    augment_records,
    clean_paraphrase,
    load_prompt_template,
    rejection,
)
from tunelab.errors import DataError, TunelabError
from tunelab.model.paraphrase import LocalParaphraser

SYNONYMS = {
    "summarise": "condense",
    "quarterly": "three-monthly",
    "report": "document",
    "points": "items",
    "explain": "describe",
    "why": "the reason",
    "write": "compose",
    "short": "brief",
    "poem": "verse",
    "about": "on",
    "list": "name",
    "main": "key",
    "risks": "dangers",
}
GOOD = [
    "Summarise the quarterly sales report in three bullet points",
    "Explain why the sky is blue to a ten year old",
    "Write a short poem about the sea",
]


def fake_paraphrase(instruction: str) -> str:
    """The fake model's deterministic rewrite: "Please" plus word-for-word synonyms."""
    return "Please " + " ".join(SYNONYMS.get(word.lower(), word) for word in instruction.split())


Reply = tuple[int, Any]  # (HTTP status, body: a dict is sent as JSON, bytes as is)


def chat_reply(content: str | None) -> Reply:
    message = {"role": "assistant", "content": content}
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    return 200, {"id": "x", "object": "chat.completion", "created": 0, "model": "fake", "choices": [choice]}


class FakeOpenAI:
    """A chat-completions server on 127.0.0.1 (random port): `script[instruction]` overrides the default rewrite.

    A script entry is a reply or a function of the request body returning one. Requests are recorded, and the
    highest number of requests in flight at once is tracked to check the client's concurrency bound.
    """

    def __init__(self, template: str = DEFAULT_PROMPT, delay: float = 0.0):
        self.template, self.delay = template, delay
        self.script: dict[str, Reply | Callable[[dict], Reply]] = {}
        self.requests: list[dict] = []
        self.headers: list[dict] = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def instruction(self, body: dict) -> str:
        prompt = body["messages"][-1]["content"]
        prefix, suffix = self.template.split("{instruction}")
        assert prompt.startswith(prefix) and prompt.endswith(suffix), prompt
        return prompt[len(prefix) : len(prompt) - len(suffix)]

    def reply(self, body: dict) -> Reply:
        instruction = self.instruction(body)
        entry = self.script.get(instruction)
        if entry is None:
            return chat_reply(fake_paraphrase(instruction))
        return entry(body) if callable(entry) else entry

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.requests.append(body)
                    fake.headers.append({k.lower(): v for k, v in self.headers.items()})
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                try:
                    time.sleep(fake.delay)
                    status, payload = fake.reply(body)
                finally:
                    with fake.lock:
                        fake.in_flight -= 1
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

    def __enter__(self) -> FakeOpenAI:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def record(rid: str, instruction: str, answer: str = "An answer.", **extra: Any) -> dict[str, Any]:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": instruction}]
    return {"id": rid, "messages": [*messages, {"role": "assistant", "content": answer}], **extra}


def paraphraser(fake: FakeOpenAI, **kw: Any) -> EndpointParaphraser:
    return EndpointParaphraser(fake.url, "fake-model", max_retries=kw.pop("max_retries", 0), **kw)


def accounted(report) -> bool:
    return report.requested == report.kept + sum(report.rejected.values())


def test_clean_paraphrase_strips_chatter_quotes_and_notes():
    original = "Write a short poem about the sea"
    chatty = 'Sure! Here is the rewritten instruction:\n\n"Compose a brief verse on the sea"\n\nNote: I kept the topic.'
    assert clean_paraphrase(chatty, original) == "Compose a brief verse on the sea"
    assert clean_paraphrase("Paraphrase: “Compose a verse”", original) == "Compose a verse"
    assert clean_paraphrase("Rewritten instruction: Compose a verse", original) == "Compose a verse"
    two = "First paragraph.\n\nSecond paragraph."
    assert clean_paraphrase("New first.\n\nNew second.\n\nA note.", two) == "New first.\n\nNew second."
    assert clean_paraphrase("It's 'fine' as is", original) == "It's 'fine' as is"


def test_rejection_reasons():
    original = "Write a short poem about the sea"
    assert rejection("", original) == "empty"
    assert rejection("  ...  ", original) == "empty"
    assert rejection("write a SHORT poem about the sea!", original) == "unchanged"
    assert rejection("Poem.", original) == "length"
    assert rejection("Compose " * 20, original) == "length"
    assert rejection("Compose a brief verse on the sea", original) is None
    assert rejection("Please say hello to everyone in the room", "Greet all") is None  # slack for short asks


def test_prompt_file_needs_the_placeholder_and_keeps_other_braces(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("Rewrite this please", encoding="utf-8")
    with pytest.raises(DataError, match=r"\{instruction\}"):
        load_prompt_template(bad)
    good = tmp_path / "good.txt"
    good.write_text('Reply as {"text": ...}. Rewrite: {instruction}', encoding="utf-8")
    assert load_prompt_template(good).endswith("{instruction}")


def test_endpoint_augment_counts_every_outcome(fake):
    records = [record(f"ok{i}", text) for i, text in enumerate(GOOD)]
    records += [
        record("garbage", "Describe the garbage reply"),
        record("notjson", "Describe the broken reply"),
        record("err", "Describe the failing reply"),
        record("empty", "Describe the empty reply"),
        record("echo", "Describe the echoed reply"),
        record("long", "Describe the long reply"),
        record("near", "Describe a near duplicate reply"),
        record("chatty", "List the main risks of the project plan"),
        {"id": "nouser", "messages": [{"role": "assistant", "content": "Hi"}]},
    ]
    fake.script.update(
        {
            "Describe the garbage reply": (200, {"unexpected": True}),
            "Describe the broken reply": (200, b"<html>oops</html>"),
            "Describe the failing reply": (500, {"error": {"message": "boom"}}),
            "Describe the empty reply": chat_reply("   "),
            "Describe the echoed reply": chat_reply('"Describe the echoed reply."'),
            "Describe the long reply": chat_reply("Describe, in great detail and at length, " * 5),
            "Describe a near duplicate reply": chat_reply("Write a short poem about the sea."),
            "List the main risks of the project plan": chat_reply(
                "Here is the paraphrase:\n\nName the key dangers of the project plan.\n\nHope this helps!"
            ),
        }
    )
    before = copy.deepcopy(records)
    new, report = augment_records(records, paraphraser(fake, concurrency=3))

    assert records == before  # originals are never modified
    assert report.requested == 11 and report.skipped_records == 1
    assert report.rejected == {"empty": 1, "unchanged": 1, "length": 1, "duplicate": 1, "error": 3}
    assert report.generated == 8 and report.kept == 4 and accounted(report)
    assert len(report.errors) == 3 and any("boom" in e or "500" in e for e in report.errors)
    assert [r["id"] for r in new] == ["ok0-para1", "ok1-para1", "ok2-para1", "chatty-para1"]
    assert new[0]["messages"][1]["content"] == fake_paraphrase(GOOD[0])
    assert new[3]["messages"][1]["content"] == "Name the key dangers of the project plan."
    for generated in new:
        source = next(r for r in records if r["id"] == generated["generated"]["from"])
        assert generated["generated"] == {"by": f"fake-model@{fake.url}", "from": source["id"], "method": "paraphrase"}
        assert generated["messages"][0] == source["messages"][0]  # system prompt and answer kept
        assert generated["messages"][2] == source["messages"][2]
    assert all(body["temperature"] == 0.0 and "seed" not in body for body in fake.requests)


def test_sampled_variants_differ_and_duplicate_variants_are_dropped(fake):
    records = [record("a", GOOD[0]), record("b", GOOD[2])]
    variants = {GOOD[0]: "Give a three-point bulleted summary of the sales figures for this quarter"}
    fake.script[GOOD[0]] = lambda body: chat_reply(
        variants[GOOD[0]] if "seed" in body else fake_paraphrase(GOOD[0])
    )  # "b" gives the same rewrite every time, so its second variant duplicates its first
    new, report = augment_records(records, paraphraser(fake), per_record=2, seed=7)

    assert [r["id"] for r in new] == ["a-para1", "a-para2", "b-para1"]
    assert new[1]["messages"][1]["content"] == variants[GOOD[0]]
    assert report.requested == 4 and report.kept == 3 and report.rejected["duplicate"] == 1 and accounted(report)
    seeds = sorted(body["seed"] for body in fake.requests if "seed" in body)
    assert seeds == [8, 8] and all(body["temperature"] > 0 for body in fake.requests if "seed" in body)


def test_augmenting_an_augmented_set_skips_generated_records_and_keeps_ids_unique(fake):
    records = [record("a", GOOD[0])]
    first, _ = augment_records(records, paraphraser(fake))
    fake.script[GOOD[0]] = chat_reply("Condense this quarter's sales document into three bullets")
    second, report = augment_records(records + first, paraphraser(fake))

    assert report.skipped_records == 1 and report.requested == 1
    assert [r["id"] for r in second] == ["a-para2"]


def test_every_request_failing_is_a_clear_error(fake):
    records = [record(f"r{i}", text) for i, text in enumerate(GOOD)]
    for text in GOOD:
        fake.script[text] = (200, {"unexpected": True})
    with pytest.raises(TunelabError, match="every paraphrase request .* failed"):
        augment_records(records, paraphraser(fake))


def test_endpoint_down_is_a_clear_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed when the block ends: nothing listens there
    down = EndpointParaphraser(f"http://127.0.0.1:{port}/v1", "fake-model", max_retries=0, timeout=5)
    with pytest.raises(TunelabError, match=f"cannot reach the paraphrase endpoint .*{port}"):
        augment_records([record("a", GOOD[0])], down)


def test_retries_concurrency_and_api_key(monkeypatch):
    with FakeOpenAI(delay=0.2) as fake:
        fake.script["Describe the failing reply"] = (500, {"error": {"message": "boom"}})
        records = [record(f"r{i}", f"{text}, case {i}") for i, text in enumerate(GOOD * 3)]
        records.append(record("err", "Describe the failing reply"))
        monkeypatch.setenv("FAKE_KEY", "sk-test-123")
        endpoint = paraphraser(fake, concurrency=2, max_retries=1, api_key_env="FAKE_KEY")
        _, report = augment_records(records, endpoint)

    assert report.rejected["error"] == 1 and accounted(report)
    assert len(fake.requests) == len(records) + 1  # the 500 was retried once
    assert fake.max_in_flight == 2
    assert all(h.get("authorization") == "Bearer sk-test-123" for h in fake.headers)
    monkeypatch.delenv("FAKE_KEY")
    with pytest.raises(TunelabError, match="FAKE_KEY is not set"):
        EndpointParaphraser(fake.url, "fake-model", api_key_env="FAKE_KEY")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_augment_file_writes_originals_and_kept_paraphrases_and_never_touches_the_input(fake, tmp_path):
    source = write_jsonl(tmp_path / "train.jsonl", [record(f"r{i}", text) for i, text in enumerate(GOOD)])
    digest = sha256(source)
    out = tmp_path / "out" / "train.aug.jsonl"
    report = augment_file(source, out, paraphraser(fake))

    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == ["r0", "r1", "r2", "r0-para1", "r1-para1", "r2-para1"]
    assert report.kept == 3 and all("generated" in r for r in rows[3:]) and not any("generated" in r for r in rows[:3])
    assert sha256(source) == digest
    with pytest.raises(DataError, match="never modifies its input"):
        augment_file(source, tmp_path / "." / "train.jsonl", paraphraser(fake))
    with pytest.raises(DataError, match="already exists"):
        augment_file(source, out, paraphraser(fake))
    out_digest = sha256(out)
    augment_file(source, out, paraphraser(fake), overwrite=True)
    assert sha256(out) == out_digest and sha256(source) == digest
    assert not list(out.parent.glob(".*tmp*"))  # no temp file left behind


def test_augment_file_uses_the_prompt_file(tmp_path):
    template = "Say this another way, reply with the new wording only: {instruction}"
    prompt = tmp_path / "prompt.txt"
    prompt.write_text(template, encoding="utf-8")
    source = write_jsonl(tmp_path / "train.jsonl", [record("r0", GOOD[1])])
    with FakeOpenAI(template=template) as fake:
        report = augment_file(source, tmp_path / "out.jsonl", paraphraser(fake), prompt_file=prompt)
    assert report.kept == 1
    assert fake.requests[0]["messages"][-1]["content"] == template.replace("{instruction}", GOOD[1])


def test_local_paraphraser_runs_end_to_end_and_accounts_for_every_item(tiny_model_dir):
    local = LocalParaphraser(str(tiny_model_dir), max_new_tokens=12, batch_size=2)
    records = [record(f"r{i}", text) for i, text in enumerate(GOOD)]
    new, report = augment_records(records, local, per_record=2, seed=3)

    assert report.requested == 6 and report.rejected["error"] == 0 and accounted(report)
    assert report.generated == 6 and len(new) == report.kept
    assert all(r["generated"]["by"] == str(tiny_model_dir) for r in new)
    prompts = ["Rewrite: hello there", "Rewrite: a longer prompt than the first one"]
    sampled = local.complete(prompts, sample=True, seed=5)
    assert sampled == local.complete(prompts, sample=True, seed=5)  # a seed reproduces sampled output
    assert local.complete(prompts) == local.complete(prompts)  # greedy is deterministic
