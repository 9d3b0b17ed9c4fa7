"""Shared core of the fake video-provider servers (Python 3.11 standard library only).

Every fake is `python3 tests/fakes/<name>.py [--port 0] [--key SECRET]`. On start it prints exactly
one line to stdout, `listening on http://127.0.0.1:PORT`, flushes, and serves until SIGTERM/SIGINT
(exit code 0). Logs go to stderr. See README.md in this directory for the protocols and the control API.

What lives here:
  * the HTTP server (ThreadingHTTPServer, HTTP/1.1 keep-alive, chunked request bodies, HEAD, Range);
  * the control API under /__control/ (faults, reset, stats) - never behind auth;
  * the fault plan (per-category faults with `times`, outcome, steps, download expiry);
  * the job state machine every fake maps onto its own state names;
  * the MP4 generator (ffmpeg testsrc2, cached on disk by width, height and seconds).

A provider fake subclasses `FakeProvider`, declares `routes()`, `check_auth()` and `fault_body()`,
and calls `main(MyFake)`.
"""

from __future__ import annotations

import argparse
import base64
import collections
import email.parser
import email.policy
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional
from urllib.parse import parse_qs, urlsplit

# ---------------------------------------------------------------------------------------------
# Fault plan
# ---------------------------------------------------------------------------------------------

#: Request categories a fault can target. Each route of a fake belongs to at most one of them.
FAULT_CATEGORIES = ("create", "poll", "result", "download", "cancel")
#: Counter name in /__control/stats for each category.
COUNTER_NAMES = {"create": "creates", "poll": "polls", "result": "results", "download": "downloads", "cancel": "cancels"}
OUTCOMES = ("succeed", "fail", "moderated")
FAULT_KEYS = {
    "status": "HTTP status to answer instead of the real response",
    "retry_after": "seconds, sent as the Retry-After header",
    "body": "raw text, or JSON, to answer instead of the provider's own error body for `status`",
    "headers": "extra response headers (object)",
    "delay_ms": "sleep this long before answering (alone: a slow but otherwise normal answer)",
    "reset": "close the socket without answering (TCP RST)",
    "malformed": "answer 200 with invalid JSON (downloads: 200 with bytes that are not an MP4)",
    "truncate": "downloads: send the headers and half the body, then reset the connection",
    "trickle_ms": "downloads: sleep this long between 64 KiB chunks",
    "times": "how many matching requests the fault applies to (default: unlimited)",
    "after_accept": "do the real work first (e.g. accept the job), then answer with the fault",
}
CORE_PLAN_KEYS = {
    **{c: "FAULT" for c in FAULT_CATEGORIES},
    "outcome": "succeed | fail | moderated (jobs created from now on)",
    "steps": "polls a job takes from queued through running to its terminal state (default 3)",
    "expire_downloads_after_s": "output URLs stop working this many seconds after the job completed",
    "error_code": "override the provider failure code used for outcome=fail",
    "error_message": "override the provider failure message used for outcome=fail",
    "rate_limit_rps": "answer 429 (the provider's own body, Retry-After: 1) to API calls beyond this many in any "
                      "one-second window; downloads are not limited. Counted in stats.rate_limited",
}
DEFAULT_STEPS = 3

#: Prompt markers that override the plan's outcome for one job, e.g. "a cat [fake:moderated]".
PROMPT_OUTCOME_RE = re.compile(r"\[fake:(succeed|fail|moderated)\]")
PROMPT_STEPS_RE = re.compile(r"\[fake:steps=([1-9][0-9]{0,3})\]")


