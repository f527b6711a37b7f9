"""A local OpenAI-compatible chat endpoint that plays a judge with a known position bias, for tests.

It reads the two answers out of tunelab's judge prompt. An answer containing GOOD beats one that does not; when
both are alike it always prefers the answer shown first (pure position bias). Modes: "judge" (that behaviour),
"first" (always [[A]]), "garbage" (never a verdict), "error" (HTTP 500), "empty" (no choices).
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ANSWER = re.compile(r"\[Answer of assistant ([AB])\]\n(.*?)\n\[End of the answer of assistant \1\]", re.DOTALL)


def verdict(prompt: str, mode: str) -> str:
    if mode == "first":
        return "The first one reads better.\n[[A]]"
    if mode == "garbage":
        return "Both answers have merits; I cannot decide."
    answers = dict(ANSWER.findall(prompt))
    good = {letter for letter, text in answers.items() if "GOOD" in text}
    choice = good.pop() if len(good) == 1 else "A"  # alike: position bias towards the first
    return f"Assistant {choice} is better.\n[[{choice}]]"


class JudgeServer:
    def __init__(self, mode: str = "judge"):
        self.mode = mode
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(body)
                if server.mode == "error":
                    self._send(500, {"error": {"message": "judge exploded", "type": "server_error"}})
                    return
                text = verdict(body["messages"][-1]["content"], server.mode)
                choices = [] if server.mode == "empty" else [
                    {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}
                ]  # fmt: skip
                self._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                                 "choices": choices})  # fmt: skip

            def _send(self, status: int, payload: dict):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> JudgeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
