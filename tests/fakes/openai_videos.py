#!/usr/bin/env python3
"""Fake OpenAI-compatible `/v1/videos` server, shaped like vLLM-Omni (providers.md §14b).

Protocol sources:
  * vllm-project/vllm-omni `vllm_omni/entrypoints/openai/protocol/videos.py` (VideoResponse,
    VideoError, VideoDeleteResponse, VideoListResponse; seconds ^[1-9]\\d*$, size ^\\d+x\\d+$, ids
    `video_gen_<hex>`, progress 0-100 int, media_type video/mp4).
  * https://docs.vllm.ai/projects/vllm-omni/en/latest/serving/videos_api/ (endpoints).
  * OpenAI Videos API (openai-python `types/video.py`) for the error envelope and `variant`.

Endpoints:
  POST   /v1/videos                      JSON, multipart/form-data or urlencoded -> VideoResponse (queued)
  GET    /v1/videos                      list {object:list, data, first_id, last_id, has_more}
  GET    /v1/videos/{id}                 queued -> in_progress (progress) -> completed | failed
  GET    /v1/videos/{id}/content         ?variant=video (MP4); thumbnail/spritesheet -> 404
  POST   /v1/videos/{id}/remix           {prompt} -> new VideoResponse with remixed_from_video_id; only with the
                                         plan key "openai_remix": true (vLLM-Omni has no remix -> 404 by default)
  DELETE /v1/videos/{id}                 {id, deleted:true, object:"video.deleted"}
Auth: `Authorization: Bearer KEY`; anything else -> 401 {"error": "Unauthorized"} (vLLM's
`--api-key` middleware answers exactly this, NOT the OpenAI envelope).
Every other error uses the OpenAI envelope {"error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from urllib.parse import parse_qs

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fakelib  # noqa: E402
from fakelib import BadJSON, FakeProvider, Job, Request, Response, Route, UploadedFile, json_response  # noqa: E402

DEFAULT_MODEL = "Wan-AI/Wan2.2-T2V-A14B-Diffusers"
DEFAULT_SIZE = "1280x720"
DEFAULT_SECONDS = "4"
SIZE_RE = re.compile(r"^\d+x\d+$")
SECONDS_RE = re.compile(r"^[1-9]\d*$")
MODERATION_MESSAGE = "Your request was blocked by our moderation system."
FAIL_CODE = "video_generation_failed"  # vLLM-Omni's code for a failed job is not documented; guessed
FAIL_MESSAGE = "Video generation failed: the diffusion pipeline raised an error."


def oai_error(status: int, message: str, *, type_: str = "invalid_request_error", param=None, code=None) -> Response:
    return json_response(status, {"error": {"message": message, "type": type_, "param": param, "code": code}})


class OpenAIVideosFake(FakeProvider):
    name = "openai_videos"
    extra_plan_keys = {"openai_remix": "serve POST /v1/videos/{id}/remix like the Sora API (vLLM-Omni has no remix; "
                                       "off by default -> 404)"}

    def routes(self) -> list[Route]:
        vid = r"(?P<video_id>[^/]+)"
        return [
            Route("POST", r"^/v1/videos$", self.create, "create"),
            Route("GET", r"^/v1/videos$", self.list_videos, None),
            Route("POST", rf"^/v1/videos/{vid}/remix$", self.remix, "create"),
            Route("GET", rf"^/v1/videos/{vid}/content$", self.content, "download"),
            Route("GET", rf"^/v1/videos/{vid}$", self.retrieve, "poll"),
            Route("DELETE", rf"^/v1/videos/{vid}$", self.delete, "cancel"),
        ]

    # -- auth / errors ------------------------------------------------------------------------
    def check_auth(self, req: Request):
        if req.header("Authorization") != f"Bearer {self.key}":
            return json_response(401, {"error": "Unauthorized"})
        return None

    def fault_body(self, status: int, fault: dict, category):
        if status == 429:
            return oai_error(429, "Rate limit reached for requests. Please try again later.",
                             type_="requests", code="rate_limit_exceeded")
        if status >= 500:
            return oai_error(status, "The server had an error while processing your request. Sorry about that!",
                             type_="server_error")
        return oai_error(status, f"Injected error {status}.")

    def not_found(self, req: Request):
        return oai_error(404, f"Invalid URL ({req.method} {req.path})")

    def method_not_allowed(self, req: Request):
        return oai_error(405, f"Method {req.method} not allowed for {req.path}")

    # -- request parsing ----------------------------------------------------------------------
    def _fields(self, req: Request) -> dict:
        """Create fields as {name: value}; uploaded files stay UploadedFile. Raises ValueError."""
        ct = req.content_type
        if ct == "application/json":
            try:
                data = req.json()
            except BadJSON as e:
                raise ValueError(f"We could not parse the JSON body of your request. ({e})") from e
            if not isinstance(data, dict):
                raise ValueError("The request body must be a JSON object.")
            return data
        if ct == "multipart/form-data":
            try:
                parsed = fakelib.parse_multipart(req.header("Content-Type") or "", req.body)
            except Exception as e:  # noqa: BLE001
                raise ValueError(f"Could not parse the multipart body: {e}") from e
            out: dict = {}
            for k, vals in parsed.items():
                m = re.match(r"^(input_reference|image_reference)\[(\w+)\]$", k)
                if m:  # OpenAI SDK bracket form: input_reference[image_url]=...
                    out.setdefault(m.group(1), {})[m.group(2)] = vals[-1]
                else:
                    out[k] = vals[-1]
            return out
        if ct == "application/x-www-form-urlencoded":
            return {k: v[-1] for k, v in parse_qs(req.body.decode("utf-8", "replace"), keep_blank_values=True).items()}
        raise ValueError(f"Unsupported Content-Type {ct or '(none)'!r}: use application/json or multipart/form-data.")

    def _video_json(self, job: Job) -> dict:
        d = job.data
        status = {"queued": "queued", "running": "in_progress", "succeeded": "completed",
                  "failed": "failed", "moderated": "failed", "canceled": "failed"}[job.phase]
        progress = 0
        if job.phase == "running":
            progress = max(1, min(99, int(round(job.progress * 100))))
        elif job.phase == "succeeded":
            progress = 100
        error = None
        if job.phase == "failed":
            error = {"code": self.store.plan_value("error_code", FAIL_CODE),
                     "message": self.store.plan_value("error_message", FAIL_MESSAGE)}
        elif job.phase == "moderated":
            error = {"code": "moderation_blocked", "message": MODERATION_MESSAGE}
        elif job.phase == "canceled":
            error = {"code": "cancelled", "message": "The video job was cancelled."}
        expires_at = None
        limit = self.store.expire_after()
        if job.phase == "succeeded" and limit is not None:
            expires_at = int(job.completed_at + limit)
        return {
            "model": d["model"],
            "prompt": job.prompt,
            "id": job.id,
            "object": "video",
            "status": status,
            "size": d["size"],
            "progress": progress,
            "seconds": d["seconds"],
            "quality": "default",
            "completed_at": int(job.completed_at) if job.completed_at and job.terminal else None,
            "created_at": int(job.created_at),
            "remixed_from_video_id": d.get("remixed_from"),
            "error": error,
            "media_type": "video/mp4",
            "expires_at": expires_at,
            "file_name": f"{job.id}.mp4" if job.phase == "succeeded" else None,
            "inference_time_s": round(job.completed_at - job.created_at, 3) if job.phase == "succeeded" else None,
            "stage_durations": {},
            "peak_memory_mb": 0.0,
        }

    # -- handlers -----------------------------------------------------------------------------
    def create(self, req: Request) -> Response:
        try:
            f = self._fields(req)
        except ValueError as e:
            return oai_error(400, str(e))
        prompt = f.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return oai_error(400, "Missing required parameter: 'prompt'.", param="prompt", code="missing_required_parameter")
        model = f.get("model") or DEFAULT_MODEL
        if not isinstance(model, str):
            return oai_error(400, "Invalid type for 'model': expected a string.", param="model")
        seconds = f.get("seconds", DEFAULT_SECONDS)
        if not isinstance(seconds, str):
            return oai_error(400, f"Invalid type for 'seconds': expected a string, but got {type(seconds).__name__}.",
                             param="seconds", code="invalid_type")
        if not SECONDS_RE.match(seconds):
            return oai_error(400, f"Invalid value: '{seconds}'. 'seconds' must match ^[1-9]\\d*$.", param="seconds",
                             code="invalid_value")
        size = f.get("size")
        if size is None and f.get("width") and f.get("height"):
            size = f"{int(f['width'])}x{int(f['height'])}"
        size = size or DEFAULT_SIZE
        if not isinstance(size, str) or not SIZE_RE.match(size):
            return oai_error(400, f"Invalid value: '{size}'. 'size' must be WIDTHxHEIGHT, e.g. 1280x720.", param="size",
                             code="invalid_value")
        width, height = (int(x) for x in size.split("x"))
        if width < 16 or height < 16 or width % 2 or height % 2:
            return oai_error(400, f"Invalid value: '{size}'. Width and height must be even and at least 16.",
                             param="size", code="invalid_value")
        ref = f.get("input_reference")
        ref_summary = None
        if isinstance(ref, UploadedFile):
            kind = fakelib.image_kind(ref.data)
            if kind is None:
                return oai_error(400, "Invalid input_reference: expected a PNG, JPEG or WebP image.",
                                 param="input_reference", code="invalid_image")
            ref_summary = {"filename": ref.filename, "content_type": kind, "size": len(ref.data)}
        else:
            ref = ref if isinstance(ref, dict) else f.get("image_reference")
            if ref is not None:
                if not isinstance(ref, dict) or not (ref.get("image_url") or ref.get("file_id")):
                    return oai_error(400, "image_reference must be {image_url} or {file_id}.", param="image_reference")
                url = ref.get("image_url")
                if url and url.startswith("data:"):
                    decoded = fakelib.decode_data_url(url)
                    if not decoded or not fakelib.image_kind(decoded[1]):
                        return oai_error(400, "image_url is not a valid base64 image data URL.", param="image_reference")
                ref_summary = {k: (v[:64] + "...") if isinstance(v, str) and len(v) > 64 else v for k, v in ref.items()}
        outcome, steps = self.store.new_job_settings(prompt)
        job = Job(f"video_gen_{uuid.uuid4().hex}", width=width, height=height, seconds=int(seconds), outcome=outcome,
                  steps=steps, prompt=prompt, data={"model": model, "size": size, "seconds": seconds,
                                                    "input_reference": ref_summary})
        self.store.add_job(job)
        if outcome == "succeed":
            fakelib.prewarm_mp4(width, height, int(seconds))
        return json_response(200, self._video_json(job))

    def remix(self, req: Request, video_id: str) -> Response:
        if not self.store.plan_value("openai_remix"):
            return self.not_found(req)
        try:
            f = self._fields(req)
        except ValueError as e:
            return oai_error(400, str(e))
        prompt = f.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return oai_error(400, "Missing required parameter: 'prompt'.", param="prompt", code="missing_required_parameter")
        source = self.store.get_job(video_id)
        if source is None:
            return oai_error(404, f"Video with id '{video_id}' not found.", param="video_id")
        if source.phase != "succeeded":
            return oai_error(400, f"Video '{video_id}' must be completed before it can be remixed.", param="video_id")
        outcome, steps = self.store.new_job_settings(prompt)
        data = {**source.data, "remixed_from": video_id}
        job = Job(f"video_gen_{uuid.uuid4().hex}", width=source.width, height=source.height, seconds=source.seconds,
                  outcome=outcome, steps=steps, prompt=prompt, data=data)
        self.store.add_job(job)
        return json_response(200, self._video_json(job))

    def list_videos(self, req: Request) -> Response:
        with self.store.lock:
            jobs = [j for j in self.store.jobs.values() if not j.deleted]
            order = req.query.get("order", "desc")
            jobs.sort(key=lambda j: j.created_at, reverse=(order != "asc"))
            after = req.query.get("after")
            if after:
                ids = [j.id for j in jobs]
                jobs = jobs[ids.index(after) + 1:] if after in ids else []
            try:
                limit = int(req.query.get("limit", "20"))
            except ValueError:
                return oai_error(400, "limit must be an integer", param="limit")
            page = jobs[:limit]
            data = [self._video_json(j) for j in page]
        return json_response(200, {"object": "list", "data": data,
                                   "first_id": data[0]["id"] if data else None,
                                   "last_id": data[-1]["id"] if data else None,
                                   "has_more": len(jobs) > limit})

    def retrieve(self, req: Request, video_id: str) -> Response:
        with self.store.lock:
            job = self.store.get_job(video_id)
            if job is None:
                return oai_error(404, f"Video with id '{video_id}' not found.", param="video_id")
            job.advance()
            return json_response(200, self._video_json(job))

    def content(self, req: Request, video_id: str) -> Response:
        variant = req.query.get("variant", "video")
        if variant not in ("video", "thumbnail", "spritesheet"):
            return oai_error(400, f"Invalid value: '{variant}'. Supported values are: 'video', 'thumbnail' and "
                                  f"'spritesheet'.", param="variant", code="invalid_value")
        job = self.store.get_job(video_id)
        if job is None:
            return oai_error(404, f"Video with id '{video_id}' not found.", param="video_id")
        if job.phase != "succeeded":
            return oai_error(404, "Video is not ready yet, use GET /v1/videos/{video_id} to check status.")
        if variant != "video":
            # A diffusion server renders no previews: only the video variant exists.
            return oai_error(404, f"Variant '{variant}' is not available for video '{video_id}'.", param="variant")
        if self.store.is_expired(job.completed_at):
            return oai_error(404, f"The content of video '{video_id}' has expired and was deleted.")
        return self.serve_video(req, job, {"Content-Disposition": f'attachment; filename="{job.id}.mp4"'})

    def delete(self, req: Request, video_id: str) -> Response:
        with self.store.lock:
            job = self.store.get_job(video_id)
            if job is None:
                return oai_error(404, f"Video with id '{video_id}' not found.", param="video_id")
            job.cancel()  # vLLM-Omni deletes at any state; an unfinished job is abandoned
            job.deleted = True
        return json_response(200, {"id": video_id, "deleted": True, "object": "video.deleted"})


if __name__ == "__main__":
    sys.exit(fakelib.main(OpenAIVideosFake))
