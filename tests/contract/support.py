"""Helpers shared by the contract tests (imported by conftest.py and the test modules)."""

from __future__ import annotations

import asyncio
import functools
import json
import re
import shutil
import struct
import subprocess
import tempfile
import time
import uuid
import zlib
from pathlib import Path
from typing import Any, Iterable, Optional

import openai
import pytest
from jsonschema import Draft202012Validator

from backends import CAPS

REPO = Path(__file__).resolve().parents[2]
SCHEMA_DIR = REPO / "schemas" / "sora"

STATUSES = ("queued", "in_progress", "completed", "failed")
TERMINAL = ("completed", "failed")
MAX_WAIT_S = 120.0  # longest a single video may take to reach a terminal state
POLL_MS = 100
# [server] max_body_bytes in the test config: small so the oversize test is cheap, but a fake provider's MP4s
# (real H.264 test patterns, ~3 MB for 4 s of 720p) must fit when tests upload them back.
MAX_BODY_BYTES = (2 if CAPS.local else 16) * 1024 * 1024

SORA2_SIZES = ("720x1280", "1280x720")
PRO_SIZES = ("720x1280", "1280x720", "1024x1792", "1792x1024", "1080x1920", "1920x1080")
ALL_SECONDS = ("4", "8", "12", "16", "20")


def new_key(tag: str = "") -> str:
    return f"sk-contract-{tag + '-' if tag else ''}{uuid.uuid4().hex}"


# --------------------------------------------------------------------------- schemas


@functools.lru_cache(maxsize=None)
def load_schema(name: str) -> dict:
    return json.loads((SCHEMA_DIR / name).read_text())


@functools.lru_cache(maxsize=None)
def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(load_schema(name))


def schema_errors(instance: Any, name: str) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in sorted(validator(name).iter_errors(instance), key=lambda e: list(map(str, e.path)))
    ]


def assert_valid(instance: Any, name: str) -> Any:
    errs = schema_errors(instance, name)
    if errs:
        pytest.fail(f"body does not match {name}:\n  " + "\n  ".join(errs) + f"\nbody: {_short(instance)}")
    return instance


def assert_invalid(instance: Any, name: str) -> None:
    if not schema_errors(instance, name):
        pytest.fail(f"expected {_short(instance)} to be rejected by {name}")


def _short(obj: Any, limit: int = 2000) -> str:
    s = json.dumps(obj) if not isinstance(obj, str) else obj
    return s if len(s) <= limit else s[:limit] + f"... ({len(s)} chars)"


def response_schema_for(method: str, path: str, status: int) -> Optional[str]:
    """Which response schema applies to a JSON response of the shim (None: not JSON / not checked)."""
    if status >= 400:
        return "error.schema.json"
    if status != 200:
        return None
    parts = [p for p in path.split("/") if p]
    if parts[:1] == ["v1"]:
        parts = parts[1:]
    if parts[:1] != ["videos"]:
        return None
    rest = parts[1:]
    if rest[:1] == ["characters"]:
        return "character.schema.json" if method in ("GET", "POST") and len(rest) <= 2 else None
    if not rest:
        return {"GET": "video_list.schema.json", "POST": "video.schema.json"}.get(method)
    if rest in (["edits"], ["extensions"]) and method == "POST":
        return "video.schema.json"
    if len(rest) == 1:
        return {"GET": "video.schema.json", "DELETE": "video_deleted.schema.json"}.get(method)
    if len(rest) == 2 and rest[1] == "remix" and method == "POST":
        return "video.schema.json"
    return None  # /content is binary


# --------------------------------------------------------------------------- response recorder


class Recorder:
    """httpx/httpx2 response hook: checks x-request-id on every response and validates every
    JSON body against the matching schema. Problems are collected and asserted at fixture
    teardown (and can be asserted earlier with assert_clean())."""

    def __init__(self, label: str = "") -> None:
        self.label = label
        self.entries: list[dict] = []
        self.problems: list[str] = []

    # sync hook (httpx.Client / httpx2.Client)
    def hook(self, response) -> None:
        response.read()
        self._record(response)

    # async hook (httpx.AsyncClient / httpx2.AsyncClient)
    async def ahook(self, response) -> None:
        await response.aread()
        self._record(response)

    def _record(self, response) -> None:
        req = response.request
        method, path = req.method, req.url.path
        where = f"{method} {req.url} -> {response.status_code}"
        rid = response.headers.get("x-request-id")
        if not rid:
            self.problems.append(f"{where}: missing x-request-id")
        body = None
        ctype = response.headers.get("content-type", "")
        if ctype.split(";")[0].strip().lower() == "application/json":
            try:
                body = json.loads(response.content)
            except ValueError as exc:
                self.problems.append(f"{where}: invalid JSON body ({exc})")
        schema = response_schema_for(method, path, response.status_code)
        if schema and body is None and response.status_code == 416:
            schema = None  # Range errors: body format not part of the contract
        if schema:
            if body is None:
                self.problems.append(f"{where}: expected a JSON body for {schema}, got content-type {ctype!r}")
            else:
                for err in schema_errors(body, schema):
                    self.problems.append(f"{where}: {schema}: {err}")
        self.entries.append(
            {"method": method, "path": path, "url": str(req.url), "status": response.status_code,
             "headers": dict(response.headers), "json": body}
        )

    def last_json(self, method: Optional[str] = None, path_suffix: str = "") -> Any:
        for e in reversed(self.entries):
            if (method is None or e["method"] == method) and e["path"].endswith(path_suffix):
                return e["json"]
        raise AssertionError(f"no recorded response for {method} *{path_suffix}")

    def video_snapshots(self, video_id: str) -> list[dict]:
        return [
            e["json"] for e in self.entries
            if e["method"] == "GET" and e["path"].endswith(f"/videos/{video_id}") and e["status"] == 200 and e["json"]
        ]

    def assert_clean(self) -> None:
        if self.problems:
            raise AssertionError(
                f"response contract violations ({self.label}):\n  " + "\n  ".join(self.problems[:50])
            )