def validate_plan(plan: Any, extra_keys: dict[str, str]) -> list[str]:
    """Return a list of problems with a fault plan (empty if it is valid)."""
    if not isinstance(plan, dict):
        return ["the fault plan must be a JSON object"]
    problems = []
    known = {**CORE_PLAN_KEYS, **extra_keys}
    for key, value in plan.items():
        if key not in known:
            problems.append(f"unknown plan key {key!r} (known: {', '.join(sorted(known))})")
        elif key in FAULT_CATEGORIES:
            if not isinstance(value, dict):
                problems.append(f"{key}: a FAULT must be an object")
                continue
            for fk, fv in value.items():
                if fk not in FAULT_KEYS:
                    problems.append(f"{key}.{fk}: unknown fault key (known: {', '.join(sorted(FAULT_KEYS))})")
            if "status" in value and not (isinstance(value["status"], int) and 100 <= value["status"] <= 599):
                problems.append(f"{key}.status must be an HTTP status code")
            if "times" in value and not (isinstance(value["times"], int) and value["times"] >= 0):
                problems.append(f"{key}.times must be a non-negative integer")
            for num in ("delay_ms", "trickle_ms", "retry_after"):
                if num in value and not isinstance(value[num], (int, float)):
                    problems.append(f"{key}.{num} must be a number")
        elif key == "outcome" and value not in OUTCOMES:
            problems.append(f"outcome must be one of {', '.join(OUTCOMES)}")
        elif key == "steps" and not (isinstance(value, int) and value >= 1):
            problems.append("steps must be an integer >= 1")
        elif key == "expire_downloads_after_s" and not (isinstance(value, (int, float)) and value >= 0):
            problems.append("expire_downloads_after_s must be a number >= 0")
        elif key == "rate_limit_rps" and not (isinstance(value, int) and value >= 1):
            problems.append("rate_limit_rps must be an integer >= 1")
    return problems


def fault_preempts(fault: Optional[dict]) -> bool:
    return bool(fault) and bool(fault.get("reset") or fault.get("malformed") or fault.get("status"))


# ---------------------------------------------------------------------------------------------
# Jobs
# ---------------------------------------------------------------------------------------------

TERMINAL = ("succeeded", "failed", "moderated", "canceled")


class Job:
    """Generic job: queued -> running -> succeeded | failed | moderated (| canceled).

    Poll k (1-based) of a job sees: k == 1 queued; 1 < k < steps running with progress
    (k-1)/(steps-1); k >= steps terminal. steps == 1 means terminal at the first poll.
    Each fake maps `phase` to its own state names.
    """

    def __init__(self, job_id: str, *, width: int, height: int, seconds: float, outcome: str, steps: int,
                 prompt: str = "", data: Optional[dict] = None):
        self.id = job_id
        self.width = int(width)
        self.height = int(height)
        self.seconds = seconds
        self.outcome = outcome
        self.steps = max(1, int(steps))
        self.prompt = prompt
        self.data: dict = data or {}
        self.polls = 0
        self.phase = "queued"
        self.progress = 0.0
        self.created_at = time.time()
        self.started_at: Optional[float] = None
        self.completed_at: Optional[float] = None
        self.deleted = False

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL

    def advance(self) -> None:
        """One poll."""
        if self.terminal:
            return
        self.polls += 1
        if self.polls >= self.steps:
            self.finish()
        elif self.polls == 1:
            self.phase = "queued"
        else:
            self.phase = "running"
            self.started_at = self.started_at or time.time()
            self.progress = (self.polls - 1) / (self.steps - 1)

    def finish(self) -> None:
        if self.terminal:
            return
        self.phase = {"succeed": "succeeded", "fail": "failed", "moderated": "moderated"}[self.outcome]
        now = time.time()
        self.started_at = self.started_at or now
        self.completed_at = now
        if self.phase == "succeeded":
            self.progress = 1.0

    def cancel(self) -> bool:
        """Cancel if not terminal; returns True if it was cancelled."""
        if self.terminal:
            return False
        self.phase = "canceled"
        self.completed_at = time.time()
        return True

    def summary(self) -> dict:
        return {
            "phase": "deleted" if self.deleted else self.phase,
            "polls": self.polls,
            "steps": self.steps,
            "outcome": self.outcome,
            "progress": round(self.progress, 4),
            "width": self.width,
            "height": self.height,
            "seconds": self.seconds,
        }


