#!/usr/bin/env python3
"""A deliberately broken Sora endpoint: a proxy in front of a real one that bends its answers in one way.

Used to prove that `sora-shim conformance` fails an endpoint that is almost, but not quite, Sora-compatible.

    UPSTREAM=http://127.0.0.1:8080 MUTATION=fifth_status python3 tests/fakes/mutating_proxy.py [--port 0]

MUTATION is one of:
  fifth_status     a video whose status is `in_progress` is reported as `processing` (not one of the four)
  drop_expires_at  every video object loses its `expires_at` field
  bare_errors      every error answer is `{"message": ...}` instead of the `{"error": {...}}` envelope

Prints `listening on http://127.0.0.1:PORT` once, like the fakes. Python standard library only.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MUTATIONS = ("fifth_status", "drop_expires_at", "bare_errors")
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "trailer", "upgrade"}


def bend_video(obj: dict, mutation: str) -> None:
    if obj.get("object") != "video":
        return
    if mutation == "fifth_status" and obj.get("status") == "in_progress":
        obj["status"] = "processing"
    if mutation == "drop_expires_at":
        obj.pop("expires_at", None)


def bend(status: int, body: bytes, mutation: str) -> bytes:
    try:
        doc = json.loads(body)
    except ValueError:
        return body
    if not isinstance(doc, dict):
        return body
    if mutation == "bare_errors" and status >= 400 and isinstance(doc.get("error"), dict):
        return json.dumps({"message": doc["error"].get("message", "error")}).encode()
    bend_video(doc, mutation)
    for item in doc.get("data", []) if isinstance(doc.get("data"), list) else []:
        if isinstance(item, dict):
            bend_video(item, mutation)
    return json.dumps(doc).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    upstream: urllib.parse.SplitResult
    mutation: str

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        sys.stderr.write("proxy: " + (format % args) + "\n")

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "host"}
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=120)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            out_headers = [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP]
            status = resp.status
        finally:
            conn.close()
        if any(k.lower() == "content-type" and v.startswith("application/json") for k, v in out_headers):
            data = bend(status, data, self.mutation)
        self.send_response(status)
        for k, v in out_headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_DELETE = do_HEAD = do_PUT = do_PATCH = _forward


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--key", default=None, help="ignored (the fakes' harness passes one)")
    args = parser.parse_args()
    mutation = os.environ.get("MUTATION", "")
    upstream = os.environ.get("UPSTREAM", "")
    if mutation not in MUTATIONS or not upstream.startswith("http://"):
        sys.stderr.write(f"set UPSTREAM=http://… and MUTATION to one of {', '.join(MUTATIONS)}\n")
        return 2
    Handler.upstream = urllib.parse.urlsplit(upstream)
    Handler.mutation = mutation
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
