#!/usr/bin/env python3
"""Fake Replicate HTTP API (providers.md §6).

Protocol sources:
  * https://replicate.com/docs/reference/http (create/get/cancel predictions, Prefer: wait, 201 on create)
  * replicate/replicate-python `replicate/prediction.py` (Prediction fields, tqdm progress parsing in
    `Prediction.Progress`), `replicate/exceptions.py` (RFC 7807 problem details), `client.py` (Retry-After)
  * https://replicate.com/docs/topics/predictions/rate-limits (429 body
    {"detail":"Request was throttled. Expected available in 1 second."})
  * 422 body as the real API sends it (public captures): {"detail": "- input.x: ...\\n", "status": 422,
    "title": "Input validation failed", "invalid_fields": [{"type", "field", "description"}]}
  * 401 bodies (public captures): {"title":"Unauthenticated","detail":"You did not pass an authentication
    token","status":401} / "...a valid authentication token".
  * Model schema: https://replicate.com/google/veo-3.1/api (prompt, aspect_ratio 16:9|9:16, duration
    4|6|8, resolution 720p|1080p, image, last_frame, negative_prompt, generate_audio, seed; output = one URI).

Endpoints:
  POST /v1/models/{owner}/{name}/predictions   {input:{...}} -> 201 Prediction (status starting)
  POST /v1/predictions                          {version, input} -> 201 Prediction
  GET  /v1/predictions/{id}                     starting -> processing (tqdm logs) -> succeeded | failed
  POST /v1/predictions/{id}/cancel              -> Prediction (canceled if it was unfinished)
  GET  /v1/predictions                          -> {previous, next, results}
  GET  /delivery/{file_id}/output.mp4           -> MP4 (no auth; 404 once expired; the prediction then shows
                                                   data_removed: true)
  GET  /v1/webhooks/default/secret              -> {"key": "whsec_..."}: the signing key of webhooks
Webhooks: a create with `webhook` (and `webhook_events_filter` containing "completed", or none) runs on its own
without polls and POSTs the final prediction there, signed the Standard Webhooks way (webhook-id,
webhook-timestamp, webhook-signature) with the key above (env FAKE_WEBHOOK_SECRET, else a fixed test key);
[fake:badsig] in the prompt signs with a wrong key.
Auth: `Authorization: Bearer KEY` (also `Token KEY`).
"""

from __future__ import annotations

import base64
import json
import os
import re
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fakelib  # noqa: E402
from fakelib import BadJSON, FakeProvider, Job, Request, Response, Route, json_response  # noqa: E402

WEB = "https://replicate.com"
VEO31 = {
    "duration": {"type": "enum", "values": [4, 6, 8], "default": 8},
    "aspect_ratio": {"type": "enum", "values": ["16:9", "9:16"], "default": "16:9"},
    "resolution": {"type": "enum", "values": ["720p", "1080p"], "default": "1080p"},
}
VEO2 = {
    "duration": {"type": "range", "min": 5, "max": 8, "default": 5},
    "aspect_ratio": {"type": "enum", "values": ["16:9", "9:16"], "default": "16:9"},
}
MODELS = {
    "google/veo-3.1": VEO31,
    "google/veo-3.1-fast": VEO31,
    "google/veo-2": VEO2,
}
DIMS = {("16:9", "720p"): (1280, 720), ("9:16", "720p"): (720, 1280),
        ("16:9", "1080p"): (1920, 1080), ("9:16", "1080p"): (1080, 1920)}
STRING_FIELDS = ("prompt", "image", "last_frame", "negative_prompt")
MODERATION_ERROR = "The input or output was flagged as sensitive. Please try again with different inputs. (E005)"
FAIL_ERROR = "Prediction failed: the model raised an unexpected error."


def problem(status: int, title: str, detail: str, **extra) -> Response:
    return json_response(status, {"title": title, "detail": detail, "status": status, **extra})


def new_id() -> str:
    return base64.b32encode(os.urandom(20)).decode().lower().rstrip("=")[:26]


def tqdm_line(pct: int, elapsed: int, remaining: int) -> str:
    eighths = int(pct * 80 / 100)
    full, rem = divmod(eighths, 8)
    bar = "█" * full + (" ▏▎▍▌▋▊▉"[rem] if full < 10 and rem else "")
    return f"{pct:3d}%|{bar.ljust(10)}| {pct}/100 [{elapsed // 60:02d}:{elapsed % 60:02d}<{remaining // 60:02d}:{remaining % 60:02d}]"