def check_status_history(snapshots: Iterable[dict]) -> list[str]:
    """Status only ever one of the 4 values, never goes back from terminal, progress monotonic."""
    statuses, last_progress = [], -1
    for snap in snapshots:
        st = snap["status"]
        assert st in STATUSES, f"unexpected status {st!r}"
        if statuses and statuses[-1] in TERMINAL:
            assert st == statuses[-1], f"status changed after reaching terminal: {statuses} -> {st}"
        assert snap["progress"] >= last_progress, f"progress went backwards: {last_progress} -> {snap['progress']}"
        last_progress = snap["progress"]
        statuses.append(st)
    return statuses


# --------------------------------------------------------------------------- error assertions


def _resp_of(obj):
    return obj.response if isinstance(obj, openai.APIStatusError) else obj


def assert_error(obj, status: int, *, param: Any = ..., code: Any = ..., type_: Any = "invalid_request_error",
                 message_startswith: Optional[str] = None, message: Optional[str] = None,
                 should_retry_false: bool = True) -> dict:
    """Check a non-2xx response (httpx/httpx2 Response or openai.APIStatusError) carries the
    OpenAI error envelope. `...` means "don't check"."""
    resp = _resp_of(obj)
    body_text = resp.text
    assert resp.status_code == status, f"expected HTTP {status}, got {resp.status_code}: {body_text[:1000]}"
    ctype = resp.headers.get("content-type", "")
    assert ctype.startswith("application/json"), f"error content-type {ctype!r}: {body_text[:500]}"
    body = resp.json()
    assert_valid(body, "error.schema.json")
    err = body["error"]
    if type_ is not ...:
        assert err["type"] == type_, f"error.type {err['type']!r} != {type_!r}: {err}"
    if param is not ...:
        assert err["param"] == param, f"error.param {err['param']!r} != {param!r}: {err}"
    if code is not ...:
        assert err["code"] == code, f"error.code {err['code']!r} != {code!r}: {err}"
    if message is not None:
        assert err["message"] == message, f"error.message {err['message']!r} != {message!r}"
    if message_startswith is not None:
        assert err["message"].startswith(message_startswith), f"error.message {err['message']!r}"
    assert err["message"], "empty error message"
    assert resp.headers.get("x-request-id"), "error response without x-request-id"
    if should_retry_false:
        assert resp.headers.get("x-should-retry") == "false", (
            f"non-retryable {status} should carry x-should-retry: false, got {resp.headers.get('x-should-retry')!r}"
        )
    if isinstance(obj, openai.APIStatusError):
        assert obj.request_id == resp.headers.get("x-request-id")
    return err


# --------------------------------------------------------------------------- polling with deadlines


def wait_terminal(client: openai.OpenAI, video_id: str, max_wait: float = MAX_WAIT_S) -> Any:
    """Poll GET /videos/{id} until completed/failed, at most max_wait seconds."""
    deadline = time.monotonic() + max_wait
    while True:
        video = client.videos.retrieve(video_id)
        assert video.status in STATUSES, video.status
        if video.status in TERMINAL:
            return video
        if time.monotonic() > deadline:
            raise TimeoutError(f"video {video_id} still {video.status} ({video.progress}%) after {max_wait}s")
        time.sleep(POLL_MS / 1000)


async def await_terminal(client: openai.AsyncOpenAI, video_id: str, max_wait: float = MAX_WAIT_S) -> Any:
    async def loop():
        while True:
            video = await client.videos.retrieve(video_id)
            assert video.status in STATUSES, video.status
            if video.status in TERMINAL:
                return video
            await asyncio.sleep(POLL_MS / 1000)

    return await asyncio.wait_for(loop(), max_wait)