class Store:
    """All mutable state of one fake: fault plan, jobs, counters, request log."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.reset()

    def reset(self) -> None:
        with getattr(self, "lock", threading.RLock()):
            self.plan: dict = {}
            self.remaining: dict[str, Optional[int]] = {}
            self.jobs: dict[str, Job] = {}
            self.counters = {name: 0 for name in COUNTER_NAMES.values()}
            self.requests: collections.deque = collections.deque(maxlen=200)
            self.files: dict[str, dict] = {}
            self.recent_calls: collections.deque = collections.deque()
            self.rate_limited = 0
            self.peak_rps = 0
            self.peak_unfinished = 0

    def set_plan(self, plan: dict) -> None:
        with self.lock:
            self.plan = json.loads(json.dumps(plan))
            self.remaining = {}
            for cat in FAULT_CATEGORIES:
                if cat in self.plan:
                    self.remaining[cat] = self.plan[cat].get("times")

    def take_fault(self, category: Optional[str]) -> Optional[dict]:
        """The fault for this request, if the plan has one left for `category` (consumes one `times`)."""
        if category is None:
            return None
        with self.lock:
            if category != "download" and self.over_rate_limit():
                self.rate_limited += 1
                return {"status": 429, "retry_after": 1}
            fault = self.plan.get(category)
            if not fault:
                return None
            left = self.remaining.get(category)
            if left is None:
                return fault
            if left <= 0:
                return None
            self.remaining[category] = left - 1
            return fault

    def over_rate_limit(self) -> bool:
        """Sliding one-second window over API calls; refused calls do not count (as providers meter them)."""
        now = time.monotonic()
        calls = self.recent_calls
        while calls and calls[0] <= now - 1.0:
            calls.popleft()
        limit = self.plan.get("rate_limit_rps")
        if limit is not None and len(calls) >= limit:
            return True
        calls.append(now)
        self.peak_rps = max(self.peak_rps, len(calls))
        return False

    def count(self, category: Optional[str]) -> None:
        if category is None:
            return
        with self.lock:
            self.counters[COUNTER_NAMES[category]] += 1

    def new_job_settings(self, prompt: str = "") -> tuple[str, int]:
        """(outcome, steps) for a job created now; [fake:OUTCOME] and [fake:steps=N] prompt markers win over the plan."""
        with self.lock:
            outcome = self.plan.get("outcome", "succeed")
            steps = self.plan.get("steps", DEFAULT_STEPS)
        m = PROMPT_OUTCOME_RE.search(prompt or "")
        if m:
            outcome = m.group(1)
        m = PROMPT_STEPS_RE.search(prompt or "")
        if m:
            steps = int(m.group(1))
        return outcome, steps

    def add_job(self, job: Job) -> Job:
        with self.lock:
            self.jobs[job.id] = job
            # Jobs this provider holds unfinished at once (what a client's max_concurrent bounds).
            unfinished = sum(1 for j in self.jobs.values() if not j.terminal and not j.deleted)
            self.peak_unfinished = max(self.peak_unfinished, unfinished)
        return job

    def get_job(self, job_id: str, *, include_deleted: bool = False) -> Optional[Job]:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None or (job.deleted and not include_deleted):
                return None
            return job

    def expire_after(self) -> Optional[float]:
        with self.lock:
            return self.plan.get("expire_downloads_after_s")

    def is_expired(self, since: Optional[float]) -> bool:
        """True if an output issued/completed at `since` has expired under the current plan."""
        limit = self.expire_after()
        if limit is None or since is None:
            return False
        return time.time() - since >= limit

    def plan_value(self, key: str, default: Any = None) -> Any:
        with self.lock:
            return self.plan.get(key, default)

    def record(self, entry: dict) -> None:
        with self.lock:
            self.requests.append(entry)

    def stats(self) -> dict:
        with self.lock:
            out: dict = dict(self.counters)
            out["rate_limited"] = self.rate_limited
            out["peak_rps"] = self.peak_rps
            out["peak_unfinished"] = self.peak_unfinished
            out["jobs"] = {jid: ("deleted" if j.deleted else j.phase) for jid, j in self.jobs.items()}
            out["job_details"] = {jid: j.summary() for jid, j in self.jobs.items()}
            out["requests"] = list(self.requests)
            return out


# ---------------------------------------------------------------------------------------------
# MP4 generation
# ---------------------------------------------------------------------------------------------

_mp4_locks: dict[tuple, threading.Lock] = {}
_mp4_guard = threading.Lock()


def ffmpeg_bin() -> str:
    return os.environ.get("FFMPEG") or shutil.which("ffmpeg") or "/usr/bin/ffmpeg"


def mp4_cache_dir() -> str:
    d = os.environ.get("FAKE_MP4_CACHE") or os.path.join(tempfile.gettempdir(), "sora-shim-fake-mp4")
    os.makedirs(d, exist_ok=True)
    return d


def fmt_seconds(seconds: float) -> str:
    return "%g" % float(seconds)


def ensure_mp4(width: int, height: int, seconds: float) -> str:
    """Path of a real H.264 MP4 (ffmpeg testsrc2) of this size and length; generated once, then cached.

    The cache is shared by every fake process (atomic rename), so a test run renders each
    (width, height, seconds) once.
    """
    secs = fmt_seconds(seconds)
    path = os.path.join(mp4_cache_dir(), f"testsrc2_{int(width)}x{int(height)}_{secs}s.mp4")
    if os.path.exists(path):
        return path
    key = (int(width), int(height), secs)
    with _mp4_guard:
        lock = _mp4_locks.setdefault(key, threading.Lock())
    with lock:
        if os.path.exists(path):
            return path
        tmp = f"{path}.{os.getpid()}.{threading.get_ident()}.tmp"
        cmd = [
            ffmpeg_bin(), "-nostdin", "-v", "error", "-y",
            "-f", "lavfi", "-i", f"testsrc2=size={int(width)}x{int(height)}:rate=24",
            "-t", secs, "-pix_fmt", "yuv420p", "-c:v", "libx264", "-preset", "ultrafast",
            "-movflags", "+faststart", "-f", "mp4", tmp,
        ]
        started = time.time()
        try:
            proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=600)
        except FileNotFoundError as e:
            raise RuntimeError(f"ffmpeg not found ({cmd[0]}); set FFMPEG or install ffmpeg") from e
        if proc.returncode != 0:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise RuntimeError(f"ffmpeg failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-500:]}")
        os.replace(tmp, path)
        log(f"rendered {os.path.basename(path)} in {time.time() - started:.2f}s")
        return path


def prewarm_mp4(width: int, height: int, seconds: float) -> None:
    """Render in the background so the first download is fast (errors show up at download time)."""

    def run() -> None:
        try:
            ensure_mp4(width, height, seconds)
        except Exception as e:  # noqa: BLE001 - reported again at download
            log(f"prewarm failed: {e}")

    threading.Thread(target=run, daemon=True).start()


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def log(msg: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


def iso_ms(ts: Optional[float]) -> Optional[str]:
    """2024-11-06T12:00:00.123Z"""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(ts * 1000) % 1000:03d}Z"


def iso_us(ts: Optional[float]) -> Optional[str]:
    """2024-11-06T12:00:00.123456Z"""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def image_kind(data: bytes) -> Optional[str]:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    return None


def decode_data_url(url: str) -> Optional[tuple[str, bytes]]:
    """('image/png', bytes) for a base64 data URL, else None."""
    m = re.match(r"^data:([\w.+-]+/[\w.+-]+);base64,(.*)$", url, re.S)
    if not m:
        return None
    try:
        return m.group(1), base64.b64decode(m.group(2), validate=True)
    except ValueError:
        return None


def is_int(v: Any) -> bool:
    """JSON integer (JS semantics: 5.0 is an integer; booleans are not)."""
    if isinstance(v, bool):
        return False
    return isinstance(v, int) or (isinstance(v, float) and v.is_integer())


@dataclass
class UploadedFile:
    filename: str
    content_type: str
    data: bytes

    def summary(self) -> dict:
        return {"filename": self.filename, "content_type": self.content_type, "size": len(self.data)}


def parse_multipart(content_type: str, body: bytes) -> dict[str, list]:
    """multipart/form-data -> {name: [str | UploadedFile, ...]} (the stdlib `email` parser; no `cgi`)."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1")
    msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(head + body)
    if not msg.is_multipart():
        raise ValueError("not a multipart body")
    fields: dict[str, list] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name is None:
            continue
        filename = part.get_filename()
        payload = part.get_payload(decode=True) or b""
        if filename is not None:
            value: Any = UploadedFile(filename, part.get_content_type(), payload)
        else:
            value = payload.decode(part.get_content_charset() or "utf-8", errors="replace")
        fields.setdefault(name, []).append(value)
    return fields