class ReplicateFake(FakeProvider):
    name = "replicate"

    def routes(self) -> list[Route]:
        pid = r"(?P<pred_id>[^/]+)"
        return [
            Route("POST", r"^/v1/models/(?P<owner>[^/]+)/(?P<model_name>[^/]+)/predictions$", self.create_model,
                  "create"),
            Route("POST", r"^/v1/predictions$", self.create_version, "create"),
            Route("GET", r"^/v1/predictions$", self.list_predictions, None),
            Route("GET", rf"^/v1/predictions/{pid}$", self.retrieve, "poll"),
            Route("POST", rf"^/v1/predictions/{pid}/cancel$", self.cancel, "cancel"),
            Route("GET", r"^/delivery/(?P<file_id>[^/]+)/(?P<name>[^/]+)$", self.download, "download", auth=False),
            Route("GET", r"^/v1/webhooks/default/secret$", self.webhook_secret, None),
        ]

    # -- webhooks -----------------------------------------------------------------------------
    @staticmethod
    def signing_secret() -> str:
        return os.environ.get("FAKE_WEBHOOK_SECRET") or "whsec_" + base64.b64encode(b"fake replicate signing key").decode()

    def webhook_secret(self, req: Request) -> Response:
        return json_response(200, {"key": self.signing_secret()})

    def _send_webhook(self, job: Job) -> None:
        with self.store.lock:
            body = json.dumps(self._prediction(job)).encode()
        secret = self.signing_secret()
        if fakelib.BAD_SIGNATURE_MARKER in job.prompt:
            secret = "whsec_" + base64.b64encode(b"not the account key").decode()
        msg_id = "msg_" + new_id()
        ts = int(time.time())
        fakelib.post_callback(job.data["webhook"], body, {
            "webhook-id": msg_id,
            "webhook-timestamp": str(ts),
            "webhook-signature": fakelib.standard_webhooks_signature(secret, msg_id, ts, body),
        })

    # -- auth / errors ------------------------------------------------------------------------
    def check_auth(self, req: Request):
        auth = req.header("Authorization")
        if not auth:
            return problem(401, "Unauthenticated", "You did not pass an authentication token")
        scheme, _, token = auth.partition(" ")
        if scheme not in ("Bearer", "Token") or token != self.key:
            return problem(401, "Unauthenticated", "You did not pass a valid authentication token")
        return None

    def fault_body(self, status: int, fault: dict, category):
        if status == 429:
            secs = fault.get("retry_after", 1)
            secs = int(secs) if float(secs).is_integer() else secs
            return json_response(429, {"detail": f"Request was throttled. Expected available in {secs} second"
                                                 f"{'' if secs == 1 else 's'}."})
        if status >= 500:
            return problem(status, "Internal Server Error", "Something went wrong on our end. Please try again.")
        return problem(status, f"Error {status}", f"Injected error {status}.")

    def not_found(self, req: Request):
        return problem(404, "Not found", "The requested resource could not be found.")

    def method_not_allowed(self, req: Request):
        return problem(405, "Method not allowed", f"Method \"{req.method}\" not allowed.")

    # -- validation ---------------------------------------------------------------------------
    @staticmethod
    def _validate_input(model: str, inp) -> tuple[list[dict], dict]:
        """(invalid_fields, normalized) for the model's input schema."""
        schema = MODELS[model]
        bad: list[dict] = []
        if not isinstance(inp, dict):
            return [{"type": "invalid_type", "field": "input", "description": "Invalid type. Expected: object"}], {}
        prompt = inp.get("prompt")
        if prompt is None:
            bad.append({"type": "required", "field": "input", "description": "prompt is required"})
        for name in STRING_FIELDS:
            v = inp.get(name)
            if v is not None and not isinstance(v, str):
                bad.append({"type": "invalid_type", "field": f"input.{name}",
                            "description": f"Invalid type. Expected: string, given: {type(v).__name__.replace('str', 'string')}"})
        norm = {}
        for name, spec in schema.items():
            v = inp.get(name, spec["default"])
            if spec["type"] == "enum":
                if v not in spec["values"] or isinstance(v, bool):
                    if isinstance(spec["values"][0], int) and not fakelib.is_int(v):
                        bad.append({"type": "invalid_type", "field": f"input.{name}",
                                    "description": f"Invalid type. Expected: integer, given: "
                                                   f"{'string' if isinstance(v, str) else type(v).__name__}"})
                    else:
                        vals = ", ".join(f'"{x}"' if isinstance(x, str) else str(x) for x in spec["values"])
                        bad.append({"type": "enum", "field": f"input.{name}",
                                    "description": f"{name} must be one of the following: {vals}"})
            else:
                if not fakelib.is_int(v):
                    bad.append({"type": "invalid_type", "field": f"input.{name}",
                                "description": f"Invalid type. Expected: integer, given: "
                                               f"{'string' if isinstance(v, str) else type(v).__name__}"})
                elif v < spec["min"]:
                    bad.append({"type": "number_gte", "field": f"input.{name}",
                                "description": f"Must be greater than or equal to {spec['min']}"})
                elif v > spec["max"]:
                    bad.append({"type": "number_lte", "field": f"input.{name}",
                                "description": f"Must be less than or equal to {spec['max']}"})
            norm[name] = v
        for name in ("generate_audio",):
            v = inp.get(name)
            if v is not None and not isinstance(v, bool):
                bad.append({"type": "invalid_type", "field": f"input.{name}",
                            "description": "Invalid type. Expected: boolean"})
        for name in ("image", "last_frame"):
            v = inp.get(name)
            if isinstance(v, str) and not re.match(r"^(https?://|data:)", v):
                bad.append({"type": "format", "field": f"input.{name}", "description": "Does not match format 'uri'"})
        norm["prompt"] = prompt if isinstance(prompt, str) else ""
        return bad, norm

    def _create(self, req: Request, model: str, version: str, inp) -> Response:
        bad, norm = self._validate_input(model, inp)
        if bad:
            detail = "".join(f"- {b['field']}: {b['description']}\n" for b in bad)
            return problem(422, "Input validation failed", detail, invalid_fields=bad)
        aspect = norm.get("aspect_ratio", "16:9")
        resolution = norm.get("resolution", "720p")
        w, h = DIMS[(aspect, resolution)]
        seconds = int(norm["duration"])
        outcome, steps = self.store.new_job_settings(norm["prompt"])
        body = req.json() or {}
        job = Job(new_id(), width=w, height=h, seconds=seconds, outcome=outcome, steps=steps, prompt=norm["prompt"],
                  data={"model": model, "version": version, "input": inp, "logs": [],
                        "webhook": body.get("webhook"), "file_id": uuid.uuid4().hex})
        self.store.add_job(job)
        if outcome == "succeed":
            fakelib.prewarm_mp4(w, h, seconds)
        events = body.get("webhook_events_filter") or ["start", "output", "logs", "completed"]
        if body.get("webhook") and "completed" in events:
            fakelib.run_job_in_background(self.store, job, self._advance, self._send_webhook)
        prefer = (req.header("Prefer") or "").strip().lower()
        if prefer.startswith("wait"):
            # The real API blocks up to N (<= 60) s and returns the prediction in whatever state it reached;
            # the fake's jobs do no real work, so they finish at once.
            with self.store.lock:
                while not job.terminal:
                    self._advance(job)
        return json_response(201, self._prediction(job))

    # -- prediction JSON ----------------------------------------------------------------------
    def _advance(self, job: Job) -> None:
        job.advance()
        logs = job.data["logs"]
        if job.phase == "running":
            pct = int(job.progress * 100)
            elapsed = int(pct / 5)
            logs.append(tqdm_line(pct, elapsed, int((100 - pct) / 5)))
        elif job.terminal and not job.data.get("final_logged"):
            job.data["final_logged"] = True
            if job.phase == "succeeded":
                logs.append(tqdm_line(100, 20, 0))
                logs.append(f"Generated video in {job.completed_at - job.created_at:.2f} seconds")
            elif job.phase in ("failed", "moderated"):
                logs.append("Error: prediction failed")

    def _prediction(self, job: Job) -> dict:
        status = {"queued": "starting", "running": "processing", "succeeded": "succeeded", "failed": "failed",
                  "moderated": "failed", "canceled": "canceled"}[job.phase]
        removed = job.phase == "succeeded" and self.store.is_expired(job.completed_at)
        error = None
        if job.phase == "failed":
            error = self.store.plan_value("error_message", FAIL_ERROR)
        elif job.phase == "moderated":
            error = MODERATION_ERROR
        out = {
            "id": job.id,
            "model": job.data["model"],
            "version": job.data["version"],
            "input": job.data["input"],
            "logs": "\n".join(job.data["logs"]) + ("\n" if job.data["logs"] else ""),
            "output": self.url(f"/delivery/{job.data['file_id']}/output.mp4") if job.phase == "succeeded" else None,
            "data_removed": removed,
            "error": error,
            "status": status,
            "created_at": fakelib.iso_us(job.created_at),
            "urls": {
                "cancel": self.url(f"/v1/predictions/{job.id}/cancel"),
                "get": self.url(f"/v1/predictions/{job.id}"),
                "stream": self.url(f"/v1/predictions/{job.id}/stream"),
                "web": f"{WEB}/p/{job.id}",
            },
        }
        if job.started_at:
            out["started_at"] = fakelib.iso_us(job.started_at)
        if job.terminal and job.completed_at:
            out["completed_at"] = fakelib.iso_us(job.completed_at)
            out["metrics"] = {"predict_time": round(job.completed_at - (job.started_at or job.created_at), 6),
                              "total_time": round(job.completed_at - job.created_at, 6)}
        return out

    # -- handlers -----------------------------------------------------------------------------
    def _body(self, req: Request):
        try:
            body = req.json()
        except BadJSON as e:
            return None, problem(400, "Bad request", f"Invalid JSON: {e}")
        if not isinstance(body, dict):
            return None, problem(422, "Input validation failed", "- (root): Invalid type. Expected: object\n",
                                 invalid_fields=[{"type": "invalid_type", "field": "(root)",
                                                  "description": "Invalid type. Expected: object"}])
        return body, None

    def create_model(self, req: Request, owner: str, model_name: str) -> Response:
        body, err = self._body(req)
        if err:
            return err
        model = f"{owner}/{model_name}"
        if model not in MODELS:
            return problem(404, "Model not found", f"The requested model {model} could not be found.")
        if "input" not in body:
            return problem(422, "Input validation failed", "- (root): input is required\n",
                           invalid_fields=[{"type": "required", "field": "(root)", "description": "input is required"}])
        return self._create(req, model, "hidden", body["input"])

    def create_version(self, req: Request) -> Response:
        body, err = self._body(req)
        if err:
            return err
        version = body.get("version")
        if not version:
            return problem(422, "Input validation failed", "- version is required\n",
                           invalid_fields=[{"type": "required", "field": "", "description": "version is required"}])
        model = None
        if isinstance(version, str):
            m = re.match(r"^([\w.-]+/[\w.-]+)(?::([0-9a-f]{64}))?$", version)
            if m and m.group(1) in MODELS:
                model = m.group(1)
            elif re.match(r"^[0-9a-f]{64}$", version):
                model = "google/veo-3.1"  # any bare version hash is treated as a google/veo-3.1 version
        if model is None:
            return problem(422, "Invalid version or not permitted",
                           "The specified version does not exist (or perhaps you don't have permission to use it?)")
        if "input" not in body:
            return problem(422, "Input validation failed", "- (root): input is required\n",
                           invalid_fields=[{"type": "required", "field": "(root)", "description": "input is required"}])
        hash_ = version.split(":", 1)[1] if ":" in version else (version if "/" not in version else "hidden")
        return self._create(req, model, hash_, body["input"])

    def list_predictions(self, req: Request) -> Response:
        with self.store.lock:
            jobs = sorted((j for j in self.store.jobs.values() if not j.deleted), key=lambda j: -j.created_at)
            return json_response(200, {"previous": None, "next": None,
                                       "results": [self._prediction(j) for j in jobs[:100]]})

    def retrieve(self, req: Request, pred_id: str) -> Response:
        with self.store.lock:
            job = self.store.get_job(pred_id)
            if job is None:
                return problem(404, "Not found", "The requested resource could not be found.")
            self._advance(job)
            return json_response(200, self._prediction(job))

    def cancel(self, req: Request, pred_id: str) -> Response:
        with self.store.lock:
            job = self.store.get_job(pred_id)
            if job is None:
                return problem(404, "Not found", "The requested resource could not be found.")
            job.cancel()
            return json_response(200, self._prediction(job))

    def download(self, req: Request, file_id: str, name: str) -> Response:
        with self.store.lock:
            job = next((j for j in self.store.jobs.values() if j.data.get("file_id") == file_id), None)
        if job is None or job.phase != "succeeded" or name != "output.mp4" or self.store.is_expired(job.completed_at):
            return Response(404, "Not Found", "text/plain; charset=utf-8")
        return self.serve_video(req, job, {"Cache-Control": "public, max-age=3600"})


if __name__ == "__main__":
    sys.exit(fakelib.main(ReplicateFake))
