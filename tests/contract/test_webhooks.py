"""Webhooks, checked with the official SDK: a `video.completed` and a `video.failed` event from the shim verify
with `client.webhooks.unwrap(...)` exactly as OpenAI's did, and a tampered or stale one does not.

Runs its own shim (the session shim has no webhook endpoint) on the local backend, with a receiver on loopback.
Skipped when SORA_SHIM_URL points at an external shim.
"""
from __future__ import annotations

import base64
import json
import os
import queue
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import openai
import pytest

import backends
from support import REPO, create_and_poll, new_key

SECRET = "whsec_" + base64.b64encode(b"sora-shim contract webhook secret").decode()


class _Receiver(BaseHTTPRequestHandler):
    got: "queue.Queue[tuple[bytes, dict]]"

    def log_message(self, fmt, *args):  # quiet
        pass

    def do_POST(self):  # noqa: N802
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        type(self).got.put((body, {k.lower(): v for k, v in self.headers.items()}))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()


@pytest.fixture(scope="module")
def webhook_shim(tmp_path_factory):
    if os.environ.get("SORA_SHIM_URL"):
        pytest.skip("needs a shim this test configures")
    if backends.BACKEND != "local":
        pytest.skip("webhooks do not depend on the backend: checked once, in the local run")
    handler = type("Receiver", (_Receiver,), {"got": queue.Queue()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tmp = tmp_path_factory.mktemp("webhooks")
    config = tmp / "sora-shim.toml"
    config.write_text(f"""
[server]
poll_after_ms = 100
[backends.local]
kind = "local"
fps = 8
[webhooks.receiver]
url = "http://127.0.0.1:{server.server_address[1]}/openai-webhooks"
secret_env = "CONTRACT_WEBHOOK_SECRET"
[moderation.house]
words = ["forbidden"]
[models."sora-2"]
backend = "local"
moderation = "house"
sizes = ["720x1280", "1280x720"]
seconds = ["4"]
""")
    binary = Path(os.environ.get("SORA_SHIM_BIN", REPO / "target" / "debug" / "sora-shim"))
    stderr = open(tmp / "shim.stderr.log", "wb")
    proc = subprocess.Popen(
        [str(binary), "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp / "data"), "--config", str(config)],
        stdout=subprocess.PIPE, stderr=stderr, stdin=subprocess.DEVNULL,
        env={**os.environ, "CONTRACT_WEBHOOK_SECRET": SECRET},
    )
    try:
        url = backends._listening_on(proc, "sora-shim", 60)
        yield url, handler.got
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        stderr.close()
        server.shutdown()


def _next_event(got: "queue.Queue[tuple[bytes, dict]]", timeout: float = 60) -> tuple[bytes, dict]:
    try:
        return got.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"no webhook delivery within {timeout}s") from None


def test_events_verify_with_the_official_sdk(webhook_shim):
    url, got = webhook_shim
    client = openai.OpenAI(base_url=url + "/v1", api_key=new_key("webhooks"), max_retries=0)
    video = create_and_poll(client, model="sora-2", prompt="a red fox", seconds="4")
    assert video.status == "completed"
    body, headers = _next_event(got)
    event = client.webhooks.unwrap(body.decode(), headers, secret=SECRET)
    assert event.type == "video.completed"
    assert event.data.id == video.id
    assert event.object == "event"
    assert event.id.startswith("evt_")
    # verify_signature alone, and the same check failing for a tampered body or another secret.
    client.webhooks.verify_signature(body.decode(), headers, secret=SECRET)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.unwrap(body.decode().replace(video.id, "video_other"), headers, secret=SECRET)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        other = "whsec_" + base64.b64encode(b"someone else").decode()
        client.webhooks.unwrap(body.decode(), headers, secret=other)
    stale = dict(headers, **{"webhook-timestamp": str(int(time.time()) - 3600)})
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.verify_signature(body.decode(), stale, secret=SECRET)


def test_a_failed_video_sends_video_failed(webhook_shim):
    url, got = webhook_shim
    client = openai.OpenAI(base_url=url + "/v1", api_key=new_key("webhooks"), max_retries=0)
    video = client.videos.create(model="sora-2", prompt="something forbidden", seconds="4")
    body, headers = _next_event(got)
    event = client.webhooks.unwrap(body.decode(), headers, secret=SECRET)
    assert event.type == "video.failed"
    assert event.data.id == video.id
    assert json.loads(body)["data"] == {"id": video.id}
    assert client.videos.retrieve(video.id).error.code == "moderation_blocked"
