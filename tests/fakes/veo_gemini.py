#!/usr/bin/env python3
"""Fake Google Veo on the Gemini API (generativelanguage v1beta; providers.md §2).

Protocol sources:
  * googleapis/python-genai `google/genai/models.py` (`_GenerateVideosParameters_to_mldev`,
    `_GenerateVideosConfig_to_mldev`, `_GenerateVideosOperation_from_mldev`,
    `_GenerateVideosResponse_from_mldev`: response.generateVideoResponse.{generatedSamples[].video.uri,
    raiMediaFilteredCount, raiMediaFilteredReasons}), `operations.py` (GET v1beta/{operation name}),
    `_api_client.py` (header x-goog-api-key), `errors.py` ({"error": {code, message, status}}).
  * https://ai.google.dev/gemini-api/docs/video (models, aspectRatio, resolution, durationSeconds table;
    1080p/4k only at 8 s; videos kept 2 days; download with the API key).
  * Response `@type` as the live API sends it (public captures):
    type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse
  * Bad/missing key bodies (public captures): wrong key -> 400 INVALID_ARGUMENT "API key not valid. Please
    pass a valid API key." (reason API_KEY_INVALID); no key -> 403 PERMISSION_DENIED.

Endpoints:
  POST /v1beta/models/{model}:predictLongRunning   -> 200 {"name": "models/{model}/operations/{opid}"}
  GET  /v1beta/models/{model}/operations/{opid}     -> {name} while running (the live API leaves `done`
                                                       out until it is true) -> {name, done:true,
                                                       response | error}
  GET  /v1beta/files/{fileid}:download?alt=media    -> MP4; needs the key (header or ?key=);
                                                       403 PERMISSION_DENIED once expired
There is no cancel or delete (the Gemini API documents none).
"""

from __future__ import annotations

import base64
import os
import secrets
import string
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fakelib  # noqa: E402
from fakelib import BadJSON, FakeProvider, Job, Request, Response, Route, json_response  # noqa: E402

RESPONSE_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse"
VEO3 = {"durations": [4, 6, 8], "resolutions": ["720p", "1080p", "4k"], "aspects": ["16:9", "9:16"]}
VEO2 = {"durations": [5, 6, 8], "resolutions": [], "aspects": ["16:9", "9:16"]}
MODELS = {
    "veo-3.1-generate-preview": VEO3,
    "veo-3.1-fast-generate-preview": VEO3,
    "veo-3.1-generate-001": VEO3,
    "veo-3.1-fast-generate-001": VEO3,
    "veo-3.0-generate-001": VEO3,
    "veo-3.0-fast-generate-001": VEO3,
    "veo-2.0-generate-001": VEO2,
}
PIXELS = {"720p": 720, "1080p": 1080, "4k": 2160}
STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
                409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL", 501: "NOT_IMPLEMENTED",
                503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED"}
DEFAULT_MESSAGES = {429: "Resource has been exhausted (e.g. check quota).", 500: "Internal error encountered.",
                    503: "The service is currently unavailable.", 504: "Deadline expired before operation could "
                                                                        "complete."}
# An example of the reason text the live API returns (varies; the field is a free-form string list).
RAI_REASON = ("Sorry, we can't create videos from prompts that may violate our policies. You have not been "
              "charged for this attempt. Please try a different prompt.")
FAIL_CODE = 13  # google.rpc.Code INTERNAL
FAIL_MESSAGE = "Video generation failed due to an internal error. Please try again."
ALNUM = string.ascii_lowercase + string.digits


def gerror(status: int, message: str, details=None) -> Response:
    err = {"code": status, "message": message, "status": STATUS_NAMES.get(status, "UNKNOWN")}
    if details:
        err["details"] = details
    return json_response(status, {"error": err})


def rand_id(n: int = 12) -> str:
    return "".join(secrets.choice(ALNUM) for _ in range(n))


