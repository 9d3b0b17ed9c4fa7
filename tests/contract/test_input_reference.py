"""input_reference: uploaded image (multipart), JSON image_url data URL, bracketed multipart key."""

from __future__ import annotations

import base64

import openai
import pytest
from openai.types import Video

from backends import CAPS
from support import POLL_MS, assert_completed, assert_downloaded, assert_error, assert_refused_by_backend, \
    assert_valid, create_and_poll, png_bytes, wait_terminal

MULTIPART = {"headers": {"Content-Type": "multipart/form-data"}}


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _refused(call) -> None:
    """A backend that cannot take a reference image refuses it up front, naming the model (never the backend),
    rather than silently making a text-to-video."""
    with pytest.raises(openai.BadRequestError) as exc:
        call()
    err = assert_refused_by_backend(exc.value, "input_reference")
    assert "The model '" in err["message"], err
    assert "'prov'" not in err["message"], err  # the backend's name in the contract config stays in the log


def test_png_upload_matching_size(client):
    png = png_bytes(1280, 720)
    if not CAPS.takes_uploaded_image():
        _refused(lambda: client.videos.create(prompt="Animate this blue frame", size="1280x720",
                                              input_reference=("ref.png", png, "image/png")))
        return
    video = create_and_poll(client, prompt="Animate this blue frame", size="1280x720", seconds="4",
                            input_reference=("ref.png", png, "image/png"), poll_interval_ms=POLL_MS)
    assert_completed(video)
    assert video.size == "1280x720"
    assert_downloaded(client, video.id, "1280x720", "4")


def test_png_upload_default_size(client):
    # no size given: default 720x1280, so a 720x1280 reference is right
    if not CAPS.takes_uploaded_image():
        _refused(lambda: client.videos.create(prompt="Default size + reference",
                                              input_reference=("ref.png", png_bytes(720, 1280), "image/png")))
        return
    video = client.videos.create(prompt="Default size + reference",
                                 input_reference=("ref.png", png_bytes(720, 1280), "image/png"))
    assert video.size == "720x1280"
    assert_completed(wait_terminal(client, video.id))


def test_json_image_url_data_url(client):
    body = {"prompt": "Start from this frame", "size": "720x1280", "seconds": "4",
            "input_reference": {"image_url": _data_url(png_bytes(720, 1280, (200, 60, 60)))}}
    assert_valid(body, "create_video.json.schema.json")
    if not CAPS.takes_image_url(body["input_reference"]["image_url"]):
        _refused(lambda: client.post("/videos", body=body, cast_to=Video))
        return
    video = client.post("/videos", body=body, cast_to=Video)  # no files → the SDK sends JSON
    assert_valid(client.recorder.last_json("POST", "/videos"), "video.schema.json")
    assert video.size == "720x1280"
    assert_completed(wait_terminal(client, video.id))


def test_multipart_bracketed_image_url(client):
    """node SDK style: input_reference[image_url]=<url> as a text part."""
    body = {"prompt": "Bracketed reference", "size": "1280x720",
            "input_reference": {"image_url": _data_url(png_bytes(1280, 720, (10, 200, 10)))}}
    if not CAPS.takes_image_url(body["input_reference"]["image_url"]):
        _refused(lambda: client.post("/videos", body=body, files=[], options=MULTIPART, cast_to=Video))
        return
    video = client.post("/videos", body=body, files=[], options=MULTIPART, cast_to=Video)
    assert video.size == "1280x720"
    assert_completed(wait_terminal(client, video.id))


@pytest.mark.parametrize("ref_size", ["640x480", "1280x720"])
def test_png_upload_wrong_size(client, ref_size):
    w, h = map(int, ref_size.split("x"))
    with pytest.raises(openai.BadRequestError) as exc:
        client.videos.create(prompt="Mismatched reference", size="720x1280",
                             input_reference=("ref.png", png_bytes(w, h), "image/png"))
    assert_error(exc.value, 400, param="input_reference")
    assert exc.value.param == "input_reference"


def test_json_image_url_wrong_size(client):
    body = {"prompt": "Mismatched reference", "size": "1280x720",
            "input_reference": {"image_url": _data_url(png_bytes(640, 480))}}
    with pytest.raises(openai.BadRequestError) as exc:
        client.post("/videos", body=body, cast_to=Video)
    assert_error(exc.value, 400, param="input_reference")


def test_input_reference_needs_exactly_one_key(raw):
    body = {"prompt": "p", "input_reference": {"image_url": "https://example.invalid/a.png", "file_id": "file-1"}}
    assert_error(raw.post("/v1/videos", json=body), 400, param="input_reference")
    assert_error(raw.post("/v1/videos", json={"prompt": "p", "input_reference": {}}), 400, param="input_reference")


def test_input_reference_not_an_image(client):
    with pytest.raises(openai.BadRequestError) as exc:
        client.videos.create(prompt="Not an image", input_reference=("ref.png", b"definitely not a png", "image/png"))
    assert_error(exc.value, 400, param="input_reference")


def test_https_image_url(client):
    """An https image URL is passed on as a URL; a backend that needs the bytes (or takes no image) refuses it."""
    body = {"prompt": "From a URL", "size": "1280x720", "input_reference": {"image_url": "https://example.com/a.png"}}
    if CAPS.local or CAPS.takes_image_url(body["input_reference"]["image_url"]):
        pytest.skip(f"{CAPS.name} accepts image URLs; fetching one needs the network")
    _refused(lambda: client.post("/videos", body=body, cast_to=Video))


def test_file_id_is_refused_by_a_mapped_backend(client):
    if CAPS.local:
        pytest.skip("the local backend accepts file ids")
    body = {"prompt": "From a file", "size": "1280x720", "input_reference": {"file_id": "file-abc123"}}
    _refused(lambda: client.post("/videos", body=body, cast_to=Video))
