"""Remix (POST /videos/{id}/remix), edits (POST /videos/edits), extensions (POST /videos/extensions).

SDK 3.54.0 always sends multipart for edit/extend and only accepts a *file* for `video`
(`video={"id": ...}` raises RuntimeError client-side), so the `{id}` forms go through the
low-level `client.post`: JSON when no files are given, multipart `video[id]=...` with
files=[] and a multipart Content-Type."""

from __future__ import annotations

import openai
import pytest
from openai.types import Video

from backends import CAPS
from support import assert_completed, assert_downloaded, assert_error, assert_valid, wait_terminal

MULTIPART = {"headers": {"Content-Type": "multipart/form-data"}}


def requires(operation: str):
    """Runs the test only where the backend offers the operation; test_backend_refusals checks the 400 elsewhere."""
    return pytest.mark.skipif(not CAPS.offers(operation),
                              reason=f"{CAPS.name} offers no {operation} (its 400 is checked in test_backend_refusals)")


@requires("remix")
def test_remix(source_client, source):
    src = source.video
    remix = source_client.videos.remix(src.id, prompt="The same boat, but at night")
    body = assert_valid(source_client.recorder.last_json("POST", "/remix"), "video.schema.json")
    assert body["remixed_from_video_id"] == src.id
    assert remix.id != src.id
    assert remix.remixed_from_video_id == src.id
    assert (remix.size, remix.seconds, remix.model) == (src.size, src.seconds, src.model)
    assert remix.prompt == "The same boat, but at night"
    done = wait_terminal(source_client, remix.id)
    assert_completed(done)
    assert done.remixed_from_video_id == src.id
    assert_downloaded(source_client, remix.id, src.size, src.seconds)


@requires("remix")
def test_remix_multipart_body(source_client, source):
    remix = source_client.post(f"/videos/{source.video.id}/remix", body={"prompt": "Remix sent as multipart"},
                               files=[], options=MULTIPART, cast_to=Video)
    assert remix.remixed_from_video_id == source.video.id


def test_remix_unknown_video(client):
    with pytest.raises(openai.NotFoundError) as exc:
        client.videos.remix("video_doesnotexist", prompt="x")
    assert_error(exc.value, 404)


def test_remix_requires_prompt(source, clients):
    http = clients.raw(source.key)
    assert_error(http.post(f"/v1/videos/{source.video.id}/remix", json={}), 400, param="prompt",
                 code="missing_required_parameter")
    assert_error(http.post(f"/v1/videos/{source.video.id}/remix", json={"prompt": "x", "seconds": "8"}), 400,
                 param="seconds", code="unknown_parameter")


@requires("edit")
def test_edit_upload(clients, source):
    client = clients.sync()  # uploads need no access to the source tenant
    edit = client.videos.edit(prompt="Make the water purple", video=("source.mp4", source.mp4, "video/mp4"))
    assert_valid(client.recorder.last_json("POST", "/videos/edits"), "video.schema.json")
    assert edit.remixed_from_video_id is None
    done = wait_terminal(client, edit.id)
    assert_completed(done)
    assert done.size == "720x1280"
    assert_downloaded(client, edit.id, done.size, done.seconds)


@requires("edit")
def test_edit_upload_with_model(clients, source):
    """Guide: when uploading a video, set `model` explicitly (multipart only)."""
    client = clients.sync()
    edit = client.videos.edit(prompt="Add falling snow", video=("source.mp4", source.mp4, "video/mp4"),
                              extra_body={"model": "sora-2-pro"})
    assert edit.model == "sora-2-pro"
    assert_completed(wait_terminal(client, edit.id))


@requires("edit")
def test_edit_by_id_json(source_client, source):
    src = source.video
    body = {"prompt": "Turn the boat red", "video": {"id": src.id}}
    assert_valid(body, "edit_video.json.schema.json")
    edit = source_client.post("/videos/edits", body=body, cast_to=Video)
    assert_valid(source_client.recorder.last_json("POST", "/videos/edits"), "video.schema.json")
    assert edit.id != src.id
    assert edit.model == src.model  # "If you pass a video ID, the API infers the model from the source video."
    assert edit.size == src.size
    done = wait_terminal(source_client, edit.id)
    assert_completed(done)
    assert_downloaded(source_client, edit.id, src.size, done.seconds)