# ---------------------------------------------------------------------------------------------
# Requests, responses, routes
# ---------------------------------------------------------------------------------------------


class BadJSON(Exception):
    pass


class Request:
    def __init__(self, method: str, raw_path: str, headers, body: bytes):
        self.method = method
        self.raw_path = raw_path
        parts = urlsplit(raw_path)
        self.path = parts.path
        self.query_string = parts.query
        self.query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        self.headers = headers  # email.message.Message: case-insensitive get()
        self.body = body
        self.fault: Optional[dict] = None
        self._json: Any = None
        self._json_done = False

    def header(self, name: str, default: Optional[str] = None) -> Optional[str]:
        return self.headers.get(name, default)

    @property
    def content_type(self) -> str:
        return (self.header("Content-Type") or "").split(";")[0].strip().lower()

    def json(self) -> Any:
        """Parsed JSON body; raises BadJSON."""
        if not self._json_done:
            self._json_done = True
            try:
                self._json = json.loads(self.body.decode("utf-8")) if self.body else None
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                self._json = BadJSON(str(e))
        if isinstance(self._json, BadJSON):
            raise self._json
        return self._json

    def body_for_log(self) -> Any:
        ct = self.content_type
        if ct.startswith("multipart/form-data"):
            try:
                fields = parse_multipart(self.header("Content-Type") or "", self.body)
            except Exception:  # noqa: BLE001
                return None
            out = {}
            for k, vals in fields.items():
                conv = [v.summary() if isinstance(v, UploadedFile) else v for v in vals]
                out[k] = conv[0] if len(conv) == 1 else conv
            return out
        if not self.body:
            return None
        try:
            return self.json()
        except BadJSON:
            return None


