#!/usr/bin/env python3
"""Fake fal.ai queue API (providers.md §7).

Protocol sources:
  * https://docs.fal.ai/model-endpoints/queue and https://fal.ai/docs/api-reference/inference-api
    (submit -> {request_id, response_url, status_url, cancel_url}; status 202 IN_QUEUE/IN_PROGRESS,
    200 COMPLETED; result at response_url; URLs use only owner/app, never the sub-path)
  * fal-ai/fal `projects/fal_client/src/fal_client/client.py` (Queued(position) / InProgress(logs) /
    Completed(logs, metrics); `?logs=1`; RETRY_CODES 408/409/429), `auth.py` (`Authorization: Key ...`)
  * https://fal.ai/docs/inference-api/queue/cancel (PUT .../cancel -> 202 CANCELLATION_REQUESTED,
    400 ALREADY_COMPLETED, 404 NOT_FOUND)
  * https://docs.fal.ai/errors (422 {"detail": [{loc, msg, type, url, ctx?}]}, header X-Fal-Retryable)
  * 401 body for a wrong key (public captures, fal-ai/fal#1068): {"detail": "No user found for Key ID and Secret"}
  * fal-ai/veo3 inputs (mirror of the model page): prompt, aspect_ratio, duration "4s"|"6s"|"8s",
    resolution 720p|1080p, generate_audio, negative_prompt, seed, enhance_prompt, auto_fix.

Endpoints (any {owner}/{app}; input schema chosen by the app id, see SCHEMAS):
  POST /{owner}/{app}[/{sub/path}]                 -> 200 {request_id, response_url, status_url, cancel_url, ...}
  GET  /{owner}/{app}/requests/{id}/status[?logs=1] -> 202 IN_QUEUE | 202 IN_PROGRESS | 200 COMPLETED
  GET  /{owner}/{app}/requests/{id}                -> 200 result JSON | 422 model error | 400 still in progress
  PUT  /{owner}/{app}/requests/{id}/cancel         -> 202 / 400 / 404
  GET  /cdn/files/{file_id}/{name}                 -> MP4 (no auth; 404 once expired)
Auth: `Authorization: Key KEY`.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fakelib  # noqa: E402
from fakelib import BadJSON, FakeProvider, Job, Request, Response, Route, json_response  # noqa: E402

ERR_URL = "https://docs.fal.ai/errors#"
MODERATION_MSG = ("The content could not be processed because it contained material flagged by a content checker.")
FAIL_TYPE = "no_media_generated"  # fal's type for a runtime generation failure is not documented; guessed
FAIL_MSG = "The model did not generate a video for this request."

VEO = {
    "prompt": {"type": "str", "required": True},
    "aspect_ratio": {"type": "literal", "values": ["16:9", "9:16"], "default": "16:9"},
    "duration": {"type": "literal", "values": ["4s", "6s", "8s"], "default": "8s"},
    "resolution": {"type": "literal", "values": ["720p", "1080p"], "default": "720p"},
    "generate_audio": {"type": "bool"},
    "enhance_prompt": {"type": "bool"},
    "auto_fix": {"type": "bool"},
    "negative_prompt": {"type": "str"},
    "seed": {"type": "int"},
}
KLING = {
    "prompt": {"type": "str", "required": True},
    "duration": {"type": "literal", "values": ["5", "10"], "default": "5"},
    "aspect_ratio": {"type": "literal", "values": ["16:9", "9:16", "1:1"], "default": "16:9"},
    "negative_prompt": {"type": "str"},
    "cfg_scale": {"type": "float"},
}
GENERIC = {"prompt": {"type": "str", "required": True}}


def schema_for(app_path: str) -> tuple[str, dict]:
    if "veo" in app_path:
        schema = dict(VEO)
    elif "kling" in app_path:
        schema = dict(KLING)
    else:
        return "generic", dict(GENERIC)
    if "image-to-video" in app_path:
        schema["image_url"] = {"type": "str", "required": True}
    return ("veo" if "veo" in app_path else "kling"), schema


def dims(family: str, inp: dict) -> tuple[int, int, float]:
    if family == "veo":
        p = 1080 if inp["resolution"] == "1080p" else 720
        long = p * 16 // 9
        w, h = (long, p) if inp["aspect_ratio"] == "16:9" else (p, long)
        return w, h, int(inp["duration"].rstrip("s"))
    if family == "kling":
        w, h = {"16:9": (1280, 720), "9:16": (720, 1280), "1:1": (720, 720)}[inp["aspect_ratio"]]
        return w, h, int(inp["duration"])
    return 1280, 720, 5


def err_item(loc: list, msg: str, type_: str, inp=None, ctx=None) -> dict:
    item = {"loc": loc, "msg": msg, "type": type_, "url": ERR_URL + type_}
    if inp is not None:
        item["input"] = inp
    if ctx is not None:
        item["ctx"] = ctx
    return item


def model_error(items: list, status: int = 422) -> Response:
    return json_response(status, {"detail": items}, {"X-Fal-Retryable": "false"})


def now_iso() -> str:
    return fakelib.iso_us(time.time())


class FalFake(FakeProvider):
    name = "fal"
    extra_plan_keys = {"fal_moderation_stage": "submit (default: 422 at submit) | result (COMPLETED with error, "
                                               "422 at the result URL)"}

    def routes(self) -> list[Route]:
        app = r"(?P<owner>[^/]+)/(?P<app>[^/]+)"
        rid = r"(?P<request_id>[^/]+)"
        return [
            Route("GET", r"^/cdn/files/(?P<file_id>[^/]+)/(?P<name>[^/]+)$", self.download, "download", auth=False),
            Route("GET", r"^/\.well-known/jwks\.json$", self.jwks, None, auth=False),
            Route("GET", rf"^/{app}/requests/{rid}/status$", self.status, "poll"),
            Route("PUT", rf"^/{app}/requests/{rid}/cancel$", self.cancel, "cancel"),
            Route("GET", rf"^/{app}/requests/{rid}$", self.result, "result"),
            Route("POST", r"^/(?P<app_path>(?!__)[^/]+/[^/]+(?:/[^/]+)*)$", self.submit, "create"),
        ]

    # -- auth / errors ------------------------------------------------------------------------
    def check_auth(self, req: Request):
        auth = req.header("Authorization")
        if not auth:
            # Exact text for a missing header is a guess.
            return json_response(401, {"detail": "Missing authorization header. Use 'Authorization: Key <FAL_KEY>'."})
        scheme, _, token = auth.partition(" ")
        if scheme != "Key" or token != self.key:
            return json_response(401, {"detail": "No user found for Key ID and Secret"})
        return None

    def fault_body(self, status: int, fault: dict, category):
        # Infrastructure errors: {"detail": "...", "error_type": ...} + X-Fal-Error-Type (docs: request-errors).
        types = {429: ("rate_limited", "Too many requests."), 500: ("internal_error", "Internal server error."),
                 502: ("runner_connection_error", "Bad gateway."),
                 503: ("runner_scheduling_failure", "No runner is available for this request."),
                 504: ("request_timeout", "The request timed out.")}
        etype, msg = types.get(status, ("internal_error", f"Injected error {status}."))
        return json_response(status, {"detail": msg, "error_type": etype},
                             {"X-Fal-Error-Type": etype, "X-Fal-Retryable": "true" if status >= 429 else "false"})

    def not_found(self, req: Request):
        return json_response(404, {"detail": "Not Found"})

    def method_not_allowed(self, req: Request):
        if "/requests/" in req.path:  # e.g. a status URL built with the sub-path: no such route
            return self.not_found(req)
        return json_response(405, {"detail": "Method Not Allowed"})

    # -- URLs / JSON --------------------------------------------------------------------------
    def _urls(self, job: Job) -> dict:
        base = self.url(f"/{job.data['app_id']}/requests/{job.id}")
        return {"request_id": job.id, "response_url": base, "status_url": base + "/status",
                "cancel_url": base + "/cancel"}

    def _logs(self, job: Job) -> list:
        return job.data["logs"]

    def _status_json(self, job: Job, with_logs: bool) -> tuple[int, dict]:
        out = {**self._urls(job)}
        logs = list(self._logs(job)) if with_logs else None
        if job.phase == "queued":
            return 202, {"status": "IN_QUEUE", "queue_position": 0, **out, "logs": logs}
        if job.phase == "running":
            return 202, {"status": "IN_PROGRESS", **out, "logs": logs}
        body = {"status": "COMPLETED", **out, "logs": logs,
                "metrics": {"inference_time": round((job.completed_at or time.time()) -
                                                    (job.started_at or job.created_at), 3)}}
        err = self._error_of(job)
        if err:
            body["error"] = err[0]["msg"]
            body["error_type"] = err[0]["type"]
        return 200, body

    def _error_of(self, job: Job):
        if job.phase == "failed":
            return [err_item(["body"], self.store.plan_value("error_message", FAIL_MSG),
                             self.store.plan_value("error_code", FAIL_TYPE))]
        if job.phase == "moderated":
            return [err_item(["body", "prompt"], MODERATION_MSG, "content_policy_violation", job.prompt)]
        if job.phase == "canceled":
            return [err_item(["body"], "Request was cancelled by the client.", "client_cancelled")]
        return None

    def _advance(self, job: Job) -> None:
        before = job.phase
        job.advance()
        logs = job.data["logs"]
        if job.phase == "running":
            logs.append({"message": f"Generating video: {int(job.progress * 100)}%", "level": "INFO",
                         "source": "user", "timestamp": now_iso()})
        elif job.terminal and before != job.phase:
            logs.append({"message": "Generation finished" if job.phase == "succeeded" else "Generation failed",
                         "level": "INFO" if job.phase == "succeeded" else "ERROR", "source": "user",
                         "timestamp": now_iso()})

    # -- validation ---------------------------------------------------------------------------
    @staticmethod
    def _validate(schema: dict, body: dict) -> tuple[list, dict]:
        errors, norm = [], {}
        for name, spec in schema.items():
            if name not in body or body[name] is None:
                if spec.get("required"):
                    errors.append(err_item(["body", name], "Field required", "missing", body))
                elif "default" in spec:
                    norm[name] = spec["default"]
                continue
            v = body[name]
            t = spec["type"]
            if t == "str" and not isinstance(v, str):
                errors.append(err_item(["body", name], "Input should be a valid string", "string_type", v))
            elif t == "bool" and not isinstance(v, bool):
                errors.append(err_item(["body", name], "Input should be a valid boolean", "bool_type", v))
            elif t == "int" and not fakelib.is_int(v):
                errors.append(err_item(["body", name], "Input should be a valid integer", "int_type", v))
            elif t == "float" and (isinstance(v, bool) or not isinstance(v, (int, float))):
                errors.append(err_item(["body", name], "Input should be a valid number", "float_type", v))
            elif t == "literal" and v not in spec["values"]:
                vals = spec["values"]
                expected = ", ".join(f"'{x}'" for x in vals[:-1]) + f" or '{vals[-1]}'"
                errors.append(err_item(["body", name], f"Input should be {expected}", "literal_error", v,
                                       {"expected": expected}))
            else:
                norm[name] = v
        if isinstance(body.get("prompt"), str) and not body["prompt"].strip() and "prompt" in schema:
            errors.append(err_item(["body", "prompt"], "String should have at least 1 character", "string_too_short",
                                   body["prompt"], {"min_length": 1}))
        return errors, norm

    # -- handlers -----------------------------------------------------------------------------
    def submit(self, req: Request, app_path: str) -> Response:
        if "/requests/" in f"/{app_path}/":
            return self.method_not_allowed(req)
        try:
            body = req.json()
        except BadJSON as e:
            return model_error([err_item(["body"], f"JSON decode error: {e}", "json_invalid")])
        if body is None:
            body = {}
        if not isinstance(body, dict):
            return model_error([err_item(["body"], "Input should be a valid dictionary", "dict_type", body)])
        family, schema = schema_for(app_path)
        errors, norm = self._validate(schema, body)
        if errors:
            return model_error(errors)
        prompt = norm.get("prompt", "")
        outcome, steps = self.store.new_job_settings(prompt)
        if outcome == "moderated" and self.store.plan_value("fal_moderation_stage", "submit") == "submit":
            return model_error([err_item(["body", "prompt"], MODERATION_MSG, "content_policy_violation", prompt)])
        owner, app = app_path.split("/")[:2]
        w, h, seconds = dims(family, norm)
        job = Job(str(uuid.uuid4()), width=w, height=h, seconds=seconds, outcome=outcome, steps=steps, prompt=prompt,
                  data={"app_id": f"{owner}/{app}", "endpoint": app_path, "input": body, "logs": [],
                        "file_id": uuid.uuid4().hex[:20], "seed": body.get("seed", random.randint(0, 2 ** 31 - 1)),
                        "webhook": req.query.get("fal_webhook")})
        self.store.add_job(job)
        if outcome == "succeed":
            fakelib.prewarm_mp4(w, h, seconds)
        if job.data["webhook"]:
            fakelib.run_job_in_background(self.store, job, self._advance, self._send_webhook)
        resp = {"status": "IN_QUEUE", **self._urls(job), "queue_position": 0}
        if job.data["webhook"]:
            resp["gateway_request_id"] = job.id
        return json_response(200, resp)

    # -- webhooks -----------------------------------------------------------------------------
    _key = None

    def signing_key(self):
        if FalFake._key is None:
            FalFake._key = fakelib.Ed25519Key()
        return FalFake._key

    def jwks(self, req: Request) -> Response:
        return json_response(200, {"keys": [self.signing_key().jwk()]})

    def _send_webhook(self, job: Job) -> None:
        """fal's webhook: {request_id, gateway_request_id, status OK|ERROR, payload, error}, signed with Ed25519
        over request id, user id, timestamp and the body's SHA-256 (X-Fal-Webhook-* headers)."""
        with self.store.lock:
            err = self._error_of(job)
            file_id = job.data["file_id"]
        if err:
            body = {"request_id": job.id, "gateway_request_id": job.id, "status": "ERROR",
                    "error": "Invalid status code: 422", "payload": {"detail": err}}
        else:
            path = fakelib.ensure_mp4(job.width, job.height, job.seconds)
            body = {"request_id": job.id, "gateway_request_id": job.id, "status": "OK",
                    "payload": {"video": {"url": self.url(f"/cdn/files/{file_id}/output.mp4"),
                                          "content_type": "video/mp4", "file_name": "output.mp4",
                                          "file_size": os.path.getsize(path)},
                                "seed": job.data["seed"]}}
        raw = json.dumps(body).encode()
        user_id = "fake-user"
        ts = str(int(time.time()))
        message = "\n".join([job.id, user_id, ts, hashlib.sha256(raw).hexdigest()]).encode()
        key = self.signing_key()
        signature = key.sign(message)
        if fakelib.BAD_SIGNATURE_MARKER in job.prompt:
            signature = bytes(64)
        fakelib.post_callback(job.data["webhook"], raw, {
            "X-Fal-Webhook-Request-Id": job.id,
            "X-Fal-Webhook-User-Id": user_id,
            "X-Fal-Webhook-Timestamp": ts,
            "X-Fal-Webhook-Signature": signature.hex(),
        })

    def _find(self, owner: str, app: str, request_id: str):
        job = self.store.get_job(request_id)
        if job is None or job.data["app_id"] != f"{owner}/{app}":
            return None
        return job

    def status(self, req: Request, owner: str, app: str, request_id: str) -> Response:
        with self.store.lock:
            job = self._find(owner, app, request_id)
            if job is None:
                return json_response(404, {"detail": "Request not found"})
            self._advance(job)
            status, body = self._status_json(job, req.query.get("logs") in ("1", "true"))
            return json_response(status, body)

    def result(self, req: Request, owner: str, app: str, request_id: str) -> Response:
        with self.store.lock:
            job = self._find(owner, app, request_id)
            if job is None:
                return json_response(404, {"detail": "Request not found"})
            if not job.terminal:
                # Exact status/text for "not finished yet" is not documented; guessed.
                return json_response(400, {"detail": "Request is still in progress"})
            err = self._error_of(job)
            if err:
                return model_error(err)
            file_id = job.data["file_id"]
        try:
            path = fakelib.ensure_mp4(job.width, job.height, job.seconds)
        except Exception as e:  # noqa: BLE001
            return json_response(500, {"detail": f"fake could not render the video: {e}"})
        return json_response(200, {
            "video": {"url": self.url(f"/cdn/files/{file_id}/output.mp4"), "content_type": "video/mp4",
                      "file_name": "output.mp4", "file_size": os.path.getsize(path)},
            "seed": job.data["seed"],
        })

    def cancel(self, req: Request, owner: str, app: str, request_id: str) -> Response:
        with self.store.lock:
            job = self._find(owner, app, request_id)
            if job is None:
                return json_response(404, {"status": "NOT_FOUND"})
            if not job.cancel():
                return json_response(400, {"status": "ALREADY_COMPLETED"})
            job.data["logs"].append({"message": "Request cancelled", "level": "INFO", "source": "user",
                                     "timestamp": now_iso()})
            return json_response(202, {"status": "CANCELLATION_REQUESTED"})

    def download(self, req: Request, file_id: str, name: str) -> Response:
        with self.store.lock:
            job = next((j for j in self.store.jobs.values() if j.data.get("file_id") == file_id), None)
        if job is None or job.phase != "succeeded" or name != "output.mp4" or self.store.is_expired(job.completed_at):
            return Response(404, "Not Found", "text/plain; charset=utf-8")
        return self.serve_video(req, job, {"Cache-Control": "max-age=2592000"})


if __name__ == "__main__":
    sys.exit(fakelib.main(FalFake))