class VeoGeminiFake(FakeProvider):
    name = "veo_gemini"
    extra_plan_keys = {"veo_download_redirect": "answer downloads with 302 to a short-lived URL that needs no key "
                                                "(UNVERIFIED variant of the live API)"}

    def routes(self) -> list[Route]:
        return [
            Route("POST", r"^/v1beta/models/(?P<model>[^/:]+):predictLongRunning$", self.create, "create"),
            Route("GET", r"^/v1beta/models/(?P<model>[^/:]+)/operations/(?P<opid>[^/:]+)$", self.get_operation,
                  "poll"),
            Route("GET", r"^/v1beta/files/(?P<file_id>[^/:]+):download$", self.download, "download"),
            Route("GET", r"^/veo-blob/(?P<token>[^/]+)$", self.blob, "download", auth=False),
        ]

    # -- auth / errors ------------------------------------------------------------------------
    def check_auth(self, req: Request):
        key = req.header("x-goog-api-key") or req.query.get("key")
        if not key:
            return gerror(403, "Method doesn't allow unregistered callers (callers without established identity). "
                               "Please use API Key or other form of API consumer identity to call this API.")
        if key != self.key:
            return gerror(400, "API key not valid. Please pass a valid API key.", [
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID",
                 "domain": "googleapis.com", "metadata": {"service": "generativelanguage.googleapis.com"}},
                {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US",
                 "message": "API key not valid. Please pass a valid API key."}])
        return None

    def fault_body(self, status: int, fault: dict, category):
        details = None
        if status == 429 and fault.get("retry_after") is not None:
            details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{fault['retry_after']}s"}]
        return gerror(status, DEFAULT_MESSAGES.get(status, f"Injected error {status}."), details)

    def not_found(self, req: Request):
        return gerror(404, "Requested entity was not found.")

    def method_not_allowed(self, req: Request):
        return gerror(405, f"Method {req.method} is not allowed for {req.path}.")

    # -- validation ---------------------------------------------------------------------------
    @staticmethod
    def _check_image(image, where: str):
        if not isinstance(image, dict):
            return f"Invalid value at '{where}': expected an object."
        if "gcsUri" in image:
            return f"{where}.gcsUri is not supported by the Gemini API; send bytesBase64Encoded."
        if "bytesBase64Encoded" in image:
            data, mime = image.get("bytesBase64Encoded"), image.get("mimeType")
        elif isinstance(image.get("inlineData"), dict):
            data, mime = image["inlineData"].get("data"), image["inlineData"].get("mimeType")
        else:
            return f"{where} must have bytesBase64Encoded (or inlineData) and mimeType."
        if not isinstance(data, str):
            return f"{where}: image bytes are missing."
        try:
            raw = base64.b64decode(data, validate=True)
        except ValueError:
            return f"Invalid value at '{where}.bytesBase64Encoded': not valid base64."
        if not fakelib.image_kind(raw):
            return f"{where}: unable to decode the image. Supported mime types: image/png, image/jpeg, image/webp."
        if mime not in ("image/png", "image/jpeg", "image/webp"):
            return f"{where}.mimeType {mime!r} is not supported."
        return None

    def _validate(self, model: str, body: dict):
        spec = MODELS[model]
        instances = body.get("instances")
        if not isinstance(instances, list) or not instances:
            return "* instances: instances is required and must be a non-empty list", None
        if len(instances) != 1:
            return "Only one instance is supported per request.", None
        inst = instances[0]
        if not isinstance(inst, dict):
            return "Invalid value at 'instances[0]': expected an object.", None
        prompt = inst.get("prompt")
        if prompt is not None and not isinstance(prompt, str):
            return "Invalid value at 'instances[0].prompt': expected a string.", None
        if not prompt and "image" not in inst:
            return "A prompt is required (instances[0].prompt) unless an image is provided.", None
        for field in ("image", "lastFrame"):
            if field in inst:
                problem = self._check_image(inst[field], f"instances[0].{field}")
                if problem:
                    return problem, None
        params = body.get("parameters", {})
        if not isinstance(params, dict):
            return "Invalid value at 'parameters': expected an object.", None
        aspect = params.get("aspectRatio", "16:9")
        if aspect not in spec["aspects"]:
            return (f"Aspect ratio {aspect!r} is not supported. Supported values: "
                    f"{', '.join(spec['aspects'])}."), None
        duration = params.get("durationSeconds", 8)
        # The SDK sends a number; an integral numeric string is tolerated too.
        if isinstance(duration, str) and duration.isdigit():
            duration = int(duration)
        if not fakelib.is_int(duration):
            return "Invalid value at 'parameters.durationSeconds': expected a number.", None
        duration = int(duration)
        if duration not in spec["durations"]:
            lo, hi = min(spec["durations"]), max(spec["durations"])
            if duration < lo or duration > hi:
                return (f"The number value for `durationSeconds` is out of bound. Please provide a value between "
                        f"{lo} and {hi}, inclusive."), None
            return (f"`durationSeconds` {duration} is not supported by {model}. Supported values: "
                    f"{', '.join(map(str, spec['durations']))}."), None
        resolution = params.get("resolution")
        if resolution is not None and not spec["resolutions"]:
            return f"`resolution` is not supported by {model}.", None
        resolution = resolution or "720p"
        if spec["resolutions"] and resolution not in spec["resolutions"]:
            return (f"Resolution {resolution!r} is not supported. Supported values: "
                    f"{', '.join(spec['resolutions'])}."), None
        if resolution in ("1080p", "4k") and duration != 8:
            return f"{resolution} resolution is only supported with durationSeconds 8.", None
        samples = params.get("sampleCount", params.get("numberOfVideos", 1))
        if not (fakelib.is_int(samples) and 1 <= int(samples) <= 4):
            return "sampleCount must be between 1 and 4.", None
        person = params.get("personGeneration")
        if person is not None and person not in ("allow_all", "allow_adult", "dont_allow"):
            return f"Invalid personGeneration {person!r}.", None
        short = PIXELS[resolution]
        long = short * 16 // 9
        w, h = (long, short) if aspect == "16:9" else (short, long)
        return None, {"prompt": prompt or "", "width": w, "height": h, "seconds": duration, "samples": int(samples)}

    # -- operation JSON -----------------------------------------------------------------------
    def _operation(self, job: Job) -> dict:
        name = job.data["name"]
        if not job.terminal:
            return {"name": name}
        if job.phase == "succeeded":
            samples = [{"video": {"uri": self.url(f"/v1beta/files/{fid}:download?alt=media")}}
                       for fid in job.data["file_ids"]]
            return {"name": name, "done": True,
                    "response": {"@type": RESPONSE_TYPE, "generateVideoResponse": {"generatedSamples": samples}}}
        if job.phase == "moderated":
            return {"name": name, "done": True,
                    "response": {"@type": RESPONSE_TYPE, "generateVideoResponse": {
                        "raiMediaFilteredCount": job.data["samples"], "raiMediaFilteredReasons": [RAI_REASON]}}}
        # failed: a google.rpc.Status (code is the gRPC code; no string `status` inside an Operation)
        return {"name": name, "done": True,
                "error": {"code": self.store.plan_value("error_code", FAIL_CODE),
                          "message": self.store.plan_value("error_message", FAIL_MESSAGE)}}

    # -- handlers -----------------------------------------------------------------------------
    def create(self, req: Request, model: str) -> Response:
        if model not in MODELS:
            return gerror(404, f"models/{model} is not found for API version v1beta, or is not supported for "
                               f"predictLongRunning. Call ListModels to see the list of available models and their "
                               f"supported methods.")
        try:
            body = req.json()
        except BadJSON as e:
            return gerror(400, f"Invalid JSON payload received. {e}")
        if not isinstance(body, dict):
            return gerror(400, "Invalid JSON payload received. Expected an object.")
        problem, norm = self._validate(model, body)
        if problem:
            return gerror(400, problem)
        outcome, steps = self.store.new_job_settings(norm["prompt"])
        opid = rand_id()
        job = Job(opid, width=norm["width"], height=norm["height"], seconds=norm["seconds"], outcome=outcome,
                  steps=steps, prompt=norm["prompt"],
                  data={"model": model, "name": f"models/{model}/operations/{opid}", "samples": norm["samples"],
                        "file_ids": [rand_id() for _ in range(norm["samples"])]})
        self.store.add_job(job)
        if outcome == "succeed":
            fakelib.prewarm_mp4(job.width, job.height, job.seconds)
        return json_response(200, {"name": job.data["name"]})

    def get_operation(self, req: Request, model: str, opid: str) -> Response:
        with self.store.lock:
            job = self.store.get_job(opid)
            if job is None or job.data["model"] != model:
                return gerror(404, "Requested entity was not found.")
            job.advance()
            return json_response(200, self._operation(job))

    def _file_job(self, file_id: str):
        with self.store.lock:
            return next((j for j in self.store.jobs.values() if file_id in j.data.get("file_ids", ())), None)

    def download(self, req: Request, file_id: str) -> Response:
        job = self._file_job(file_id)
        if job is None or job.phase != "succeeded" or self.store.is_expired(job.completed_at):
            return gerror(403, f"You do not have permission to access the File {file_id} or it may not exist.")
        if self.store.plan_value("veo_download_redirect"):
            token = rand_id(24)
            with self.store.lock:
                job.data.setdefault("blobs", {})[token] = file_id
            return Response(302, b"", None, {"Location": self.url(f"/veo-blob/{token}")})
        return self.serve_video(req, job)

    def blob(self, req: Request, token: str) -> Response:
        with self.store.lock:
            job = next((j for j in self.store.jobs.values() if token in j.data.get("blobs", {})), None)
        if job is None or self.store.is_expired(job.completed_at):
            return Response(403, "Forbidden", "text/plain")
        return self.serve_video(req, job)


if __name__ == "__main__":
    sys.exit(fakelib.main(VeoGeminiFake))
