"""Validation, auth and not-found errors: status codes, the OpenAI error envelope, param/code,
x-should-retry: false, and that the SDK maps them to its typed exceptions."""

from __future__ import annotations

import json

import openai
import pytest
from openai.types import Video

from support import MAX_BODY_BYTES, assert_error, assert_invalid, png_bytes

SORA2_MSG = "Invalid value: '640x480'. Supported values are: '720x1280' and '1280x720'."


# --------------------------------------------------------------------------- missing / malformed parameters


def test_missing_prompt_json(raw):
    body = {"model": "sora-2", "seconds": "4"}
    assert_invalid(body, "create_video.json.schema.json")
    assert_error(raw.post("/v1/videos", json=body), 400, param="prompt", code="missing_required_parameter")


def test_missing_prompt_multipart(raw):
    r = raw.post("/v1/videos", files={"model": (None, "sora-2"), "seconds": (None, "4")})
    assert_error(r, 400, param="prompt", code="missing_required_parameter")


@pytest.mark.parametrize("prompt", ["", "x" * 32001])
def test_prompt_length(client, prompt):
    with pytest.raises(openai.BadRequestError) as exc:
        client.videos.create(prompt=prompt)
    assert_error(exc.value, 400, param="prompt")


def test_unknown_model(client):
    with pytest.raises(openai.BadRequestError) as exc:
        client.videos.create(prompt="x", model="sora-3")
    assert_error(exc.value, 400, param="model", code="invalid_value")
    assert exc.value.param == "model" and exc.value.code == "invalid_value"
    assert exc.value.type == "invalid_request_error"


def test_size_not_allowed_for_sora2(client):
    with pytest.raises(openai.BadRequestError) as exc:
        client.videos.create(prompt="x", model="sora-2", size="640x480")
    assert_error(exc.value, 400, param="size", code="invalid_value", message=SORA2_MSG)


def test_size_default_model_is_sora2(raw):
    r = raw.post("/v1/videos", json={"prompt": "x", "size": "640x480"})
    assert_error(r, 400, param="size", code="invalid_value", message=SORA2_MSG)


@pytest.mark.parametrize("size", ["1920x1080", "1080x1920", "1024x1792", "1792x1024"])
def test_pro_only_sizes_rejected_for_sora2(client, size):
    with pytest.raises(openai.BadRequestError) as exc:
        client.videos.create(prompt="x", model="sora-2", size=size)
    assert_error(exc.value, 400, param="size", code="invalid_value",
                 message=f"Invalid value: '{size}'. Supported values are: '720x1280' and '1280x720'.")


def test_size_not_allowed_for_pro(client):
    with pytest.raises(openai.BadRequestError) as exc:
        client.videos.create(prompt="x", model="sora-2-pro", size="640x480")
    err = assert_error(exc.value, 400, param="size", code="invalid_value",
                       message_startswith="Invalid value: '640x480'. Supported values are: ")
    for size in ("720x1280", "1280x720", "1024x1792", "1792x1024", "1080x1920", "1920x1080"):
        assert f"'{size}'" in err["message"], err["message"]


@pytest.mark.parametrize("seconds", ["15", "0", "4.0", "four", ""])
def test_bad_seconds(client, seconds):
    with pytest.raises(openai.BadRequestError) as exc:
        client.videos.create(prompt="x", seconds=seconds)  # multipart text part
    assert_error(exc.value, 400, param="seconds", code="invalid_value")


def test_bad_seconds_json(raw):
    r = raw.post("/v1/videos", json={"prompt": "x", "seconds": "15"})
    err = assert_error(r, 400, param="seconds", code="invalid_value", message_startswith="Invalid value: '15'.")
    for s in ("4", "8", "12", "16", "20"):
        assert f"'{s}'" in err["message"], err["message"]


def test_integer_seconds_json(raw):
    body = {"prompt": "x", "seconds": 8}
    assert_invalid(body, "create_video.json.schema.json")
    assert_error(raw.post("/v1/videos", json=body), 400, param="seconds", code="invalid_type")


def test_unknown_parameter_json(raw):
    r = raw.post("/v1/videos", json={"prompt": "x", "duration": "5"})
    assert_error(r, 400, param="duration", code="unknown_parameter")


def test_unknown_parameter_multipart(client):
    with pytest.raises(openai.BadRequestError) as exc:
        client.videos.create(prompt="x", extra_body={"duration": "5"})
    assert_error(exc.value, 400, param="duration", code="unknown_parameter")