class Response:
    def __init__(self, status: int = 200, body: bytes | str = b"", content_type: Optional[str] = None,
                 headers: Optional[dict] = None, file_path: Optional[str] = None):
        self.status = status
        self.body = body.encode("utf-8") if isinstance(body, str) else body
        self.content_type = content_type
        self.headers = dict(headers or {})
        self.file_path = file_path  # stream this file (with Range support) instead of body


def json_response(status: int, obj: Any, headers: Optional[dict] = None) -> Response:
    return Response(status, dumps(obj), "application/json", headers)


def empty_response(status: int = 204, headers: Optional[dict] = None) -> Response:
    return Response(status, b"", None, headers)


@dataclass
class Route:
    method: str
    pattern: str
    handler: Callable[..., Response]
    category: Optional[str] = None
    auth: bool = True
    regex: re.Pattern = field(init=False)

    def __post_init__(self) -> None:
        self.regex = re.compile(self.pattern)


# ---------------------------------------------------------------------------------------------
# Provider base class
# ---------------------------------------------------------------------------------------------


class FakeProvider:
    """Base class of a provider fake. Subclasses override the methods marked 'override'."""

    name = "fake"
    #: Provider-specific plan keys (name -> description), validated with the core keys.
    extra_plan_keys: dict[str, str] = {}

    def __init__(self, key: str, base_url: str):
        self.key = key
        self.base_url = base_url
        self.store = Store()
        self._routes = self.routes()

    # -- override ---------------------------------------------------------------------------
    def routes(self) -> list[Route]:
        raise NotImplementedError

    def check_auth(self, req: Request) -> Optional[Response]:
        """None if the request is authenticated, else the provider's own error response."""
        raise NotImplementedError

    def fault_body(self, status: int, fault: dict, category: Optional[str]) -> Response:
        """The provider's own error response for an injected fault `status`."""
        return json_response(status, {"error": f"injected fault {status}"})

    def not_found(self, req: Request) -> Response:
        return json_response(404, {"error": "Not found"})

    def method_not_allowed(self, req: Request) -> Response:
        return json_response(405, {"error": "Method not allowed"})

    # -- helpers for subclasses ----------------------------------------------------------------
    def url(self, path: str) -> str:
        return self.base_url + path

    def serve_video(self, req: Request, job: Job, extra_headers: Optional[dict] = None) -> Response:
        """The job's MP4 as a response (rendered on demand; Range/HEAD/trickle/truncate handled by the server)."""
        try:
            path = ensure_mp4(job.width, job.height, job.seconds)
        except Exception as e:  # noqa: BLE001
            log(f"mp4 generation failed: {e}")
            return Response(500, f"fake could not render the video: {e}", "text/plain")
        headers = {"Accept-Ranges": "bytes", **(extra_headers or {})}
        return Response(200, b"", "video/mp4", headers, file_path=path)

    # -- control API --------------------------------------------------------------------------
    def control(self, req: Request) -> Response:
        path = req.path.rstrip("/")
        if path == "/__control/faults" and req.method == "POST":
            try:
                plan = req.json()
            except BadJSON as e:
                return json_response(400, {"error": f"invalid JSON: {e}"})
            if plan is None:
                plan = {}
            problems = validate_plan(plan, self.extra_plan_keys)
            if problems:
                return json_response(400, {"error": "invalid fault plan", "problems": problems})
            self.store.set_plan(plan)
            log(f"fault plan: {json.dumps(plan)}")
            return json_response(200, {"plan": self.store.plan})
        if path == "/__control/faults" and req.method == "GET":
            with self.store.lock:
                return json_response(200, {"plan": self.store.plan, "remaining": self.store.remaining})
        if path == "/__control/reset" and req.method == "POST":
            self.store.reset()
            log("reset")
            return json_response(200, {"ok": True})
        if path == "/__control/stats" and req.method == "GET":
            return json_response(200, self.store.stats())
        return json_response(404, {"error": "unknown control endpoint",
                                   "endpoints": ["POST /__control/faults", "GET /__control/faults",
                                                 "POST /__control/reset", "GET /__control/stats"]})

    # -- dispatch -----------------------------------------------------------------------------
    def match(self, req: Request) -> tuple[Optional[Route], dict, bool]:
        """(route, params, path_matched_other_method)."""
        other = False
        method = "GET" if req.method == "HEAD" else req.method
        for route in self._routes:
            m = route.regex.match(req.path)
            if not m:
                continue
            if route.method == method:
                return route, m.groupdict(), False
            other = True
        return None, {}, other


