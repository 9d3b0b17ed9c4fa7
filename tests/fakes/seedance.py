#!/usr/bin/env python3
"""Fake ByteDance Seedance on BytePlus ModelArk: content generation tasks (providers.md §11).

Protocol sources:
  * https://docs.byteplus.com/en/docs/ModelArk/1520757 (Video Generation API: create / query / list /
    cancel-or-delete; request fields model, content[{type: text|image_url, image_url.url, role}], resolution,
    ratio, duration, frames, seed, camera_fixed, watermark, generate_audio, return_last_frame, callback_url,
    service_tier, execution_expires_after; text commands `--resolution/--rs`, `--ratio/--rt`, `--duration/--dur`,
    `--framepersecond/--fps`, `--watermark/--wm`, `--seed`, `--camerafixed/--cf` appended to the prompt;
    task statuses queued, running, cancelled, succeeded, failed, expired; `content.video_url` valid 24 h;
    at most 120 queued tasks per account; only queued tasks can be cancelled)
  * https://docs.byteplus.com/en/docs/ModelArk/1366799 (tutorial: curl create + query)
  * https://docs.byteplus.com/en/docs/ModelArk/1299023 (common error codes: 400 MissingParameter /
    InvalidParameter / SensitiveContentDetected* / InputTextSensitiveContentDetected / InputImageSensitive…,
    401 AuthenticationError, 403 AccountOverdueError / AccessDenied, 404 InvalidEndpointOrModel.NotFound,
    429 RateLimitExceeded.EndpointRPMExceeded / ServerOverloaded, 500 InternalServiceError)
  * volcengine/volcengine-python-sdk volcenginesdkarkruntime/resources/content_generation/tasks.py,
    types/content_generation/content_generation_task.py (id, model, status, error{code, message},
    content{video_url, last_frame_url}, usage{completion_tokens}, created_at, updated_at, seed, revised_prompt),
    list_content_generation_tasks_response.py ({items, total})
  * comfyanonymous/ComfyUI comfy_api_nodes/apis/bytedance.py (partner client: 1.x sends text commands in
    content, 2.x sends resolution/ratio/duration as fields; model ids)
  * Output sizes per ratio and tier: the docs' resolution table (mirrored by runware.ai, gptproto).

Endpoints (also accepted with the Volcengine host's same paths):
  POST   /api/v3/contents/generations/tasks          -> 200 {"id": "cgt-..."}
  GET    /api/v3/contents/generations/tasks/{id}     -> 200 task
  GET    /api/v3/contents/generations/tasks          -> 200 {"items": [...], "total": n}
  DELETE /api/v3/contents/generations/tasks/{id}     -> 200 {} (queued: cancelled; terminal: deleted)
  GET    /ark-content-generation/{task}/{file}.mp4   -> MP4 (signed URL, no auth; 403 once expired)
  GET    /ark-content-generation/{task}/{file}.png   -> last frame (return_last_frame)
Auth: `Authorization: Bearer KEY`.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
import uuid
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fakelib  # noqa: E402
from fakelib import BadJSON, FakeProvider, Job, Request, Response, Route, json_response  # noqa: E402

TASKS = "/api/v3/contents/generations/tasks"

# Output sizes (width, height) per resolution tier and ratio.
DIMS_V1 = {  # Seedance 1.0 (pro, pro-fast, lite)
    "480p": {"16:9": (864, 480), "4:3": (736, 544), "1:1": (640, 640), "3:4": (544, 736), "9:16": (480, 864),
             "21:9": (960, 416), "9:21": (416, 960)},
    "720p": {"16:9": (1248, 704), "4:3": (1120, 832), "1:1": (960, 960), "3:4": (832, 1120), "9:16": (704, 1248),
             "21:9": (1504, 640), "9:21": (640, 1504)},
    "1080p": {"16:9": (1920, 1088), "4:3": (1664, 1248), "1:1": (1440, 1440), "3:4": (1248, 1664),
              "9:16": (1088, 1920), "21:9": (2176, 928), "9:21": (928, 2176)},
}
DIMS_V15 = {  # Seedance 1.5 pro and 2.x
    "480p": {"16:9": (864, 496), "4:3": (752, 560), "1:1": (640, 640), "3:4": (560, 752), "9:16": (496, 864),
             "21:9": (992, 432)},
    "720p": {"16:9": (1280, 720), "4:3": (1112, 834), "1:1": (960, 960), "3:4": (834, 1112), "9:16": (720, 1280),
             "21:9": (1470, 630)},
    "1080p": {"16:9": (1920, 1080), "4:3": (1664, 1248), "1:1": (1440, 1440), "3:4": (1248, 1664),
              "9:16": (1080, 1920), "21:9": (2206, 946)},
}

V1 = {"dims": DIMS_V1, "durations": (2, 12), "auto_duration": False, "text_commands": True, "audio": False}
V15 = {"dims": DIMS_V15, "durations": (4, 12), "auto_duration": True, "text_commands": True, "audio": True}
V2 = {"dims": DIMS_V15, "durations": (4, 15), "auto_duration": True, "text_commands": False, "audio": True}

MODELS = {
    "seedance-1-0-pro-250528": {**V1, "resolutions": ("480p", "720p", "1080p"), "default_resolution": "1080p"},
    "seedance-1-0-pro-fast-251015": {**V1, "resolutions": ("480p", "720p", "1080p"), "default_resolution": "1080p"},
    "seedance-1-0-lite-t2v-250428": {**V1, "resolutions": ("480p", "720p", "1080p"), "default_resolution": "720p",
                                     "images": False},
    "seedance-1-0-lite-i2v-250428": {**V1, "resolutions": ("480p", "720p", "1080p"), "default_resolution": "720p",
                                     "image_required": True},
    "seedance-1-5-pro-251215": {**V15, "resolutions": ("480p", "720p", "1080p"), "default_resolution": "720p"},
    "dreamina-seedance-2-0-260128": {**V2, "resolutions": ("480p", "720p", "1080p"), "default_resolution": "720p"},
    "dreamina-seedance-2-0-fast-260128": {**V2, "resolutions": ("480p", "720p"), "default_resolution": "720p"},
    "dreamina-seedance-2-0-mini": {**V2, "resolutions": ("480p", "720p"), "default_resolution": "720p"},
    "dreamina-seedance-2-5-260628": {**V2, "resolutions": ("480p", "720p"), "default_resolution": "720p"},
}
RATIOS = ("16:9", "4:3", "1:1", "3:4", "9:16", "21:9", "adaptive")
ROLES = ("first_frame", "last_frame", "reference_image")
#: text command -> field
COMMANDS = {"resolution": "resolution", "rs": "resolution", "ratio": "ratio", "rt": "ratio", "duration": "duration",
            "dur": "duration", "framepersecond": "framespersecond", "fps": "framespersecond", "watermark": "watermark",
            "wm": "watermark", "seed": "seed", "camerafixed": "camera_fixed", "cf": "camera_fixed", "frames": "frames"}

MSG_INPUT_TEXT = "The request failed because the input text may contain sensitive information."
MSG_OUTPUT_VIDEO = "The request failed because the output video may contain sensitive information."
MSG_INTERNAL = "The service encountered an unexpected internal error."  # task failure text: guessed
MAX_QUEUED = 120


def request_id() -> str:
    """ModelArk request ids look like 0217…: "02", a millisecond timestamp and random hex."""
    return f"02{int(time.time() * 1000)}{secrets.token_hex(12)}"


def ark_error(status: int, typ: str, code: str, message: str, param: str = "", rid: str | None = None) -> Response:
    rid = rid or request_id()
    return json_response(status, {"error": {"code": code, "message": f"{message} Request id: {rid}", "param": param,
                                            "type": typ}}, headers={"X-Request-Id": rid})


def bad_param(param: str, detail: str = "") -> Response:
    extra = f" {detail}" if detail else ""
    return ark_error(400, "BadRequest", "InvalidParameter",
                     f"The parameter `{param}` specified in the request is not valid.{extra}", param)


def canonical_model(model: str) -> str | None:
    """BytePlus ids, Volcengine `doubao-` ids, and `ep-` endpoint ids (treated as Seedance 1.5 pro)."""
    if model in MODELS:
        return model
    if model.startswith("doubao-"):
        bare = model[len("doubao-"):]
        for m in MODELS:
            if m == bare or m == f"dreamina-{bare}":
                return m
    if re.fullmatch(r"ep-[0-9a-z-]+", model):
        return "seedance-1-5-pro-251215"
    return None


class SeedanceFake(FakeProvider):
    name = "seedance"
    extra_plan_keys = {
        "seedance_moderation_stage": "output (default: the task runs and fails with OutputVideoSensitiveContentDetected)"
                                     " | input (create answers 400 InputTextSensitiveContentDetected, no task)",
        "seedance_failure": "failed (default) | expired: the status a failing task ends in",
    }

    def __init__(self, key: str, base_url: str):
        super().__init__(key, base_url)
        self.files: dict[str, tuple[str, str]] = {}  # "<task>/<file>" -> (task id, kind)

    def routes(self) -> list[Route]:
        tid = r"(?P<task_id>[^/]+)"
        return [
            Route("POST", rf"^{TASKS}$", self.create, "create"),
            Route("GET", rf"^{TASKS}$", self.list_tasks),
            Route("GET", rf"^{TASKS}/{tid}$", self.retrieve, "poll"),
            Route("DELETE", rf"^{TASKS}/{tid}$", self.delete, "cancel"),
            Route("GET", r"^/ark-content-generation/(?P<task_id>[^/]+)/(?P<file>[^/]+)\.(?P<ext>mp4|png)$",
                  self.download, "download", auth=False),
        ]

    # -- auth / errors ------------------------------------------------------------------------
    def check_auth(self, req: Request):
        auth = req.header("Authorization") or ""
        if auth != f"Bearer {self.key}":
            return ark_error(401, "Unauthorized", "AuthenticationError",
                             "The API key or AK/SK in the request is missing or invalid.")
        return None

    def fault_body(self, status: int, fault: dict, category):
        known = {
            429: ("TooManyRequests", "RateLimitExceeded.EndpointRPMExceeded",
                  "The Requests Per Minute (RPM) limit of the associated endpoint for your account has been exceeded."),
            500: ("InternalServerError", "InternalServiceError", MSG_INTERNAL),
            502: ("BadGateway", "InternalServiceError", MSG_INTERNAL),
            503: ("ServiceUnavailable", "ServiceUnavailable",
                  "The service is temporarily unavailable. Please try again later."),
            504: ("GatewayTimeout", "RequestTimeout", "The request timed out. Please try again later."),
        }
        typ, code, msg = known.get(status, ("InternalServerError", "InjectedError", f"Injected error {status}."))
        return ark_error(status, typ, code, msg)

    def not_found(self, req: Request):
        return ark_error(404, "NotFound", "NotFound", f"The requested resource {req.path} is not found.")

    def method_not_allowed(self, req: Request):
        return ark_error(405, "MethodNotAllowed", "MethodNotAllowed", f"Method {req.method} is not allowed.")

    # -- validation ---------------------------------------------------------------------------
    def _validate(self, body: dict):
        """(error response, None) or (None, normalized {model, spec, prompt, has_image, params})."""
        model = body.get("model")
        if model is None or model == "":
            return ark_error(400, "BadRequest", "MissingParameter",
                             "The request failed because it is missing one or multiple required parameters.",
                             "model"), None
        if not isinstance(model, str):
            return bad_param("model"), None
        canon = canonical_model(model)
        if canon is None:
            return ark_error(404, "NotFound", "InvalidEndpointOrModel.NotFound",
                             f"The model or endpoint {model} does not exist or you do not have access to it."), None
        spec = MODELS[canon]
        content = body.get("content")
        if content is None or content == []:
            return ark_error(400, "BadRequest", "MissingParameter",
                             "The request failed because it is missing one or multiple required parameters.",
                             "content"), None
        if not isinstance(content, list):
            return bad_param("content", "It must be a list."), None
        texts, images = [], []
        for i, item in enumerate(content):
            if not isinstance(item, dict):
                return bad_param(f"content[{i}]"), None
            typ = item.get("type")
            if typ == "text":
                if not isinstance(item.get("text"), str):
                    return bad_param(f"content[{i}].text"), None
                texts.append(item["text"])
            elif typ == "image_url":
                url = (item.get("image_url") or {}).get("url") if isinstance(item.get("image_url"), dict) else None
                if not isinstance(url, str) or not url:
                    return ark_error(400, "BadRequest", "MissingParameter",
                                     "The request failed because it is missing one or multiple required parameters.",
                                     f"content[{i}].image_url.url"), None
                if url.startswith("data:"):
                    decoded = fakelib.decode_data_url(url)
                    if not decoded or not fakelib.image_kind(decoded[1]):
                        return bad_param(f"content[{i}].image_url.url", "The image could not be decoded."), None
                elif urlsplit(url).scheme not in ("http", "https"):
                    return bad_param(f"content[{i}].image_url.url"), None
                role = item.get("role")
                if role is not None and role not in ROLES:
                    return bad_param(f"content[{i}].role"), None
                images.append(role or "first_frame")
            elif typ in ("video_url", "audio_url", "draft_task"):
                if not canon.startswith("dreamina-"):
                    return bad_param(f"content[{i}].type", f"{typ} is not supported by model {model}."), None
            else:
                return bad_param(f"content[{i}].type"), None
        if len(texts) > 1:
            return bad_param("content", "At most one text item is allowed."), None
        if not texts and not images:
            return ark_error(400, "BadRequest", "MissingParameter",
                             "The request failed because it is missing one or multiple required parameters.",
                             "content.text"), None
        if images and spec.get("images") is False:
            return bad_param("content", f"Model {model} does not support image input."), None
        if not images and spec.get("image_required"):
            return ark_error(400, "BadRequest", "MissingParameter",
                             "The request failed because it is missing one or multiple required parameters.",
                             "content.image_url"), None
        prompt = texts[0] if texts else ""
        # Text commands at the end of the prompt (1.x); fields win over commands.
        params: dict = {}
        if spec["text_commands"]:
            while True:
                m = re.search(r"\s*--(\w+)\s+(\S+)\s*$", prompt)
                if not m or m.group(1).lower() not in COMMANDS:
                    break
                field = COMMANDS[m.group(1).lower()]
                raw = m.group(2)
                value: object = raw
                if field in ("duration", "seed", "frames", "framespersecond"):
                    try:
                        value = int(raw)
                    except ValueError:
                        return bad_param(field, f"Invalid text command --{m.group(1)} {raw}."), None
                elif field in ("watermark", "camera_fixed"):
                    if raw.lower() not in ("true", "false"):
                        return bad_param(field, f"Invalid text command --{m.group(1)} {raw}."), None
                    value = raw.lower() == "true"
                params.setdefault(field, value)
                prompt = prompt[:m.start()]
        for field in ("resolution", "ratio", "duration", "frames", "seed", "camera_fixed", "watermark",
                      "generate_audio", "return_last_frame", "callback_url", "service_tier",
                      "execution_expires_after", "draft", "framespersecond"):
            if field in body and body[field] is not None:
                params[field] = body[field]
        resolution = params.get("resolution", spec["default_resolution"])
        if resolution not in spec["resolutions"]:
            return bad_param("resolution", f"Model {model} supports {', '.join(spec['resolutions'])}."), None
        ratio = params.get("ratio", "16:9" if not images else "adaptive")
        if ratio not in RATIOS and not (ratio == "9:21" and spec["dims"] is DIMS_V1):
            return bad_param("ratio"), None
        lo, hi = spec["durations"]
        if "frames" in params:
            frames = params["frames"]
            if "duration" in params:
                return bad_param("frames", "`frames` and `duration` cannot be set together."), None
            if not (fakelib.is_int(frames) and 29 <= frames <= 289 and (frames - 25) % 4 == 0):
                return bad_param("frames"), None
            seconds = round(int(frames) / 24, 3)
        else:
            duration = params.get("duration", 5)
            if not fakelib.is_int(duration) or isinstance(duration, bool):
                return bad_param("duration"), None
            duration = int(duration)
            if duration == -1 and spec["auto_duration"]:
                seconds = 5
            elif lo <= duration <= hi:
                seconds = duration
            else:
                return bad_param("duration", f"Model {model} supports {lo} to {hi} seconds."), None
            params["duration"] = duration
        seed = params.get("seed", -1)
        if not (fakelib.is_int(seed) and -1 <= seed <= 4294967295):
            return bad_param("seed"), None
        for flag in ("camera_fixed", "watermark", "generate_audio", "return_last_frame", "draft"):
            if flag in params and not isinstance(params[flag], bool):
                return bad_param(flag), None
        if params.get("service_tier", "default") not in ("default", "flex"):
            return bad_param("service_tier"), None
        expires = params.get("execution_expires_after", 172800)
        if not (fakelib.is_int(expires) and 3600 <= expires <= 259200):
            return bad_param("execution_expires_after"), None
        if "callback_url" in params and not isinstance(params["callback_url"], str):
            return bad_param("callback_url"), None
        dims_ratio = "16:9" if ratio == "adaptive" else ratio
        width, height = spec["dims"][resolution][dims_ratio]
        return None, {"model": model, "canon": canon, "spec": spec, "prompt": prompt, "images": images,
                      "resolution": resolution, "ratio": ratio, "seconds": seconds, "width": width, "height": height,
                      "params": params}

    # -- task JSON ----------------------------------------------------------------------------
    def _file_url(self, job: Job, ext: str) -> str:
        name = uuid.uuid4().hex
        with self.store.lock:
            self.files[f"{job.id}/{name}.{ext}"] = (job.id, ext)
        date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(job.completed_at or time.time()))
        return self.url(f"/ark-content-generation/{job.id}/{name}.{ext}?X-Tos-Algorithm=TOS4-HMAC-SHA256"
                        f"&X-Tos-Date={date}&X-Tos-Expires=86400&X-Tos-SignedHeaders=host"
                        f"&X-Tos-Signature={secrets.token_hex(32)}")

    def _task_json(self, job: Job) -> dict:
        d = job.data
        status = {"queued": "queued", "running": "running", "succeeded": "succeeded", "failed": "failed",
                  "moderated": "failed", "canceled": "cancelled"}[job.phase]
        if job.phase == "failed" and d.get("failure") == "expired":
            status = "expired"
        updated = job.completed_at or job.started_at or job.created_at
        out: dict = {"id": job.id, "model": d["model"], "status": status, "error": None,
                     "created_at": int(job.created_at), "updated_at": int(updated)}
        if job.phase == "succeeded":
            if "video_url" not in d:  # minted once: the same signed URL on every query
                d["video_url"] = self._file_url(job, "mp4")
                if d["params"].get("return_last_frame"):
                    d["last_frame_url"] = self._file_url(job, "png")
            out["content"] = {"video_url": d["video_url"]}
            if "last_frame_url" in d:
                out["content"]["last_frame_url"] = d["last_frame_url"]
            tokens = int(job.width * job.height * 24 * float(job.seconds) / 1024)
            out["usage"] = {"completion_tokens": tokens, "total_tokens": tokens}
        elif job.phase == "moderated":
            out["error"] = {"code": "OutputVideoSensitiveContentDetected",
                            "message": f"{MSG_OUTPUT_VIDEO} Request id: {d['request_id']}"}
        elif job.phase == "failed" and status == "failed":
            out["error"] = {"code": self.store.plan_value("error_code", "InternalServiceError"),
                            "message": self.store.plan_value("error_message",
                                                             f"{MSG_INTERNAL} Request id: {d['request_id']}")}
        elif status == "expired":
            out["error"] = {"code": "TaskExpired",  # guessed: the docs only say "expired: task timed out"
                            "message": "The task was not completed within execution_expires_after."}
        p = d["params"]
        out.update({"seed": d["seed"], "resolution": d["resolution"], "ratio": d["ratio"],
                    "framespersecond": 24, "draft": bool(p.get("draft", False)),
                    "service_tier": p.get("service_tier", "default"),
                    "execution_expires_after": p.get("execution_expires_after", 172800)})
        if "frames" in p:
            out["frames"] = p["frames"]
        else:
            out["duration"] = int(job.seconds) if float(job.seconds).is_integer() else job.seconds
        if d["spec"]["audio"]:
            out["generate_audio"] = bool(p.get("generate_audio", True))
        return out

    # -- handlers -----------------------------------------------------------------------------
    def create(self, req: Request) -> Response:
        try:
            body = req.json()
        except BadJSON:
            return ark_error(400, "BadRequest", "InvalidParameter", "The request body is not valid JSON.")
        if not isinstance(body, dict):
            return ark_error(400, "BadRequest", "InvalidParameter", "The request body must be a JSON object.")
        err, norm = self._validate(body)
        if err is not None:
            return err
        outcome, steps = self.store.new_job_settings(norm["prompt"])
        if outcome == "moderated" and self.store.plan_value("seedance_moderation_stage", "output") == "input":
            return ark_error(400, "BadRequest", "InputTextSensitiveContentDetected", MSG_INPUT_TEXT)
        with self.store.lock:
            queued = sum(1 for j in self.store.jobs.values() if j.phase == "queued" and not j.deleted)
        if queued >= MAX_QUEUED:
            return ark_error(429, "TooManyRequests", "QuotaExceeded",
                             f"The number of queued tasks for your account has reached the limit of {MAX_QUEUED}.")
        seed = norm["params"].get("seed", -1)
        job = Job(f"cgt-{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(3)}", width=norm["width"],
                  height=norm["height"], seconds=norm["seconds"], outcome=outcome, steps=steps, prompt=norm["prompt"],
                  data={"model": norm["model"], "spec": norm["spec"], "resolution": norm["resolution"],
                        "ratio": norm["ratio"], "params": norm["params"], "request_id": request_id(),
                        "seed": int(seed) if seed != -1 else secrets.randbelow(2 ** 31),
                        "failure": self.store.plan_value("seedance_failure", "failed")})
        self.store.add_job(job)
        if outcome == "succeed":
            fakelib.prewarm_mp4(job.width, job.height, job.seconds)
        return json_response(200, {"id": job.id})

    def retrieve(self, req: Request, task_id: str) -> Response:
        with self.store.lock:
            job = self.store.get_job(task_id)
            if job is None:
                # Guessed: the docs give no body for an unknown or deleted task id.
                return ark_error(404, "NotFound", "ResourceNotFound", f"The specified task {task_id} is not found.",
                                 "id")
            job.advance()
            return json_response(200, self._task_json(job))

    def list_tasks(self, req: Request) -> Response:
        try:
            page_num = int(req.query.get("page_num", "1"))
            page_size = int(req.query.get("page_size", "10"))
        except ValueError:
            return bad_param("page_num")
        if not (1 <= page_num <= 500 and 1 <= page_size <= 500):
            return bad_param("page_size")
        q = parse_qs(req.query_string)
        status = q.get("filter.status", [None])[-1]
        ids = set(q.get("filter.task_ids", []))
        model = q.get("filter.model", [None])[-1]
        with self.store.lock:
            tasks = [self._task_json(j) for j in reversed(list(self.store.jobs.values())) if not j.deleted]
        tasks = [t for t in tasks if (not status or t["status"] == status) and (not ids or t["id"] in ids)
                 and (not model or t["model"] == model)]
        start = (page_num - 1) * page_size
        return json_response(200, {"items": tasks[start:start + page_size], "total": len(tasks)})

    def delete(self, req: Request, task_id: str) -> Response:
        with self.store.lock:
            job = self.store.get_job(task_id)
            if job is None:
                return ark_error(404, "NotFound", "ResourceNotFound", f"The specified task {task_id} is not found.",
                                 "id")
            if job.phase == "running":
                # Guessed code: the docs only say a running task can be neither cancelled nor deleted.
                return ark_error(400, "BadRequest", "InvalidParameter",
                                 f"The task {task_id} is running and cannot be cancelled or deleted.", "id")
            if not job.cancel():  # queued -> cancelled (still readable); terminal -> record deleted
                job.deleted = True
        return json_response(200, {})

    def download(self, req: Request, task_id: str, file: str, ext: str) -> Response:
        # TOS answers an expired or unknown signed URL with 403 (body shape guessed: TOS's JSON error).
        denied = json_response(403, {"Code": "AccessDenied", "Message": "Request has expired",
                                     "RequestId": secrets.token_hex(12), "HostId": "ark-content-generation",
                                     "EC": "0003-00000001"})
        with self.store.lock:
            known = self.files.get(f"{task_id}/{file}.{ext}")
            job = self.store.get_job(task_id, include_deleted=True)
        if known is None or job is None or job.phase != "succeeded" or "X-Tos-Signature" not in req.query:
            return denied
        if self.store.is_expired(job.completed_at):
            return denied
        if ext == "png":
            return self._last_frame(job)
        return self.serve_video(req, job)

    def _last_frame(self, job: Job) -> Response:
        try:
            mp4 = fakelib.ensure_mp4(job.width, job.height, job.seconds)
            png = subprocess.run([fakelib.ffmpeg_bin(), "-nostdin", "-v", "error", "-sseof", "-0.1", "-i", mp4,
                                  "-frames:v", "1", "-f", "image2", "-c:v", "png", "-"],
                                 capture_output=True, timeout=60, check=True).stdout
        except Exception as e:  # noqa: BLE001
            return Response(500, f"fake could not extract the last frame: {e}", "text/plain")
        return Response(200, png, "image/png")


if __name__ == "__main__":
    sys.exit(fakelib.main(SeedanceFake))
