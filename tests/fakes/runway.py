#!/usr/bin/env python3
"""Fake Runway API (providers.md §4).

Protocol sources:
  * runwayml/sdk-python: `types/text_to_video_create_params.py`, `types/image_to_video_create_params.py`
    (discriminated union on `model`; ratios and durations per model), `types/task_retrieve_response.py`
    (PENDING | THROTTLED | RUNNING(progress 0-1 float) | SUCCEEDED(output[]) | FAILED(failure,
    failureCode) | CANCELLED), `resources/tasks.py` (DELETE cancels unfinished tasks, deletes others).
  * https://docs.dev.runwayml.com/api-details/errors (400 with an `error` member, 401, 404, 405, 429, 5xx)
  * https://docs.dev.runwayml.com/errors/task-failures/ (SAFETY.INPUT.TEXT, INTERNAL...)
  * 400 body shape as the real API sends it: {"error": "Validation of body failed", "issues": [zod
    issues], "docUrl": "https://docs.dev.runwayml.com/api"} (seen in public captures).

Endpoints:
  POST   /v1/text_to_video, /v1/image_to_video   -> 200 {"id": "<uuid>"}
  GET    /v1/tasks/{id}                          -> task (PENDING -> RUNNING -> SUCCEEDED | FAILED)
  DELETE /v1/tasks/{id}                          -> 204 (cancel if unfinished -> CANCELLED; else delete -> 404 later)
  GET    /runway-outputs/{id}/{file}.mp4?_jwt=T  -> MP4 (no auth; every GET of a SUCCEEDED task mints a
                                                   fresh URL, and each URL expires
                                                   `expire_downloads_after_s` after it was minted -> 403)
Headers: `Authorization: Bearer KEY` and `X-Runway-Version: 2024-11-06` on every /v1 call.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import sys
import time
import uuid
from urllib.parse import urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fakelib  # noqa: E402
from fakelib import BadJSON, FakeProvider, Job, Request, Response, Route, empty_response, json_response  # noqa: E402

API_VERSION = "2024-11-06"
DOC_URL = "https://docs.dev.runwayml.com/api"
VEO_RATIOS = ["1280:720", "720:1280", "1080:1920", "1920:1080"]
GEN45_T2V_RATIOS = ["1280:720", "720:1280"]
I2V_RATIOS = ["1280:720", "720:1280", "1104:832", "960:960", "832:1104", "1584:672"]

# model -> spec. duration: ("range", lo, hi) or ("enum", [..]); required fields; default duration.
T2V_MODELS = {
    "gen4.5": {"ratios": GEN45_T2V_RATIOS, "duration": ("range", 2, 10), "duration_required": True},
    "veo3.1": {"ratios": VEO_RATIOS, "duration": ("enum", [4, 6, 8]), "default_duration": 8},
    "veo3.1_fast": {"ratios": VEO_RATIOS, "duration": ("enum", [4, 6, 8]), "default_duration": 8},
    "veo3": {"ratios": VEO_RATIOS, "duration": ("enum", [8]), "duration_required": True},
}
I2V_MODELS = {
    "gen4.5": {"ratios": I2V_RATIOS, "duration": ("range", 2, 10), "duration_required": True, "prompt_required": True},
    # gen4_turbo: the SDK types duration as a plain int; docs mention 5 or 10. 2-10 accepted, default 10 (guess).
    "gen4_turbo": {"ratios": I2V_RATIOS, "duration": ("range", 2, 10), "default_duration": 10},
    "veo3.1": {"ratios": VEO_RATIOS, "duration": ("enum", [4, 6, 8]), "default_duration": 8, "last_frame": True},
    "veo3.1_fast": {"ratios": VEO_RATIOS, "duration": ("enum", [4, 6, 8]), "default_duration": 8, "last_frame": True},
    "veo3": {"ratios": VEO_RATIOS, "duration": ("enum", [8]), "duration_required": True},
}
MODERATION_FAILURE = "The input text was flagged by our content moderation system."
INTERNAL_FAILURE = "An unexpected error occurred while generating the video."


def runway_error(status: int, message: str, **extra) -> Response:
    return json_response(status, {"error": message, **extra})


def utf16_len(s: str) -> int:
    return len(s.encode("utf-16-le")) // 2


def pyt(v) -> str:
    """zod's name for a received JSON type."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"