# ---------------------------------------------------------------------------------------------
# HTTP server
# ---------------------------------------------------------------------------------------------

REDACT_HEADERS = {"x-goog-api-key", "cookie", "x-api-key", "api-key"}
MALFORMED_JSON = b'{"id": "truncated-by-fault", "status": '


class _Reset(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # TCP_NODELAY: headers and body go out in separate writes, and with Nagle's algorithm each keep-alive answer
    # waited ~40 ms for the client's delayed ACK (seen as a 44 ms floor per request in the benchmarks).
    disable_nagle_algorithm = True
    server_version = "fake-provider/1.0"
    sys_version = ""

    def version_string(self) -> str:
        return self.server_version

    # http.server logs every request itself; we log our own line instead.
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    @property
    def fake(self) -> FakeProvider:
        return self.server.fake  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        self._dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_GET

    # -- body ---------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if (self.headers.get("Transfer-Encoding") or "").lower() == "chunked":
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    # -- dispatch -----------------------------------------------------------------------------
    def _dispatch(self) -> None:
        started = time.time()
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            return
        req = Request(self.command, self.path, self.headers, body)
        fake = self.fake

        if req.path.startswith("/__control/") or req.path == "/__control":
            self._send(req, fake.control(req), None)
            return

        route, params, other_method = fake.match(req)
        category = route.category if route else None
        fault = fake.store.take_fault(category)
        req.fault = fault
        fake.store.count(category)
        outcome = "?"
        try:
            if fault and fault.get("delay_ms"):
                time.sleep(float(fault["delay_ms"]) / 1000.0)
            if fault_preempts(fault) and not fault.get("after_accept"):
                outcome = self._send_fault(req, fault, category)
                return
            if route is None:
                resp = fake.method_not_allowed(req) if other_method else fake.not_found(req)
            else:
                resp = fake.check_auth(req) if route.auth else None
                if resp is None:
                    try:
                        resp = route.handler(req, **params)
                    except Exception as e:  # noqa: BLE001
                        log(f"handler error: {e}\n{traceback.format_exc()}")
                        resp = Response(500, f"fake handler crashed: {e}", "text/plain")
            if fault_preempts(fault) and fault.get("after_accept"):
                outcome = f"{resp.status}->" + self._send_fault(req, fault, category)
                return
            outcome = str(resp.status)
            self._send(req, resp, fault if category == "download" else None)
        except _Reset:
            outcome = "reset"
        except (BrokenPipeError, ConnectionResetError):
            outcome = "client-gone"
            self.close_connection = True
        finally:
            fake.store.record({
                "method": req.method,
                "path": req.raw_path,
                "headers": self._headers_for_log(),
                "body_json": req.body_for_log(),
                "status": outcome,
                "fault": bool(fault),
                "category": category,
                "ts": round(started, 3),
            })
            log(f"{req.method} {req.raw_path} -> {outcome}{' [fault]' if fault else ''}"
                f" ({(time.time() - started) * 1000:.0f} ms)")

    def _headers_for_log(self) -> dict:
        out = {}
        for k, v in self.headers.items():
            lk = k.lower()
            if lk == "authorization":
                v = v.split(" ", 1)[0] if v else v
            elif lk in REDACT_HEADERS:
                v = "<redacted>"
            out[lk] = v
        return out

    # -- faults -------------------------------------------------------------------------------
    def _reset(self) -> None:
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close_connection = True
        try:
            self.connection.close()
        except OSError:
            pass
        raise _Reset()

    def _send_fault(self, req: Request, fault: dict, category: Optional[str]) -> str:
        if fault.get("reset"):
            self._reset()
        if fault.get("malformed"):
            if category == "download":
                junk = b"<html>this is not an mp4</html>" * 64
                self._send(req, Response(200, junk, "video/mp4"), None)
            else:
                self._send(req, Response(200, MALFORMED_JSON, "application/json"), None)
            return "malformed"
        status = int(fault["status"])
        if "body" in fault:
            raw = fault["body"]
            if isinstance(raw, (dict, list)):
                resp = json_response(status, raw)
            else:
                text = str(raw)
                try:
                    json.loads(text)
                    resp = Response(status, text, "application/json")
                except json.JSONDecodeError:
                    resp = Response(status, text, "text/plain; charset=utf-8")
        else:
            resp = self.fake.fault_body(status, fault, category)
        if fault.get("retry_after") is not None:
            ra = fault["retry_after"]
            resp.headers["Retry-After"] = str(int(ra)) if float(ra).is_integer() else str(ra)
        for k, v in (fault.get("headers") or {}).items():
            resp.headers[k] = str(v)
        self._send(req, resp, None)
        return str(status)

    # -- sending ------------------------------------------------------------------------------
    def _send(self, req: Request, resp: Response, download_fault: Optional[dict]) -> None:
        head_only = req.method == "HEAD"
        if resp.file_path:
            self._send_file(req, resp, download_fault, head_only)
            return
        body = resp.body
        self.send_response(resp.status)
        if resp.content_type:
            self.send_header("Content-Type", resp.content_type)
        for k, v in resp.headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not head_only and body:
            self.wfile.write(body)
        self.wfile.flush()

    def _send_file(self, req: Request, resp: Response, fault: Optional[dict], head_only: bool) -> None:
        size = os.path.getsize(resp.file_path)
        start, end = 0, size - 1
        status = resp.status
        rng = req.header("Range")
        if rng and status == 200:
            m = re.match(r"^bytes=(\d*)-(\d*)$", rng.strip())
            if m and (m.group(1) or m.group(2)):
                if m.group(1):
                    start = int(m.group(1))
                    end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                else:
                    start = max(0, size - int(m.group(2)))
                if start > end or start >= size:
                    self._send(req, Response(416, b"", None, {"Content-Range": f"bytes */{size}"}), None)
                    return
                status = 206
        length = end - start + 1
        self.send_response(status)
        self.send_header("Content-Type", resp.content_type or "application/octet-stream")
        for k, v in resp.headers.items():
            self.send_header(k, v)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if head_only:
            self.wfile.flush()
            return
        trickle = float((fault or {}).get("trickle_ms") or 0) / 1000.0
        cut = length // 2 if (fault or {}).get("truncate") else None
        sent = 0
        with open(resp.file_path, "rb") as f:
            f.seek(start)
            while sent < length:
                n = min(65536, length - sent)
                if cut is not None:
                    n = min(n, cut - sent)
                    if n <= 0:
                        self.wfile.flush()
                        self._reset()
                chunk = f.read(n)
                if not chunk:
                    break
                self.wfile.write(chunk)
                sent += len(chunk)
                if trickle:
                    self.wfile.flush()
                    time.sleep(trickle)
        self.wfile.flush()


# -- provider callbacks (webhooks to the client) ------------------------------------------------------------

#: Prompt marker that makes the fake sign its callback with the wrong key (for signature-refusal tests).
BAD_SIGNATURE_MARKER = "[fake:badsig]"


def run_job_in_background(store: "Store", job: "Job", advance, on_terminal, interval: float = 0.05) -> None:
    """Walks `job` to its end without polls (as a real provider works on its own), then calls `on_terminal(job)`
    outside the lock. Used when the client asked for a callback."""
    def walk() -> None:
        while True:
            time.sleep(interval)
            with store.lock:
                if not job.terminal:
                    advance(job)
                if job.terminal:
                    break
        on_terminal(job)
    threading.Thread(target=walk, daemon=True).start()


def post_callback(url: str, body: bytes, headers: dict, attempts: int = 5) -> None:
    """POSTs a callback, retrying a few times on errors or non-2xx, as providers do."""
    import urllib.request
    for attempt in range(attempts):
        req = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", **headers})
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                log(f"callback to {url} -> {resp.status}")
                if 200 <= resp.status < 300:
                    return
        except Exception as e:  # noqa: BLE001
            log(f"callback to {url} failed: {e}")
        time.sleep(0.2 * (attempt + 1))


def standard_webhooks_signature(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256>` of `{msg_id}.{timestamp}.{body}`; the key is the base64 part of `whsec_…`."""
    import hashlib
    import hmac
    key = base64.b64decode(secret[len("whsec_"):]) if secret.startswith("whsec_") else secret.encode()
    digest = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class Ed25519Key:
    """An Ed25519 key made and used through the openssl CLI (the standard library has no Ed25519)."""

    def __init__(self) -> None:
        import tempfile
        self.dir = tempfile.mkdtemp(prefix="fake-ed25519-")
        self.pem = os.path.join(self.dir, "key.pem")
        subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", self.pem], check=True,
                       capture_output=True)
        der = subprocess.run(["openssl", "pkey", "-in", self.pem, "-pubout", "-outform", "DER"], check=True,
                             capture_output=True).stdout
        self.public_raw = der[-32:]

    def sign(self, message: bytes) -> bytes:
        msg = os.path.join(self.dir, f"msg-{uuid_hex()}")
        with open(msg, "wb") as f:
            f.write(message)
        try:
            return subprocess.run(["openssl", "pkeyutl", "-sign", "-inkey", self.pem, "-rawin", "-in", msg],
                                  check=True, capture_output=True).stdout
        finally:
            os.unlink(msg)

    def jwk(self) -> dict:
        x = base64.urlsafe_b64encode(self.public_raw).decode().rstrip("=")
        return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "fake-1", "alg": "EdDSA", "use": "sig"}


def uuid_hex() -> str:
    import uuid
    return uuid.uuid4().hex


class FakeHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address) -> None:  # quieter than the default traceback dump
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionResetError, BrokenPipeError, _Reset)):
            return
        log(f"server error from {client_address}: {exc!r}")


def main(fake_cls: type[FakeProvider], argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=f"fake {fake_cls.name} provider (see tests/fakes/README.md)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = pick a free one)")
    parser.add_argument("--key", default="test-key", help="the API key the fake accepts (default test-key)")
    parser.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate chain (and --tls-key)")
    parser.add_argument("--tls-key", help="the PEM private key for --tls-cert")
    args = parser.parse_args(argv)

    server = FakeHTTPServer(("127.0.0.1", args.port), Handler)
    port = server.server_address[1]
    scheme = "http"
    if args.tls_cert:
        # A self-hosted provider behind its own CA. The handshake runs in the handler thread, not in accept().
        import ssl
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        scheme = "https"
    base = f"{scheme}://127.0.0.1:{port}"
    server.fake = fake_cls(key=args.key, base_url=base)  # type: ignore[attr-defined]

    def stop(signum, frame) -> None:  # noqa: ARG001
        log(f"signal {signum}: shutting down")
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log(f"fake {fake_cls.name} on {base} (key {'set' if args.key else 'empty'}; mp4 cache {mp4_cache_dir()})")
    sys.stdout.write(f"listening on {base}\n")
    sys.stdout.flush()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0
