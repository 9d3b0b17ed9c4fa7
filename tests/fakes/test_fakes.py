"""Self-test of the fake provider servers in this directory (stdlib + pytest only).

Run: python -m pytest tests/fakes/test_fakes.py   (needs ffmpeg and ffprobe on PATH)

Each fake is started as a subprocess on port 0. For every fake the test drives one job to success and
checks the MP4 with ffprobe, then expires it; drives one job to a moderation failure; checks auth
rejection; injects a 429 with Retry-After on create and a connection reset on poll. Then protocol details
per fake (validation, control API, cancel, ...).
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
import time
import zlib
from pathlib import Path
from typing import Any, Optional
from urllib.parse import quote, urlsplit

import pytest

HERE = Path(__file__).resolve().parent
WORKFLOW = HERE.parent.parent / "mappings" / "comfyui" / "wan-t2v.json"
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


FAKES = ["openai_videos", "runway", "replicate", "fal", "veo_gemini", "seedance", "comfyui"]


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


class SeedanceDriver(Driver):
    auth = {"Authorization": f"Bearer {KEY}"}
    terminal = {"succeeded", "failed", "cancelled", "expired"}
    states = ["queued", "running", "succeeded"]
    expired_status = 403

    def create(self, f, prompt, headers=None):
        return f.json("POST", "/api/v3/contents/generations/tasks",
                      body={"model": "seedance-1-5-pro-251215", "content": [{"type": "text", "text": prompt}],
                            "resolution": "720p", "ratio": "16:9", "duration": 4, "watermark": False},
                      headers=headers or self.auth)

    def ref(self, body):
        assert body["id"].startswith("cgt-") and list(body) == ["id"]
        return body["id"]

    def poll(self, f, ref):
        return f.json("GET", f"/api/v3/contents/generations/tasks/{ref}", headers=self.auth)

    def state(self, body):
        assert ("content" in body) == (body["status"] == "succeeded")
        return body["status"]

    def output(self, f, ref, body):
        assert body["usage"]["completion_tokens"] > 0 and body["error"] is None
        return body["content"]["video_url"], {}

    def check_moderated(self, create_status, body):
        assert body["status"] == "failed" and body["error"]["code"] == "OutputVideoSensitiveContentDetected"

    def check_bad_auth(self, status, body):
        assert status == 401 and body["error"]["code"] == "AuthenticationError"
        assert body["error"]["type"] == "Unauthorized" and "Request id: " in body["error"]["message"]


def comfy_workflow(prompt: str, width: int = 1280, height: int = 704, length: int = 97) -> dict:
    wf = json.loads(WORKFLOW.read_text())
    wf["6"]["inputs"]["text"] = prompt
    wf["55"]["inputs"].update(width=width, height=height, length=length)
    return wf


class ComfyUIDriver(Driver):
    auth: dict = {}  # ComfyUI has no auth
    terminal = {"success", "error"}
    states = ["pending", "pending", "success"]  # /history is {} while queued and while running
    expected = (1280, 704, 97 / 24)
    expired_status = 404

    def create(self, f, prompt, headers=None):
        status, h, raw = f.request("POST", "/prompt", body={"prompt": comfy_workflow(prompt), "client_id": "test"},
                                   headers=headers or self.auth)
        body = json.loads(raw) if h.get("content-type", "").startswith("application/json") else raw.decode()
        return status, h, body

    def ref(self, body):
        assert body["node_errors"] == {} and isinstance(body["number"], (int, float))
        self._ref = body["prompt_id"]
        return body["prompt_id"]

    def poll(self, f, ref):
        return f.json("GET", f"/history/{ref}", headers=self.auth)

    def state(self, body):
        if body == {}:
            return "pending"
        (entry,) = body.values()
        return entry["status"]["status_str"]

    def output(self, f, ref, body):
        entry = body[ref]
        assert entry["status"]["completed"] is True and entry["prompt"][1] == ref
        out = entry["outputs"]["58"]
        assert out["animated"] == [True]  # core SaveVideo reports its file under "images"
        file = out["images"][0]
        assert file["subfolder"] == "video" and file["filename"].endswith("_.mp4") and file["type"] == "output"
        return f"/view?filename={quote(file['filename'])}&subfolder={quote(file['subfolder'])}&type=output", {}

    def check_moderated(self, create_status, body):
        # ComfyUI has no moderation: the job fails like any other, with an execution_error
        (entry,) = body.values()
        assert entry["status"]["status_str"] == "error" and entry["outputs"] == {}
        assert [m[0] for m in entry["status"]["messages"]][-1] == "execution_error"

    def check_bad_auth(self, status, body):
        assert (status, body) == (401, "401: Unauthorized")


DRIVERS = {"openai_videos": OpenAIDriver(), "runway": RunwayDriver(), "replicate": ReplicateDriver(),
           "fal": FalDriver(), "veo_gemini": VeoDriver(), "seedance": SeedanceDriver(), "comfyui": ComfyUIDriver()}
CREATED = {"openai_videos": 200, "runway": 200, "replicate": 201, "fal": 200, "veo_gemini": 200, "seedance": 200,
           "comfyui": 200}


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
    if fake.name == "comfyui":  # no auth of its own: a token-checking proxy in front
        fake.plan({"comfyui_auth": True})
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


@pytest.mark.parametrize("fake", ["openai_videos", "runway"], indirect=True)
def test_rate_limit_rps(fake: Fake):
    d = DRIVERS[fake.name]
    fake.plan({"rate_limit_rps": 3})
    answers = [d.create(fake, f"burst {i}")[0] for i in range(5)]
    assert answers[:3] == [CREATED[fake.name]] * 3 and answers[3:] == [429, 429], answers
    stats = fake.stats()
    assert stats["rate_limited"] == 2 and stats["peak_rps"] == 3 and len(stats["jobs"]) == 3
    time.sleep(1.05)
    assert d.create(fake, "after the window")[0] == CREATED[fake.name]


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


def test_seedance_protocol(fakes, tmp_path):
    f = fakes["seedance"]
    f.reset()
    tasks = "/api/v3/contents/generations/tasks"
    auth = SeedanceDriver.auth

    def create(body):
        return f.json("POST", tasks, body=body, headers=auth)

    text = [{"type": "text", "text": "a fox"}]
    # validation: the Ark error envelope with code, param and a request id
    status, _, body = create({"model": "seedance-1-5-pro-251215", "content": text, "duration": 2})
    assert status == 400 and body["error"]["code"] == "InvalidParameter" and body["error"]["param"] == "duration"
    assert body["error"]["type"] == "BadRequest" and "Request id: " in body["error"]["message"]
    status, _, body = create({"model": "seedance-1-5-pro-251215"})
    assert status == 400 and (body["error"]["code"], body["error"]["param"]) == ("MissingParameter", "content")
    status, _, body = create({"model": "no-such-model", "content": text})
    assert status == 404 and body["error"]["code"] == "InvalidEndpointOrModel.NotFound"
    status, _, body = create({"model": "dreamina-seedance-2-0-fast-260128", "content": text, "resolution": "1080p"})
    assert status == 400 and body["error"]["param"] == "resolution"
    # 1.x text commands (no fields): 1.0 pro's own 720p 9:16 size; Volcengine's doubao- id is accepted
    status, _, body = create({"model": "doubao-seedance-1-0-pro-250528",
                              "content": [{"type": "text", "text": "a fox --rs 720p --rt 9:16 --dur 5 --cf false"}]})
    assert status == 200, body
    task = f.json("GET", f"{tasks}/{body['id']}", headers=auth)[2]
    assert (task["resolution"], task["ratio"], task["duration"]) == ("720p", "9:16", 5)
    details = f.stats()["job_details"][body["id"]]
    assert (details["width"], details["height"], details["seconds"]) == (704, 1248, 5)
    # an image as the first frame (data URI)
    img = "data:image/png;base64," + base64.b64encode(png_bytes()).decode()
    status, _, body = create({"model": "seedance-1-5-pro-251215", "ratio": "16:9",
                              "content": text + [{"type": "image_url", "image_url": {"url": img},
                                                  "role": "first_frame"}]})
    assert status == 200, body
    status, _, body = create({"model": "seedance-1-5-pro-251215",
                              "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]})
    assert status == 400 and body["error"]["code"] == "InvalidParameter"
    # moderation at create: no task is made
    f.reset()
    f.plan({"seedance_moderation_stage": "input"})
    status, _, body = create({"model": "seedance-1-5-pro-251215",
                              "content": [{"type": "text", "text": "flagged [fake:moderated]"}]})
    assert status == 400 and body["error"]["code"] == "InputTextSensitiveContentDetected"
    assert f.stats()["jobs"] == {}
    # fail / expired
    f.plan({"outcome": "fail", "steps": 1})
    tid = create({"model": "seedance-1-5-pro-251215", "content": text})[2]["id"]
    task = f.json("GET", f"{tasks}/{tid}", headers=auth)[2]
    assert task["status"] == "failed" and task["error"]["code"] == "InternalServiceError"
    f.plan({"outcome": "fail", "steps": 1, "seedance_failure": "expired"})
    tid = create({"model": "seedance-1-5-pro-251215", "content": text})[2]["id"]
    assert f.json("GET", f"{tasks}/{tid}", headers=auth)[2]["status"] == "expired"
    # cancel: a queued task is cancelled, a running one refused, a finished one deleted
    f.plan({"steps": 3})
    queued = create({"model": "seedance-1-5-pro-251215", "content": text})[2]["id"]
    assert f.json("DELETE", f"{tasks}/{queued}", headers=auth)[:1] == (200,)
    assert f.json("GET", f"{tasks}/{queued}", headers=auth)[2]["status"] == "cancelled"
    running = create({"model": "seedance-1-5-pro-251215", "content": text})[2]["id"]
    f.json("GET", f"{tasks}/{running}", headers=auth)
    f.json("GET", f"{tasks}/{running}", headers=auth)
    assert f.json("DELETE", f"{tasks}/{running}", headers=auth)[0] == 400
    assert f.json("DELETE", f"{tasks}/{tid}", headers=auth)[0] == 200
    assert f.json("GET", f"{tasks}/{tid}", headers=auth)[0] == 404
    listing = f.json("GET", f"{tasks}?page_num=1&page_size=10&filter.status=cancelled", headers=auth)[2]
    assert listing["total"] == 1 and listing["items"][0]["id"] == queued
    # return_last_frame: a PNG next to the video, same signed-URL rules
    f.plan({"steps": 1})
    tid = create({"model": "seedance-1-5-pro-251215", "content": text, "return_last_frame": True,
                  "duration": 4, "resolution": "480p"})[2]["id"]
    task = f.json("GET", f"{tasks}/{tid}", headers=auth)[2]
    assert task["content"]["video_url"] == f.json("GET", f"{tasks}/{tid}", headers=auth)[2]["content"]["video_url"]
    status, h, png = f.request("GET", task["content"]["last_frame_url"])
    assert status == 200 and h["content-type"] == "image/png" and png.startswith(b"\x89PNG")
    # signed URLs: tampering is refused
    assert f.request("GET", task["content"]["video_url"].split("?")[0])[0] == 403


def test_comfyui_protocol(fakes):
    f = fakes["comfyui"]
    f.reset()

    def post(body, path="/prompt"):
        return f.json("POST", path, body=body)

    # validation errors: ComfyUI's error object plus node_errors by node id
    wf = comfy_workflow("x")
    wf["37"]["inputs"]["unet_name"] = "missing.safetensors"
    del wf["6"]["inputs"]["text"]
    wf["55"]["inputs"]["width"] = 8
    wf["3"]["inputs"]["negative"] = ["39", 0]  # a VAE where CONDITIONING belongs
    status, _, body = post({"prompt": wf})
    assert status == 400 and body["error"]["type"] == "prompt_outputs_failed_validation"
    errs = {nid: [e["type"] for e in v["errors"]] for nid, v in body["node_errors"].items()}
    assert errs == {"37": ["value_not_in_list"], "6": ["required_input_missing"], "55": ["value_smaller_than_min"],
                    "3": ["return_type_mismatch"]}
    assert all(v["dependent_outputs"] == ["58"] for v in body["node_errors"].values())
    assert body["node_errors"]["37"]["class_type"] == "UNETLoader"
    status, _, body = post({"client_id": "x"})
    assert (status, body["error"]["type"], body["node_errors"]) == (400, "no_prompt", {})
    status, _, body = post({"prompt": {"1": {"class_type": "NoSuchNode", "inputs": {}}}})
    assert status == 400 and body["error"]["type"] == "missing_node_type"
    wf = comfy_workflow("x")
    del wf["58"]
    assert post({"prompt": wf})[2]["error"]["type"] == "prompt_no_outputs"
    status, _, raw = f.request("POST", "/prompt", raw=b"{not json", headers={"Content-Type": "application/json"})
    assert status == 500 and raw.startswith(b"500 Internal Server Error")
    # a client prompt_id is used as given; /api prefix; queue and history
    f.plan({"steps": 3})
    status, _, body = post({"prompt": comfy_workflow("a fox"), "prompt_id": "my-id-1", "client_id": "c"},
                           "/api/prompt")
    assert status == 200 and body["prompt_id"] == "my-id-1"
    queue = f.json("GET", "/queue")[2]
    assert [i[1] for i in queue["queue_pending"]] == ["my-id-1"] and queue["queue_running"] == []
    assert f.json("GET", "/prompt")[2] == {"exec_info": {"queue_remaining": 1}}
    assert f.json("GET", "/history/my-id-1")[2] == {}
    assert f.json("GET", "/history/my-id-1")[2] == {}
    assert [i[1] for i in f.json("GET", "/queue")[2]["queue_running"]] == ["my-id-1"]
    entry = f.json("GET", "/history/my-id-1")[2]["my-id-1"]
    assert entry["prompt"][3]["client_id"] == "c" and entry["status"]["status_str"] == "success"
    assert [m[0] for m in entry["status"]["messages"]] == ["execution_start", "execution_cached",
                                                           "execution_success"]
    assert "my-id-1" in f.json("GET", "/history?max_items=5")[2]
    # /view refuses paths outside the output directory
    assert f.request("GET", "/view?filename=../secret.txt&type=output")[0] == 400
    assert f.request("GET", "/view?filename=x.mp4&subfolder=../..&type=output")[0] == 403
    assert f.request("GET", "/view?filename=nope.mp4&subfolder=video&type=output")[0] == 404
    # pending prompts can be deleted from the queue (and never reach the history); a running one interrupted
    pending = post({"prompt": comfy_workflow("later")})[2]["prompt_id"]
    assert f.request("POST", "/queue", body={"delete": [pending]})[0] == 200
    assert f.json("GET", "/history/" + pending)[2] == {} and f.json("GET", "/queue")[2]["queue_pending"] == []
    running = post({"prompt": comfy_workflow("run")})[2]["prompt_id"]
    f.json("GET", "/history/" + running)
    f.json("GET", "/history/" + running)
    assert f.request("POST", "/interrupt", body={"prompt_id": "someone-else"})[0] == 200
    assert f.json("GET", "/queue")[2]["queue_running"] != []
    assert f.request("POST", "/interrupt", body={"prompt_id": running})[0] == 200
    entry = f.json("GET", "/history/" + running)[2][running]
    assert entry["status"]["status_str"] == "error" and entry["status"]["messages"][-1][0] == "execution_interrupted"
    # VHS_VideoCombine reports its file under "gifs"; fps from frame_rate
    wf = comfy_workflow("vhs", width=832, height=480, length=33)
    del wf["57"]
    wf["58"] = {"class_type": "VHS_VideoCombine",
                "inputs": {"images": ["8", 0], "frame_rate": 16, "loop_count": 0, "filename_prefix": "wan/clip",
                           "format": "video/h264-mp4", "pingpong": False, "save_output": True}}
    f.plan({"steps": 1})
    pid = post({"prompt": wf})[2]["prompt_id"]
    gif = f.json("GET", "/history/" + pid)[2][pid]["outputs"]["58"]["gifs"][0]
    assert (gif["subfolder"], gif["type"], gif["format"]) == ("wan", "output", "video/h264-mp4")
    assert gif["filename"].startswith("clip_") and gif["filename"].endswith(".mp4")
    details = f.stats()["job_details"][pid]
    assert (details["width"], details["height"], details["seconds"]) == (832, 480, 33 / 16)
    status, h, _ = f.request("HEAD", f"/view?filename={gif['filename']}&subfolder=wan&type=output")
    assert status == 200 and h["content-type"] == "video/mp4"
