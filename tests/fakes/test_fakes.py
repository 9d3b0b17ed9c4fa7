"""Self-test of the fake provider servers in this directory (stdlib + pytest only).

Run: python -m pytest tests/fakes/test_fakes.py   (needs ffmpeg and ffprobe on PATH)

Each fake is started as a subprocess on port 0. For every fake the test drives one job to success and
checks the MP4 with ffprobe, then expires it; drives one job to a moderation failure; checks auth
rejection; injects a 429 with Retry-After on create and a connection reset on poll.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import zlib
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

import pytest

HERE = Path(__file__).resolve().parent
KEY = "sekrit-test-key"
STARTUP_S = 15

pytestmark = pytest.mark.skipif(not (shutil.which("ffmpeg") or os.path.exists("/usr/bin/ffmpeg"))
                                or not shutil.which("ffprobe"), reason="needs ffmpeg and ffprobe")


# ---------------------------------------------------------------------------------------------
# Harness
# ---------------------------------------------------------------------------------------------


class Fake:
    def __init__(self, name: str, cache_dir: Path):
        env = dict(os.environ, FAKE_MP4_CACHE=str(cache_dir))
        self.name = name
        self.stderr_path = cache_dir.parent / f"{name}.stderr.log"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([sys.executable, str(HERE / f"{name}.py"), "--port", "0", "--key", KEY],
                                     stdout=subprocess.PIPE, stderr=self._stderr, env=env)
        line: list[bytes] = []
        t = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()), daemon=True)
        t.start()
        t.join(STARTUP_S)
        if not (line and line[0].startswith(b"listening on ")):
            self.proc.kill()
            self.proc.wait()
            self._stderr.close()
        assert line and line[0].startswith(b"listening on http://127.0.0.1:"), f"{name} did not start: {line}"
        self.url = line[0].decode().strip().split(" ", 2)[2]
        self.port = urlsplit(self.url).port

    def request(self, method: str, path: str, *, body: Any = None, headers: Optional[dict] = None,
                raw: Optional[bytes] = None) -> tuple[int, dict, bytes]:
        """(status, lowercased headers, body). `path` may be an absolute URL on this fake."""
        if path.startswith("http"):
            parts = urlsplit(path)
            assert parts.port == self.port, f"URL {path} is not served by this fake"
            path = parts.path + (f"?{parts.query}" if parts.query else "")
        hdrs = dict(headers or {})
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def json(self, method: str, path: str, **kw) -> tuple[int, dict, Any]:
        status, headers, body = self.request(method, path, **kw)
        return status, headers, (json.loads(body) if body else None)

    def plan(self, plan: dict) -> None:
        status, _, body = self.json("POST", "/__control/faults", body=plan)
        assert status == 200, body

    def reset(self) -> None:
        assert self.json("POST", "/__control/reset")[0] == 200

    def stats(self) -> dict:
        return self.json("GET", "/__control/stats")[2]

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(10)
        finally:
            self._stderr.close()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fakes") / "mp4"


FAKES = ["openai_videos", "runway", "replicate", "fal", "veo_gemini"]


@pytest.fixture(scope="session")
def fakes(cache_dir):
    cache_dir.mkdir(parents=True, exist_ok=True)
    started: dict[str, Fake] = {}
    try:
        for name in FAKES:
            started[name] = Fake(name, cache_dir)
    except BaseException:
        for f in started.values():
            f.stop()
        raise
    yield started
    codes = {name: f.stop() for name, f in started.items()}
    assert codes == {name: 0 for name in FAKES}, f"fakes did not exit 0 on SIGTERM: {codes}"


@pytest.fixture
def fake(request, fakes) -> Fake:
    f = fakes[request.param]
    f.reset()
    return f


def ffprobe(data: bytes, tmp_path: Path) -> tuple[int, int, float]:
    p = tmp_path / "out.mp4"
    p.write_bytes(data)
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "stream=width,height,codec_name:format=duration", "-of", "json", str(p)],
                         capture_output=True, check=True, timeout=30).stdout
    info = json.loads(out)
    s = info["streams"][0]
    assert s["codec_name"] == "h264"
    return s["width"], s["height"], float(info["format"]["duration"])


def png_bytes(w: int = 8, h: int = 8) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * w for _ in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", w.to_bytes(4, "big") + h.to_bytes(4, "big") + b"\x08\x02\x00\x00\x00")
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def multipart(fields: dict, files: dict) -> tuple[bytes, str]:
    boundary = "----fakeboundary7MA4YWxkTrZu0gW"
    out = b""
    for k, v in fields.items():
        out += f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
    for k, (fname, ctype, data) in files.items():
        out += (f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{fname}"\r\n'
                f"Content-Type: {ctype}\r\n\r\n").encode() + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return out, f"multipart/form-data; boundary={boundary}"


# ---------------------------------------------------------------------------------------------
# Per-provider drivers: how to create, poll, read the state and find the output
# ---------------------------------------------------------------------------------------------


class Driver:
    auth: dict = {}
    terminal: set = set()
    expected = (1280, 720, 4.0)
    expired_status = 404

    def create(self, f: Fake, prompt: str, headers: Optional[dict] = None): ...
    def ref(self, body) -> str: ...
    def poll(self, f: Fake, ref: str): ...
    def state(self, body) -> str: ...
    def output(self, f: Fake, ref: str, body) -> tuple[str, dict]: ...


class OpenAIDriver(Driver):
    auth = {"Authorization": f"Bearer {KEY}"}
    terminal = {"completed", "failed"}
    states = ["queued", "in_progress", "completed"]

    def create(self, f, prompt, headers=None):
        return f.json("POST", "/v1/videos", body={"prompt": prompt, "model": "wan2.2", "seconds": "4",
                                                  "size": "1280x720"}, headers=headers or self.auth)

    def ref(self, body):
        return body["id"]

    def poll(self, f, ref):
        return f.json("GET", f"/v1/videos/{ref}", headers=self.auth)

    def state(self, body):
        return body["status"]

    def output(self, f, ref, body):
        return f"/v1/videos/{ref}/content?variant=video", self.auth

    def check_moderated(self, create_status, body):
        assert body["status"] == "failed" and body["error"]["code"] == "moderation_blocked"

    def check_bad_auth(self, status, body):
        assert (status, body) == (401, {"error": "Unauthorized"})


class RunwayDriver(Driver):
    auth = {"Authorization": f"Bearer {KEY}", "X-Runway-Version": "2024-11-06"}
    terminal = {"SUCCEEDED", "FAILED", "CANCELLED"}
    states = ["PENDING", "RUNNING", "SUCCEEDED"]
    expired_status = 403

    def create(self, f, prompt, headers=None):
        return f.json("POST", "/v1/text_to_video", body={"model": "gen4.5", "promptText": prompt, "ratio": "1280:720",
                                                         "duration": 4}, headers=headers or self.auth)

    def ref(self, body):
        return body["id"]

    def poll(self, f, ref):
        return f.json("GET", f"/v1/tasks/{ref}", headers=self.auth)

    def state(self, body):
        if body["status"] == "RUNNING":
            assert 0 < body["progress"] < 1
        return body["status"]

    def output(self, f, ref, body):
        return body["output"][0], {}

    def check_moderated(self, create_status, body):
        assert body["status"] == "FAILED" and body["failureCode"] == "SAFETY.INPUT.TEXT" and body["failure"]

    def check_bad_auth(self, status, body):
        assert status == 401 and isinstance(body["error"], str)


class ReplicateDriver(Driver):
    auth = {"Authorization": f"Bearer {KEY}"}
    terminal = {"succeeded", "failed", "canceled"}
    states = ["starting", "processing", "succeeded"]

    def create(self, f, prompt, headers=None):
        status, h, body = f.json("POST", "/v1/models/google/veo-3.1/predictions",
                                 body={"input": {"prompt": prompt, "aspect_ratio": "16:9", "duration": 4,
                                                 "resolution": "720p"}}, headers=headers or self.auth)
        if status == 201:
            assert body["status"] == "starting" and body["urls"]["get"].endswith(body["id"])
        return status, h, body

    def ref(self, body):
        return body["id"]

    def poll(self, f, ref):
        return f.json("GET", f"/v1/predictions/{ref}", headers=self.auth)

    def state(self, body):
        if body["status"] == "processing":
            assert "%|" in body["logs"] and "/100 [" in body["logs"]
        return body["status"]

    def output(self, f, ref, body):
        assert isinstance(body["output"], str)
        return body["output"], {}

    def check_moderated(self, create_status, body):
        assert body["status"] == "failed" and "(E005)" in body["error"] and "flagged as sensitive" in body["error"]

    def check_bad_auth(self, status, body):
        assert status == 401 and body["title"] == "Unauthenticated"


class FalDriver(Driver):
    auth = {"Authorization": f"Key {KEY}"}
    terminal = {"COMPLETED"}
    states = ["IN_QUEUE", "IN_PROGRESS", "COMPLETED"]

    def create(self, f, prompt, headers=None):
        status, h, body = f.json("POST", "/fal-ai/veo3.1/fast", body={"prompt": prompt, "aspect_ratio": "16:9",
                                                                      "duration": "4s", "resolution": "720p"},
                                 headers=headers or self.auth)
        if status == 200:
            # URLs are absolute and leave out the sub-path
            assert body["status_url"] == f"{f.url}/fal-ai/veo3.1/requests/{body['request_id']}/status"
            self._urls = body
        return status, h, body

    def ref(self, body):
        return body["status_url"]

    def poll(self, f, ref):
        status, h, body = f.json("GET", ref + "?logs=1", headers=self.auth)
        assert status == (200 if body["status"] == "COMPLETED" else 202)
        if body["status"] == "IN_PROGRESS":
            assert body["logs"] and body["logs"][-1]["message"]
        return status, h, body

    def state(self, body):
        return body["status"]

    def output(self, f, ref, body):
        status, _, result = f.json("GET", body["response_url"], headers=self.auth)
        assert status == 200 and result["video"]["content_type"] == "video/mp4" and result["video"]["file_size"] > 0
        return result["video"]["url"], {}

    def check_moderated(self, create_status, body):
        assert create_status == 422 and body["detail"][0]["type"] == "content_policy_violation"

    def check_bad_auth(self, status, body):
        assert (status, body) == (401, {"detail": "No user found for Key ID and Secret"})


class VeoDriver(Driver):
    auth = {"x-goog-api-key": KEY}
    terminal = {"done"}
    states = ["running", "running", "done"]  # the operation has no queued/running split
    expired_status = 403

    def create(self, f, prompt, headers=None):
        return f.json("POST", "/v1beta/models/veo-3.1-generate-preview:predictLongRunning",
                      body={"instances": [{"prompt": prompt}],
                            "parameters": {"aspectRatio": "16:9", "resolution": "720p", "durationSeconds": 4}},
                      headers=headers or self.auth)

    def ref(self, body):
        assert body["name"].startswith("models/veo-3.1-generate-preview/operations/")
        return body["name"]

    def poll(self, f, ref):
        return f.json("GET", f"/v1beta/{ref}", headers=self.auth)

    def state(self, body):
        return "done" if body.get("done") else "running"

    def output(self, f, ref, body):
        uri = body["response"]["generateVideoResponse"]["generatedSamples"][0]["video"]["uri"]
        assert uri.endswith(":download?alt=media")
        assert f.request("GET", uri)[0] == 403  # the key is required to download
        return uri, self.auth

    def check_moderated(self, create_status, body):
        gvr = body["response"]["generateVideoResponse"]
        assert "generatedSamples" not in gvr and gvr["raiMediaFilteredCount"] == 1 and gvr["raiMediaFilteredReasons"]

    def check_bad_auth(self, status, body):
        assert status == 400 and body["error"]["status"] == "INVALID_ARGUMENT"
        assert body["error"]["details"][0]["reason"] == "API_KEY_INVALID"


DRIVERS = {"openai_videos": OpenAIDriver(), "runway": RunwayDriver(), "replicate": ReplicateDriver(),
           "fal": FalDriver(), "veo_gemini": VeoDriver()}
CREATED = {"openai_videos": 200, "runway": 200, "replicate": 201, "fal": 200, "veo_gemini": 200}


def run_to_end(d: Driver, f: Fake, ref: str) -> tuple[list, Any]:
    seen = []
    for _ in range(10):
        status, _, body = d.poll(f, ref)
        assert status in (200, 202), body
        seen.append(d.state(body))
        if seen[-1] in d.terminal:
            return seen, body
    raise AssertionError(f"never terminal: {seen}")


# ---------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fake", FAKES, indirect=True)
def test_success_download_and_expiry(fake: Fake, tmp_path):
    d = DRIVERS[fake.name]
    status, _, body = d.create(fake, "a red fox in snow")
    assert status == CREATED[fake.name], body
    ref = d.ref(body)
    seen, final = run_to_end(d, fake, ref)
    assert seen == d.states  # default steps=3: queued, running, terminal
    url, headers = d.output(fake, ref, final)
    status, h, data = fake.request("GET", url, headers=headers)
    assert status == 200 and h["content-type"] == "video/mp4" and int(h["content-length"]) == len(data)
    w, hgt, dur = ffprobe(data, tmp_path)
    assert (w, hgt) == d.expected[:2] and abs(dur - d.expected[2]) < 0.1
    # Range is honoured
    status, h, part = fake.request("GET", url, headers={**headers, "Range": "bytes=0-99"})
    assert status == 206 and part == data[:100]
    # expiry: the same URL (and, for Runway, a freshly minted one) stops working
    fake.plan({"expire_downloads_after_s": 0})
    if fake.name == "runway":
        url = d.output(fake, ref, d.poll(fake, ref)[2])[0]
    assert fake.request("GET", url, headers=headers)[0] == d.expired_status
    stats = fake.stats()
    assert stats["creates"] == 1 and stats["polls"] >= 3 and stats["downloads"] >= 2
    assert list(stats["jobs"].values()) == ["succeeded"]
    assert all(r["headers"].get("authorization") in (None, "Bearer", "Key") for r in stats["requests"])


@pytest.mark.parametrize("fake", FAKES, indirect=True)
def test_moderated(fake: Fake):
    d = DRIVERS[fake.name]
    fake.plan({"outcome": "moderated", "steps": 2})
    status, _, body = d.create(fake, "something the filter blocks")
    if fake.name == "fal":  # fal rejects a flagged prompt at submit
        d.check_moderated(status, body)
        fake.plan({"outcome": "moderated", "fal_moderation_stage": "result", "steps": 2})
        status, _, body = d.create(fake, "flagged later")
        seen, final = run_to_end(d, fake, d.ref(body))
        assert final["error_type"] == "content_policy_violation"
        status, _, result = fake.json("GET", final["response_url"], headers=d.auth)
        assert status == 422 and result["detail"][0]["type"] == "content_policy_violation"
        return
    assert status == CREATED[fake.name]
    seen, final = run_to_end(d, fake, d.ref(body))
    assert len(seen) == 2
    d.check_moderated(status, final)
    assert list(fake.stats()["jobs"].values()) == ["moderated"]


@pytest.mark.parametrize("fake", FAKES, indirect=True)
def test_auth_rejected(fake: Fake):
    d = DRIVERS[fake.name]
    bad = {k: (v.replace(KEY, "wrong-key") if KEY in v else v) for k, v in d.auth.items()}
    status, _, body = d.create(fake, "x", headers=bad)
    d.check_bad_auth(status, body)
    assert fake.stats()["jobs"] == {}


@pytest.mark.parametrize("fake", FAKES, indirect=True)
def test_429_retry_after_then_reset(fake: Fake):
    d = DRIVERS[fake.name]
    fake.plan({"create": {"status": 429, "retry_after": 3, "times": 1}, "poll": {"reset": True, "times": 1}})
    status, headers, body = d.create(fake, "throttled")
    assert status == 429 and headers["retry-after"] == "3", body
    if fake.name == "replicate":
        assert body == {"detail": "Request was throttled. Expected available in 3 seconds."}
    status, _, body = d.create(fake, "accepted")
    assert status == CREATED[fake.name]
    ref = d.ref(body)
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        d.poll(fake, ref)
    seen, _ = run_to_end(d, fake, ref)
    assert seen[-1] in d.terminal
    stats = fake.stats()
    assert stats["creates"] == 2 and len(stats["jobs"]) == 1
    assert [r["status"] for r in stats["requests"] if r["fault"]] == ["429", "reset"]


@pytest.mark.parametrize("fake", ["openai_videos"], indirect=True)
def test_control_api_and_lost_create(fake: Fake):
    status, _, body = fake.json("POST", "/__control/faults", body={"craete": {"status": 500}})
    assert status == 400 and "craete" in body["problems"][0]
    # after_accept: the job exists but the client never hears about it
    fake.plan({"create": {"reset": True, "after_accept": True, "times": 1}})
    with pytest.raises((ConnectionError, http.client.HTTPException)):
        DRIVERS["openai_videos"].create(fake, "lost")
    assert len(fake.stats()["jobs"]) == 1
    # malformed JSON on poll, multipart create with an image, delete
    data, ctype = multipart({"prompt": "with image", "seconds": "4", "size": "720x1280"},
                            {"input_reference": ("ref.png", "image/png", png_bytes())})
    status, _, body = fake.json("POST", "/v1/videos", raw=data, headers={**OpenAIDriver.auth, "Content-Type": ctype})
    assert status == 200 and body["size"] == "720x1280", body
    fake.plan({"poll": {"malformed": True, "times": 1}})
    status, _, raw = fake.request("GET", f"/v1/videos/{body['id']}", headers=OpenAIDriver.auth)
    assert status == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(raw)
    stats = fake.stats()
    logged = [r for r in stats["requests"] if r["method"] == "POST"][-1]
    assert logged["body_json"]["input_reference"]["content_type"] == "image/png"
    assert logged["headers"]["authorization"] == "Bearer"
    status, _, body = fake.json("DELETE", f"/v1/videos/{body['id']}", headers=OpenAIDriver.auth)
    assert body["deleted"] is True and body["object"] == "video.deleted"
    status, _, body = fake.json("GET", f"/v1/videos/{body['id']}", headers=OpenAIDriver.auth)
    assert status == 404 and "error" in body
    # remix: 404 like vLLM-Omni unless the plan turns it on
    fake.plan({"steps": 1})
    src = DRIVERS["openai_videos"].create(fake, "source")[2]["id"]
    assert DRIVERS["openai_videos"].poll(fake, src)[2]["status"] == "completed"
    assert fake.json("POST", f"/v1/videos/{src}/remix", body={"prompt": "again"}, headers=OpenAIDriver.auth)[0] == 404
    fake.plan({"steps": 1, "openai_remix": True})
    status, _, body = fake.json("POST", f"/v1/videos/{src}/remix", body={"prompt": "again"}, headers=OpenAIDriver.auth)
    assert status == 200 and body["remixed_from_video_id"] == src and body["size"] == "1280x720"


def test_validation_errors(fakes):
    f = fakes["runway"]
    status, _, body = f.json("POST", "/v1/text_to_video", body={"model": "gen4.5", "promptText": "x",
                                                                "ratio": "1920:1080", "duration": 12},
                             headers=RunwayDriver.auth)
    assert status == 400 and body["error"] == "Validation of body failed"
    assert {tuple(i["path"]) for i in body["issues"]} == {("ratio",), ("duration",)}
    status, _, body = f.json("POST", "/v1/text_to_video", body={"model": "gen4.5"},
                             headers={"Authorization": f"Bearer {KEY}"})
    assert status == 400 and "X-Runway-Version" in body["error"]

    f = fakes["replicate"]
    status, _, body = f.json("POST", "/v1/models/google/veo-3.1/predictions",
                             body={"input": {"prompt": "x", "duration": 5}}, headers=ReplicateDriver.auth)
    assert status == 422 and body["title"] == "Input validation failed"
    assert body["invalid_fields"][0]["field"] == "input.duration"

    f = fakes["fal"]
    status, h, body = f.json("POST", "/fal-ai/veo3", body={"prompt": "x", "duration": "5s"}, headers=FalDriver.auth)
    assert status == 422 and body["detail"][0]["loc"] == ["body", "duration"] and h["x-fal-retryable"] == "false"

    f = fakes["veo_gemini"]
    status, _, body = f.json("POST", "/v1beta/models/veo-3.1-generate-preview:predictLongRunning",
                             body={"instances": [{"prompt": "x"}], "parameters": {"resolution": "1080p",
                                                                                  "durationSeconds": 4}},
                             headers=VeoDriver.auth)
    assert status == 400 and body["error"]["status"] == "INVALID_ARGUMENT"
    img = base64.b64encode(png_bytes()).decode()
    status, _, body = f.json("POST", "/v1beta/models/veo-3.1-generate-preview:predictLongRunning",
                             body={"instances": [{"prompt": "x", "image": {"bytesBase64Encoded": img,
                                                                           "mimeType": "image/png"}}]},
                             headers=VeoDriver.auth)
    assert status == 200, body