def test_character_ids_is_not_a_parameter(raw):
    # the SDKs briefly had `character_ids` (removed four days later); it is not accepted
    r = raw.post("/v1/videos", json={"prompt": "x", "character_ids": ["char_1"]})
    assert_error(r, 400, param="character_ids", code="unknown_parameter")


@pytest.mark.parametrize("payload", [b'{"prompt": ', b"not json", b"", b'["prompt"]', b'"prompt"'])
def test_malformed_json(raw, payload):
    r = raw.post("/v1/videos", content=payload, headers={"Content-Type": "application/json"})
    assert_error(r, 400)


def test_malformed_json_has_null_param(raw):
    r = raw.post("/v1/videos", content=b'{"prompt": ', headers={"Content-Type": "application/json"})
    assert_error(r, 400, param=None)


@pytest.mark.parametrize("ctype", ["text/plain", "application/xml"])
def test_wrong_content_type(raw, ctype):
    r = raw.post("/v1/videos", content=b"prompt=hello", headers={"Content-Type": ctype})
    assert_error(r, 400)


def test_body_too_large_json(raw):
    body = json.dumps({"prompt": "x" * (MAX_BODY_BYTES + 1024)}).encode()
    r = raw.post("/v1/videos", content=body, headers={"Content-Type": "application/json"})
    assert_error(r, 413, code="request_too_large")


def test_body_too_large_multipart_upload(client):
    big = png_bytes(720, 1280) + b"\x00" * (MAX_BODY_BYTES + 1024)
    with pytest.raises(openai.APIStatusError) as exc:
        client.videos.create(prompt="x", input_reference=("big.png", big, "image/png"))
    assert exc.value.status_code == 413
    assert_error(exc.value, 413, code="request_too_large")


# --------------------------------------------------------------------------- not found / not ready / variant


def test_unknown_video_id(client):
    for call in (
        lambda: client.videos.retrieve("video_doesnotexist"),
        lambda: client.videos.download_content("video_doesnotexist"),
        lambda: client.videos.delete("video_doesnotexist"),
        lambda: client.videos.remix("video_doesnotexist", prompt="x"),
    ):
        with pytest.raises(openai.NotFoundError) as exc:
            call()
        assert_error(exc.value, 404)
        assert exc.value.request_id


def test_content_not_ready(client):
    video = client.videos.create(prompt="Long 1080p render", model="sora-2-pro", size="1920x1080", seconds="20")
    assert video.status in ("queued", "in_progress")
    for variant in ("video", "thumbnail", "spritesheet"):
        with pytest.raises(openai.NotFoundError) as exc:
            client.videos.download_content(video.id, variant=variant)
        assert_error(exc.value, 404, message_startswith="Video is not ready yet")


def test_bad_variant(clients, source):
    http = clients.raw(source.key)
    r = http.get(f"/v1/videos/{source.video.id}/content", params={"variant": "mp4"})
    assert_error(r, 400, param="variant", code="invalid_value")


# --------------------------------------------------------------------------- auth


def test_missing_authorization(clients):
    # an SDK client always sends its key, so use a raw request without Authorization
    http = clients.raw(auth=False)
    for method, path, kwargs in (
        ("GET", "/v1/videos", {}),
        ("POST", "/v1/videos", {"json": {"prompt": "x"}}),
        ("GET", "/v1/videos/video_123", {}),
        ("GET", "/v1/videos/video_123/content", {}),
        ("DELETE", "/v1/videos/video_123", {}),
        ("GET", "/v1/videos/characters/char_123", {}),
    ):
        r = http.request(method, path, **kwargs)
        assert_error(r, 401, type_=...)


@pytest.mark.parametrize("header", ["", "Bearer", "Basic dXNlcjpwYXNz", "sk-no-scheme"])
def test_bad_authorization_header(clients, header):
    http = clients.raw(auth=False)
    r = http.get("/v1/videos", headers={"Authorization": header})
    assert_error(r, 401, type_=...)


def test_sdk_raises_authentication_error(client):
    # the SDK drops a header explicitly omitted per request
    with pytest.raises(openai.AuthenticationError) as exc:
        client.videos.list(extra_headers={"Authorization": openai.Omit()})
    assert_error(exc.value, 401, type_=...)


def test_low_level_json_post_errors_map_to_sdk_exceptions(client):
    with pytest.raises(openai.BadRequestError) as exc:
        client.post("/videos", body={"prompt": "x", "seconds": 8}, cast_to=Video)
    assert exc.value.param == "seconds" and exc.value.code == "invalid_type"