def create_and_poll(client: openai.OpenAI, *, max_wait: float = MAX_WAIT_S, **kwargs) -> Any:
    """client.videos.create_and_poll with a deadline. The SDK's poll loop has no timeout; it
    sleeps through `self._sleep`, so we shadow that on the resource instance with a sleep
    that raises once the deadline has passed (the SDK itself is not modified)."""
    videos = client.videos
    deadline = time.monotonic() + max_wait
    real_sleep = type(videos)._sleep

    def guarded_sleep(seconds: float) -> None:
        if time.monotonic() + seconds > deadline:
            raise TimeoutError(f"create_and_poll did not reach a terminal status within {max_wait}s")
        real_sleep(videos, seconds)

    videos._sleep = guarded_sleep  # type: ignore[method-assign]
    try:
        return videos.create_and_poll(**kwargs)
    finally:
        del videos._sleep


async def acreate_and_poll(client: openai.AsyncOpenAI, *, max_wait: float = MAX_WAIT_S, **kwargs) -> Any:
    return await asyncio.wait_for(client.videos.create_and_poll(**kwargs), max_wait)


def assert_completed(video: Any) -> None:
    assert video.status == "completed", f"video {video.id} ended {video.status}: {video.error}"
    assert video.progress == 100
    assert video.error is None
    assert isinstance(video.completed_at, int)


# --------------------------------------------------------------------------- media helpers


def png_bytes(width: int, height: int, rgb: tuple[int, int, int] = (40, 120, 200)) -> bytes:
    """A solid-colour 8-bit RGB PNG, written with zlib only."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    row = b"\x00" + bytes(rgb) * width
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(row * height, 9))
        + chunk(b"IEND", b"")
    )


def is_webp(data: bytes) -> bool:
    return len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP"


def is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


def is_mp4(data: bytes) -> bool:
    return len(data) >= 12 and data[4:8] == b"ftyp"


def ffprobe(data: bytes) -> dict:
    """codec/width/height of the first video stream and the container duration."""
    exe = shutil.which("ffprobe")
    if exe is None:
        pytest.fail("ffprobe not found on PATH (install ffmpeg)")
    with tempfile.NamedTemporaryFile(suffix=".mp4") as f:
        f.write(data)
        f.flush()
        out = subprocess.run(
            [exe, "-v", "error", "-select_streams", "v:0",
             "-show_entries", "stream=codec_name,width,height,duration:format=duration,format_name",
             "-of", "json", f.name],
            capture_output=True, text=True, timeout=60,
        )
    assert out.returncode == 0, f"ffprobe failed: {out.stderr}"
    info = json.loads(out.stdout)
    assert info.get("streams"), f"no video stream: {info}"
    s = info["streams"][0]
    duration = float(info.get("format", {}).get("duration") or s.get("duration"))
    return {"codec": s["codec_name"], "width": int(s["width"]), "height": int(s["height"]), "duration": duration,
            "format": info.get("format", {}).get("format_name", "")}


def assert_mp4(data: bytes, size: str, seconds: str, tolerance: float = 0.2) -> dict:
    assert is_mp4(data), f"not an MP4 (first bytes {data[:16]!r})"
    info = ffprobe(data)
    w, h = map(int, size.split("x"))
    assert info["codec"] == "h264", info
    assert (info["width"], info["height"]) == (w, h), info
    assert abs(info["duration"] - float(seconds)) <= tolerance, f"duration {info['duration']} vs {seconds}: {info}"
    return info


PRODUCED_RE = re.compile(r"^(\d+)x(\d+); seconds=(\d+\.\d{3})$")


def assert_video_file(data: bytes, size: str, seconds: str, produced: Optional[str]) -> dict:
    """The downloaded MP4 of a completed video asked for at `size`/`seconds`.

    `produced` is the `x-sora-shim-produced` header of GET /videos/{id}: what the shim measured in the file it
    stored. It must describe this very file. The local backend makes exactly what was asked; a provider may round
    the size or the length (the mapping's policy), but never turns a portrait video into a landscape one."""
    assert produced, "a completed video without an x-sora-shim-produced header"
    m = PRODUCED_RE.match(produced)
    assert m, f"x-sora-shim-produced {produced!r} is not 'WxH; seconds=S.mmm'"
    pw, ph, ps = int(m.group(1)), int(m.group(2)), m.group(3)
    info = assert_mp4(data, f"{pw}x{ph}", ps, tolerance=0.1)
    w, h = map(int, size.split("x"))
    if CAPS.local:
        assert (pw, ph) == (w, h) and abs(float(ps) - float(seconds)) <= 0.2, (produced, size, seconds)
    else:
        assert (pw > ph) == (w > h), f"asked for {size}, the backend produced {pw}x{ph}: orientation changed"
    return info


def assert_downloaded(client: openai.OpenAI, video_id: str, size: str, seconds: str) -> bytes:
    """Downloads a completed video and checks it with assert_video_file."""
    produced = client.videos.with_raw_response.retrieve(video_id).headers.get("x-sora-shim-produced")
    data = client.videos.download_content(video_id).content
    assert_video_file(data, size, seconds, produced)
    return data


def assert_refused_by_backend(exc: Any, param: str) -> dict:
    """The 400 a mapped backend gives for what it cannot do: invalid_request_error naming the param, before any
    job exists."""
    return assert_error(exc, 400, param=param)
