"""Fake Google Veo on Vertex AI (predictLongRunning + fetchPredictOperation), with a fake OAuth2 token endpoint.

Protocol: https://cloud.google.com/vertex-ai/generative-ai/docs/model-reference/veo-video-generation
(python-genai `_GenerateVideosConfig_to_vertex`, `operations.py::_fetch_predict_videos_operation`).
  POST /v1/projects/{p}/locations/{l}/publishers/google/models/{m}:predictLongRunning   -> {name}
  POST /v1/projects/{p}/locations/{l}/publishers/google/models/{m}:fetchPredictOperation {operationName}
       -> {name} | {name, done: true, response: {videos: [{bytesBase64Encoded, mimeType}] | raiMediaFilteredCount}}
          | {name, done: true, error: {code, message}}
  POST /token  (OAuth2 JWT bearer grant, RFC 7523): the RS256 assertion is verified with `openssl` against the
       public key in the file named by VERTEX_PUBLIC_KEY_PEM; answers {access_token, expires_in, token_type}.
Auth on the API: `Authorization: Bearer <an access token this fake issued>`. Request bodies are validated as the
Gemini fake does (same instances/parameters envelope). Without `parameters.storageUri` the video comes back
inline as base64, as on Vertex.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from urllib.parse import parse_qs

import fakelib
from fakelib import BadJSON, Job, Request, Response, Route, json_response
from veo_gemini import VeoGeminiFake, gerror, rand_id

API = r"^/v1/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)/publishers/google/models/(?P<model>[^/:]+)"
RESPONSE_TYPE = "type.googleapis.com/cloud.ai.large_models.vision.GenerateVideoResponse"


def b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class VeoVertexFake(VeoGeminiFake):
    name = "veo_vertex"
    extra_plan_keys = {}

    def __init__(self, key: str, base_url: str):
        super().__init__(key, base_url)
        self.tokens: dict[str, float] = {}
        self.token_requests = 0

    def routes(self) -> list[Route]:
        return [
            Route("POST", r"^/token$", self.token, None, auth=False),
            Route("POST", API + r":predictLongRunning$", self.create_vertex, "create"),
            Route("POST", API + r":fetchPredictOperation$", self.fetch_operation, "poll"),
        ]

    def check_auth(self, req: Request):
        header = req.header("authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return gerror(401, "Request is missing required authentication credential. Expected OAuth 2 access "
                               "token, login cookie or other valid authentication credential.")
        expiry = self.tokens.get(token)
        if expiry is None or expiry < time.time():
            return gerror(401, "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                               "login cookie or other valid authentication credential.")
        return None

    # -- OAuth2 -------------------------------------------------------------------------------
    def token(self, req: Request) -> Response:
        self.token_requests += 1
        form = parse_qs(req.body.decode(errors="replace"))
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            return json_response(400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type."})
        assertion = (form.get("assertion") or [""])[0]
        problem = self._verify_assertion(assertion)
        if problem:
            return json_response(400, {"error": "invalid_grant", "error_description": problem})
        token = "ya29." + secrets.token_urlsafe(32)
        self.tokens[token] = time.time() + 3599
        return json_response(200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    def _verify_assertion(self, assertion: str):
        parts = assertion.split(".")
        if len(parts) != 3:
            return "Invalid JWT: not three segments."
        try:
            header = json.loads(b64url_decode(parts[0]))
            claims = json.loads(b64url_decode(parts[1]))
            signature = b64url_decode(parts[2])
        except (ValueError, json.JSONDecodeError):
            return "Invalid JWT: undecodable segment."
        if header.get("alg") != "RS256":
            return "Invalid JWT: alg must be RS256."
        now = time.time()
        for claim in ("iss", "scope", "aud", "iat", "exp"):
            if claim not in claims:
                return f"Invalid JWT: missing claim {claim}."
        if claims["aud"] != self.url("/token"):
            return f"Invalid JWT: aud must be {self.url('/token')}."
        if not (claims["iat"] - 300 <= now <= claims["exp"]) or claims["exp"] - claims["iat"] > 3600:
            return "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe."
        pem = os.environ.get("VERTEX_PUBLIC_KEY_PEM")
        if not pem:
            return "fake misconfigured: VERTEX_PUBLIC_KEY_PEM is not set"
        with tempfile.TemporaryDirectory() as d:
            sig, data = os.path.join(d, "sig"), os.path.join(d, "data")
            with open(sig, "wb") as f:
                f.write(signature)
            with open(data, "wb") as f:
                f.write(f"{parts[0]}.{parts[1]}".encode())
            ok = subprocess.run(["openssl", "dgst", "-sha256", "-verify", pem, "-signature", sig, data],
                                capture_output=True).returncode == 0
        return None if ok else "Invalid JWT Signature."

    # -- API ----------------------------------------------------------------------------------
    def _vertex_operation(self, job: Job) -> dict:
        name = job.data["name"]
        if not job.terminal:
            return {"name": name}
        if job.phase == "succeeded":
            with open(fakelib.ensure_mp4(job.width, job.height, job.seconds), "rb") as f:
                data = base64.b64encode(f.read()).decode()
            return {"name": name, "done": True,
                    "response": {"@type": RESPONSE_TYPE,
                                 "videos": [{"bytesBase64Encoded": data, "mimeType": "video/mp4"}]}}
        if job.phase == "moderated":
            return {"name": name, "done": True,
                    "response": {"@type": RESPONSE_TYPE, "raiMediaFilteredCount": 1,
                                 "raiMediaFilteredReasons": ["The prompt could not be submitted."]}}
        return {"name": name, "done": True, "error": {"code": 13, "message": "Video generation failed."}}

    def create_vertex(self, req: Request, project: str, location: str, model: str) -> Response:
        if model not in fakelib_models():
            return gerror(404, f"Publisher Model `projects/{project}/locations/{location}/publishers/google/models/"
                               f"{model}` not found.")
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
        name = f"projects/{project}/locations/{location}/publishers/google/models/{model}/operations/{opid}"
        job = Job(opid, width=norm["width"], height=norm["height"], seconds=norm["seconds"], outcome=outcome,
                  steps=steps, prompt=norm["prompt"], data={"model": model, "name": name})
        self.store.add_job(job)
        if outcome == "succeed":
            fakelib.prewarm_mp4(job.width, job.height, job.seconds)
        return json_response(200, {"name": name})

    def fetch_operation(self, req: Request, project: str, location: str, model: str) -> Response:
        try:
            body = req.json()
        except BadJSON as e:
            return gerror(400, f"Invalid JSON payload received. {e}")
        name = body.get("operationName") if isinstance(body, dict) else None
        if not isinstance(name, str) or "/operations/" not in name:
            return gerror(400, "operationName is required.")
        opid = name.rsplit("/operations/", 1)[1]
        with self.store.lock:
            job = self.store.get_job(opid)
            if job is None or job.data["name"] != name:
                return gerror(404, "Operation not found.")
            job.advance()
            return json_response(200, self._vertex_operation(job))


def fakelib_models():
    import veo_gemini
    return veo_gemini.MODELS


if __name__ == "__main__":
    sys.exit(fakelib.main(VeoVertexFake))