def fmt_values(values) -> str:
    return "|".join(f'"{v}"' if isinstance(v, str) else str(v) for v in values)


class RunwayFake(FakeProvider):
    name = "runway"
    extra_plan_keys = {"runway_throttled": "queued tasks show THROTTLED instead of PENDING"}

    def __init__(self, key: str, base_url: str):
        super().__init__(key, base_url)
        self.tokens: dict[str, tuple[str, float]] = {}  # jwt -> (task id, minted at)

    def routes(self) -> list[Route]:
        tid = r"(?P<task_id>[^/]+)"
        return [
            Route("POST", r"^/v1/text_to_video$", lambda req: self.create(req, "text_to_video"), "create"),
            Route("POST", r"^/v1/image_to_video$", lambda req: self.create(req, "image_to_video"), "create"),
            Route("GET", rf"^/v1/tasks/{tid}$", self.retrieve, "poll"),
            Route("DELETE", rf"^/v1/tasks/{tid}$", self.delete, "cancel"),
            Route("GET", r"^/runway-outputs/(?P<task_id>[^/]+)/(?P<file>[^/]+)\.mp4$", self.download, "download",
                  auth=False),
        ]

    # -- auth / errors ------------------------------------------------------------------------
    def check_auth(self, req: Request):
        if req.header("Authorization") != f"Bearer {self.key}":
            # Body text is a guess: the docs only say 401 = "The provided API key is not valid."
            return runway_error(401, "The provided API key is not valid.")
        version = req.header("X-Runway-Version")
        if version is None:
            # Exact message not documented (guess); the header is required by the SDK and the docs.
            return runway_error(400, "You must provide an X-Runway-Version header. The current version is "
                                     f"{API_VERSION}.")
        if version != API_VERSION:
            return runway_error(400, f"Invalid API version {version!r}. Supported versions: {API_VERSION}.")
        return None

    def fault_body(self, status: int, fault: dict, category):
        messages = {
            429: "You have exceeded the rate limit for this API. Please slow down and try again later.",
            500: "An internal error occurred.",
            502: "Runway is shedding load. Please retry.",
            503: "Runway is shedding load. Please retry.",
            504: "Runway is overloaded and could not satisfy the request. Please retry.",
        }
        return runway_error(status, messages.get(status, f"Injected error {status}."))

    def not_found(self, req: Request):
        return runway_error(404, "Not found")

    def method_not_allowed(self, req: Request):
        return runway_error(405, "Method not allowed")

    # -- validation ---------------------------------------------------------------------------
    @staticmethod
    def _issue_type(path: str, expected: str, value) -> dict:
        return {"expected": expected, "code": "invalid_type", "path": [path],
                "message": f"Invalid input: expected {expected}, received {pyt(value) if value is not None else 'undefined'}"}

    def _check_image_uri(self, uri, path: list) -> list:
        if not isinstance(uri, str):
            return [{"expected": "string", "code": "invalid_type", "path": path,
                     "message": f"Invalid input: expected string, received {pyt(uri)}"}]
        if uri.startswith("data:"):
            decoded = fakelib.decode_data_url(uri)
            if not decoded or not fakelib.image_kind(decoded[1]):
                return [{"code": "custom", "path": path, "message": "Invalid data URI."}]
            if len(decoded[1]) > 5 * 1024 * 1024:
                return [{"code": "custom", "path": path, "message": "Data URI is too large (max 5MB)."}]
            return []
        if uri.startswith("runway://"):
            return []
        parts = urlsplit(uri)
        if parts.scheme != "https":
            return [{"code": "custom", "path": path, "message": "Only HTTPS URLs are allowed."}]
        try:
            ipaddress.ip_address(parts.hostname or "")
            return [{"code": "custom", "path": path, "message": "URLs must be hosted on a domain."}]
        except ValueError:
            return []

    def _validate(self, body: dict, endpoint: str) -> tuple[list, dict]:
        """(issues, normalized) where normalized = {model, ratio, duration, prompt}."""
        models = T2V_MODELS if endpoint == "text_to_video" else I2V_MODELS
        model = body.get("model")
        if not isinstance(model, str) or model not in models:
            if model is None:
                first = self._issue_type("model", "string", None)
            else:
                first = None
            issues = [first] if first else []
            issues.append({"code": "invalid_union", "errors": [], "note": "No matching discriminator",
                           "discriminator": "model", "path": ["model"], "message": "Invalid input"})
            return issues, {}
        spec = models[model]
        issues = []
        prompt = body.get("promptText")
        prompt_required = endpoint == "text_to_video" or spec.get("prompt_required")
        if prompt is None:
            if prompt_required:
                issues.append(self._issue_type("promptText", "string", None))
        elif not isinstance(prompt, str):
            issues.append(self._issue_type("promptText", "string", prompt))
        elif len(prompt) == 0:
            issues.append({"origin": "string", "code": "too_small", "minimum": 1, "inclusive": True,
                           "path": ["promptText"], "message": "Too small: expected string to have >=1 characters"})
        elif utf16_len(prompt) > 1000:
            issues.append({"origin": "string", "code": "too_big", "maximum": 1000, "inclusive": True,
                           "path": ["promptText"], "message": "Too big: expected string to have <=1000 characters"})
        ratio = body.get("ratio")
        if ratio is None:
            issues.append({"code": "invalid_value", "values": spec["ratios"], "path": ["ratio"],
                           "message": f"Invalid option: expected one of {fmt_values(spec['ratios'])}"})
        elif ratio not in spec["ratios"]:
            issues.append({"code": "invalid_value", "values": spec["ratios"], "path": ["ratio"],
                           "message": f"Invalid option: expected one of {fmt_values(spec['ratios'])}"})
        duration = body.get("duration")
        kind = spec["duration"]
        if duration is None:
            if spec.get("duration_required"):
                if kind[0] == "range":
                    issues.append(self._issue_type("duration", "number", None))
                else:
                    issues.append({"code": "invalid_value", "values": kind[1], "path": ["duration"],
                                   "message": f"Invalid option: expected one of {fmt_values(kind[1])}"})
            duration = spec.get("default_duration")
        elif kind[0] == "range":
            if not fakelib.is_int(duration):
                if isinstance(duration, (int, float)) and not isinstance(duration, bool):
                    issues.append({"expected": "int", "format": "safeint", "code": "invalid_type", "path": ["duration"],
                                   "message": "Invalid input: expected int, received number"})
                else:
                    issues.append(self._issue_type("duration", "number", duration))
            elif duration < kind[1]:
                issues.append({"origin": "number", "code": "too_small", "minimum": kind[1], "inclusive": True,
                               "path": ["duration"], "message": f"Too small: expected number to be >={kind[1]}"})
            elif duration > kind[2]:
                issues.append({"origin": "number", "code": "too_big", "maximum": kind[2], "inclusive": True,
                               "path": ["duration"], "message": f"Too big: expected number to be <={kind[2]}"})
        elif not (fakelib.is_int(duration) and int(duration) in kind[1]):
            issues.append({"code": "invalid_value", "values": kind[1], "path": ["duration"],
                           "message": f"Invalid option: expected one of {fmt_values(kind[1])}"})
        if endpoint == "image_to_video":
            image = body.get("promptImage")
            if image is None:
                issues.append({"code": "invalid_union", "errors": [], "path": ["promptImage"],
                               "message": "Invalid input"})
            elif isinstance(image, list):
                if not image:
                    issues.append({"origin": "array", "code": "too_small", "minimum": 1, "inclusive": True,
                                   "path": ["promptImage"], "message": "Too small: expected array to have >=1 items"})
                positions = ["first", "last"] if spec.get("last_frame") else ["first"]
                for i, item in enumerate(image):
                    if not isinstance(item, dict):
                        issues.append({"expected": "object", "code": "invalid_type", "path": ["promptImage", i],
                                       "message": f"Invalid input: expected object, received {pyt(item)}"})
                        continue
                    if item.get("position") not in positions:
                        issues.append({"code": "invalid_value", "values": positions,
                                       "path": ["promptImage", i, "position"],
                                       "message": f"Invalid option: expected one of {fmt_values(positions)}"})
                    issues += self._check_image_uri(item.get("uri"), ["promptImage", i, "uri"])
            else:
                issues += self._check_image_uri(image, ["promptImage"])
        seed = body.get("seed")
        if seed is not None and not (fakelib.is_int(seed) and 0 <= seed <= 4294967295):
            issues.append({"code": "custom", "path": ["seed"], "message": "seed must be an integer 0-4294967295"})
        norm = {"model": model, "ratio": ratio, "duration": int(duration) if fakelib.is_int(duration) else duration,
                "prompt": prompt if isinstance(prompt, str) else ""}
        return issues, norm

    # -- task JSON ----------------------------------------------------------------------------
    def _mint_url(self, job: Job) -> str:
        token = secrets.token_urlsafe(24)
        with self.store.lock:
            self.tokens[token] = (job.id, time.time())
        return self.url(f"/runway-outputs/{job.id}/{uuid.uuid4().hex}.mp4?_jwt={token}")

    def _task_json(self, job: Job) -> dict:
        out = {"id": job.id, "createdAt": fakelib.iso_ms(job.created_at)}
        phase = job.phase
        if phase == "queued":
            out["status"] = "THROTTLED" if job.data.get("throttled") else "PENDING"
        elif phase == "running":
            out["status"] = "RUNNING"
            out["progress"] = round(job.progress, 4)
        elif phase == "succeeded":
            out["status"] = "SUCCEEDED"
            out["output"] = [self._mint_url(job)]
        elif phase == "failed":
            out["status"] = "FAILED"
            out["failure"] = self.store.plan_value("error_message", INTERNAL_FAILURE)
            out["failureCode"] = self.store.plan_value("error_code", "INTERNAL")
        elif phase == "moderated":
            out["status"] = "FAILED"
            out["failure"] = MODERATION_FAILURE
            out["failureCode"] = "SAFETY.INPUT.TEXT"
        elif phase == "canceled":
            out["status"] = "CANCELLED"
        return out

    # -- handlers -----------------------------------------------------------------------------
    def create(self, req: Request, endpoint: str) -> Response:
        try:
            body = req.json()
        except BadJSON:
            return runway_error(400, "Invalid JSON body.", docUrl=DOC_URL)
        if not isinstance(body, dict):
            return runway_error(400, "Validation of body failed",
                                issues=[{"expected": "object", "code": "invalid_type", "path": [],
                                         "message": f"Invalid input: expected object, received {pyt(body)}"}],
                                docUrl=DOC_URL)
        issues, norm = self._validate(body, endpoint)
        if issues:
            return runway_error(400, "Validation of body failed", issues=issues, docUrl=DOC_URL)
        w, h = (int(x) for x in norm["ratio"].split(":"))
        outcome, steps = self.store.new_job_settings(norm["prompt"])
        job = Job(str(uuid.uuid4()), width=w, height=h, seconds=norm["duration"], outcome=outcome, steps=steps,
                  prompt=norm["prompt"], data={"endpoint": endpoint, "model": norm["model"], "ratio": norm["ratio"],
                                               "throttled": bool(self.store.plan_value("runway_throttled"))})
        self.store.add_job(job)
        if outcome == "succeed":
            fakelib.prewarm_mp4(w, h, norm["duration"])
        return json_response(200, {"id": job.id})

    def retrieve(self, req: Request, task_id: str) -> Response:
        with self.store.lock:
            job = self.store.get_job(task_id)
            if job is None:
                return runway_error(404, "Task not found")
            job.advance()
            return json_response(200, self._task_json(job))

    def delete(self, req: Request, task_id: str) -> Response:
        with self.store.lock:
            job = self.store.get_job(task_id)
            if job is None:
                return runway_error(404, "Task not found")
            if not job.cancel():  # finished tasks are deleted
                job.deleted = True
        return empty_response(204)

    def download(self, req: Request, task_id: str, file: str) -> Response:
        denied = Response(403, '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
                               '<Message>Access denied</Message></Error>', "application/xml")
        token = req.query.get("_jwt")
        with self.store.lock:
            minted = self.tokens.get(token or "")
            job = self.store.get_job(task_id)
        if minted is None or minted[0] != task_id or job is None or job.phase != "succeeded":
            return denied
        if self.store.is_expired(minted[1]):
            return denied
        return self.serve_video(req, job)


if __name__ == "__main__":
    sys.exit(fakelib.main(RunwayFake))