@requires("edit")
def test_edit_by_id_multipart(source_client, source):
    edit = source_client.post("/videos/edits", body={"prompt": "Bracketed video id", "video": {"id": source.video.id}},
                              files=[], options=MULTIPART, cast_to=Video)
    assert edit.size == source.video.size


def test_edit_errors(source, clients):
    http = clients.raw(source.key)
    assert_error(http.post("/v1/videos/edits", json={"prompt": "x"}), 400, param="video",
                 code="missing_required_parameter")
    assert_error(http.post("/v1/videos/edits", json={"video": {"id": source.video.id}}), 400, param="prompt",
                 code="missing_required_parameter")
    # `model` is only allowed on multipart edits (guide); on JSON it is an unknown parameter
    assert_error(http.post("/v1/videos/edits", json={"prompt": "x", "video": {"id": source.video.id},
                                                     "model": "sora-2"}), 400, param="model", code="unknown_parameter")
    assert_error(http.post("/v1/videos/edits", json={"prompt": "x", "video": {"id": "video_doesnotexist"}}), 404)


@requires("extend")
def test_extend_by_id_json(source_client, source):
    src = source.video
    body = {"prompt": "The boat reaches the shore", "seconds": "4", "video": {"id": src.id}}
    assert_valid(body, "extend_video.json.schema.json")
    ext = source_client.post("/videos/extensions", body=body, cast_to=Video)
    assert_valid(source_client.recorder.last_json("POST", "/videos/extensions"), "video.schema.json")
    total = str(int(src.seconds) + 4)
    assert ext.seconds == total  # "For extensions, this is the stitched total duration."
    assert ext.size == src.size
    assert ext.model == src.model
    done = wait_terminal(source_client, ext.id)
    assert_completed(done)
    assert done.seconds == total
    assert_downloaded(source_client, ext.id, src.size, total)


@requires("extend")
def test_extend_by_id_multipart(source_client, source):
    ext = source_client.post("/videos/extensions",
                             body={"prompt": "Bracketed id extension", "seconds": "8", "video": {"id": source.video.id}},
                             files=[], options=MULTIPART, cast_to=Video)
    assert ext.seconds == str(int(source.video.seconds) + 8)


@requires("extend")
def test_extend_upload(clients, source):
    client = clients.sync()
    ext = client.videos.extend(prompt="Keep drifting", seconds="4", video=("source.mp4", source.mp4, "video/mp4"))
    assert_valid(client.recorder.last_json("POST", "/videos/extensions"), "video.schema.json")
    assert ext.seconds == "8"
    done = wait_terminal(client, ext.id)
    assert_completed(done)
    assert_downloaded(client, ext.id, "720x1280", "8")


def test_extend_errors(source, clients):
    http = clients.raw(source.key)
    vid = source.video.id
    assert_error(http.post("/v1/videos/extensions", json={"prompt": "x", "video": {"id": vid}}), 400,
                 param="seconds", code="missing_required_parameter")
    assert_error(http.post("/v1/videos/extensions", json={"prompt": "x", "seconds": 4, "video": {"id": vid}}), 400,
                 param="seconds", code="invalid_type")
    assert_error(http.post("/v1/videos/extensions", json={"prompt": "x", "seconds": "5", "video": {"id": vid}}), 400,
                 param="seconds", code="invalid_value")
    assert_error(http.post("/v1/videos/extensions", json={"prompt": "x", "seconds": "4", "video": {"id": vid},
                                                          "input_reference": {"file_id": "file-1"}}), 400,
                 param="input_reference", code="unknown_parameter")
    assert_error(http.post("/v1/videos/extensions",
                           json={"prompt": "x", "seconds": "4", "video": {"id": "video_doesnotexist"}}), 404)
