#!/usr/bin/env python3
"""Fake moderation endpoint in the shape of OpenAI's Moderations API (POST /v1/moderations), for the prompt
policies' `endpoint` (src/moderation.rs). Standard library only.

  request:  {"model": "omni-moderation-latest", "input": "<text>"} with `Authorization: Bearer <key>`
  answer:   {"id": "modr-…", "model": "…", "results": [{"flagged": bool, "categories": {name: bool},
             "category_scores": {name: float}}]}
  errors:   401 {"error": {...}} for a wrong key; 400 for a body without `input`.

A prompt is flagged when it contains a word from FLAGGED (category `violence`). The marker `[fake:down]` in the
input makes the fake answer 503 (an outage, for `on_error`). GET /__control/stats counts the calls.
Prints `listening on http://127.0.0.1:PORT` once, like the other fakes. Reference:
https://platform.openai.com/docs/api-reference/moderations/create
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

FLAGGED = ("massacre", "bloodshed")
CATEGORIES = ("harassment", "hate", "self-harm", "sexual", "violence")


class Handler(BaseHTTPRequestHandler):
    server_version = "fake-moderation/1"

    def log_message(self, fmt: str, *args) -> None:  # stderr, one line per request
        sys.stderr.write("fake moderation: " + (fmt % args) + "\n")

    def answer(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/__control/stats":
            self.answer(200, {"calls": self.server.calls})  # type: ignore[attr-defined]
        else:
            self.answer(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length)
        if self.path != "/v1/moderations":
            return self.answer(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
        if self.headers.get("authorization") != f"Bearer {self.server.key}":  # type: ignore[attr-defined]
            return self.answer(401, {"error": {"message": "Incorrect API key provided.",
                                               "type": "invalid_request_error", "code": "invalid_api_key"}})
        try:
            body = json.loads(raw)
            text = body["input"]
        except (ValueError, KeyError, TypeError):
            return self.answer(400, {"error": {"message": "'input' is a required property",
                                               "type": "invalid_request_error", "param": "input"}})
        self.server.calls += 1  # type: ignore[attr-defined]
        if "[fake:down]" in text:
            return self.answer(503, {"error": {"message": "The server is overloaded.", "type": "server_error"}})
        hit = any(word in text.lower() for word in FLAGGED)
        categories = {c: (hit and c == "violence") for c in CATEGORIES}
        scores = {c: (0.97 if categories[c] else 0.001) for c in CATEGORIES}
        self.answer(200, {
            "id": f"modr-{uuid.uuid4().hex[:24]}",
            "model": body.get("model") or "omni-moderation-latest",
            "results": [{"flagged": hit, "categories": categories, "category_scores": scores}],
        })


def main() -> int:
    parser = argparse.ArgumentParser(description="fake OpenAI Moderations endpoint")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--key", default="test-key")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.key = args.key  # type: ignore[attr-defined]
    server.calls = 0  # type: ignore[attr-defined]
    import signal
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever(poll_interval=0.2)
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
