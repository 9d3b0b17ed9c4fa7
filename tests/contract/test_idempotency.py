"""Idempotency-Key on POST /videos."""

from __future__ import annotations

import uuid

import openai
import pytest

from support import assert_error, assert_valid


def _ikey() -> str:
    return f"idem-{uuid.uuid4().hex}"


def test_same_key_same_json_body_returns_same_video(raw):
    k = _ikey()
    body = {"prompt": "Idempotent kite", "seconds": "8", "size": "1280x720"}
    r1 = raw.post("/v1/videos", json=body, headers={"Idempotency-Key": k})
    r2 = raw.post("/v1/videos", json=body, headers={"Idempotency-Key": k})
    assert r1.status_code == r2.status_code == 200, (r1.text, r2.text)
    v1, v2 = assert_valid(r1.json(), "video.schema.json"), assert_valid(r2.json(), "video.schema.json")
    assert v1["id"] == v2["id"]
    # exactly one video exists for this tenant
    listed = raw.get("/v1/videos").json()
    assert [v["id"] for v in listed["data"]] == [v1["id"]]


def test_same_key_same_multipart_body_returns_same_video(client):
    """SDK multipart bodies get a new random boundary each time: the body must be compared
    after parsing, not byte for byte."""
    k = _ikey()
    v1 = client.videos.create(prompt="Idempotent multipart", seconds="4", extra_headers={"Idempotency-Key": k})
    v2 = client.videos.create(prompt="Idempotent multipart", seconds="4", extra_headers={"Idempotency-Key": k})
    assert v1.id == v2.id
    assert [v.id for v in client.videos.list()] == [v1.id]


def test_same_key_different_body_conflicts(client, raw):
    k = _ikey()
    r1 = raw.post("/v1/videos", json={"prompt": "First body"}, headers={"Idempotency-Key": k})
    assert r1.status_code == 200, r1.text
    r2 = raw.post("/v1/videos", json={"prompt": "Second body"}, headers={"Idempotency-Key": k})
    assert_error(r2, 409, type_=...)
    # and through the SDK (ConflictError; x-should-retry: false stops the SDK's retry of 409s)
    retrying = client.with_options(max_retries=2)  # shares the http client (and its recorder)
    with pytest.raises(openai.ConflictError) as exc:
        retrying.videos.create(prompt="Third body", extra_headers={"Idempotency-Key": k})
    assert_error(exc.value, 409, type_=...)
    posts = [e for e in client.recorder.entries if e["method"] == "POST"]
    assert len(posts) == 1, f"SDK retried a 409 marked x-should-retry: false ({len(posts)} POSTs)"


def test_different_keys_create_different_videos(raw):
    body = {"prompt": "Two keys"}
    r1 = raw.post("/v1/videos", json=body, headers={"Idempotency-Key": _ikey()})
    r2 = raw.post("/v1/videos", json=body, headers={"Idempotency-Key": _ikey()})
    assert r1.json()["id"] != r2.json()["id"]


def test_idempotency_key_is_per_tenant(clients):
    k = _ikey()
    a, b = clients.raw(), clients.raw()
    body = {"prompt": "Same key, two tenants"}
    ra = a.post("/v1/videos", json=body, headers={"Idempotency-Key": k})
    rb = b.post("/v1/videos", json=body, headers={"Idempotency-Key": k})
    assert ra.status_code == rb.status_code == 200, (ra.text, rb.text)
    assert ra.json()["id"] != rb.json()["id"]
