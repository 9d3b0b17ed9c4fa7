"""POST /videos/characters (multipart only), GET /videos/characters/{id}, `characters` on create."""

from __future__ import annotations

import openai
import pytest
from openai.types import Video

from backends import CAPS
from support import assert_error, assert_valid, wait_terminal, assert_completed

MULTIPART = {"headers": {"Content-Type": "multipart/form-data"}}


def _make_character(client, source, name="Mossy"):
    return client.videos.create_character(name=name, video=("mossy.mp4", source.mp4, "video/mp4"))


def test_create_and_get_character(client, source):
    raw = client.videos.with_raw_response.create_character(name="Mossy", video=("mossy.mp4", source.mp4, "video/mp4"))
    body = assert_valid(raw.http_response.json(), "character.schema.json")
    assert body["id"].startswith("char_")
    assert body["name"] == "Mossy"
    assert isinstance(body["created_at"], int)
    char = raw.parse()
    assert char.id == body["id"]

    raw = client.videos.with_raw_response.get_character(char.id)
    got = assert_valid(raw.http_response.json(), "character.schema.json")
    assert got == body


def test_character_bare_bytes_upload(client, source):
    # bare bytes: the SDK names the part filename="upload", Content-Type application/octet-stream
    char = client.videos.create_character(name="Bytes", video=source.mp4)
    assert char.id.startswith("char_")


def test_get_unknown_character(client):
    with pytest.raises(openai.NotFoundError) as exc:
        client.videos.get_character("char_doesnotexist")
    assert_error(exc.value, 404)


def test_character_is_tenant_scoped(clients, source):
    owner, other = clients.sync(), clients.sync()
    char = _make_character(owner, source)
    with pytest.raises(openai.NotFoundError) as exc:
        other.videos.get_character(char.id)
    assert_error(exc.value, 404)


def test_character_validation(client, raw, source):
    with pytest.raises(openai.BadRequestError) as exc:
        client.videos.create_character(name="x" * 81, video=("c.mp4", source.mp4, "video/mp4"))
    assert_error(exc.value, 400, param="name")
    with pytest.raises(openai.BadRequestError) as exc:
        client.videos.create_character(name="", video=("c.mp4", source.mp4, "video/mp4"))
    assert_error(exc.value, 400, param="name")
    # name only
    assert_error(raw.post("/v1/videos/characters", files={"name": (None, "Mossy")}), 400, param="video",
                 code="missing_required_parameter")
    # video must be an uploaded file, not an id
    assert_error(raw.post("/v1/videos/characters", files={"name": (None, "Mossy"), "video[id]": (None, "video_1")}),
                 400, param="video")
    # multipart only
    assert_error(raw.post("/v1/videos/characters", json={"name": "Mossy", "video": "x"}), 400)


def test_create_with_characters_json(client, source):
    char = _make_character(client, source)
    body = {"prompt": "Mossy waves hello", "characters": [{"id": char.id}]}
    assert_valid(body, "create_video.json.schema.json")
    if not CAPS.characters:
        with pytest.raises(openai.BadRequestError) as exc:
            client.post("/videos", body=body, cast_to=Video)
        assert_error(exc.value, 400, param="characters")
        return
    video = client.post("/videos", body=body, cast_to=Video)
    assert_valid(client.recorder.last_json("POST", "/videos"), "video.schema.json")
    assert_completed(wait_terminal(client, video.id))


def test_create_with_characters_multipart(client, source):
    a = _make_character(client, source, "A")
    b = _make_character(client, source, "B")
    # python SDK: extra_body on the (always multipart) create → repeated characters[][id] parts
    if not CAPS.characters:
        with pytest.raises(openai.BadRequestError) as exc:
            client.videos.create(prompt="A and B meet", extra_body={"characters": [{"id": a.id}, {"id": b.id}]})
        assert_error(exc.value, 400, param="characters")
        return
    video = client.videos.create(prompt="A and B meet", extra_body={"characters": [{"id": a.id}, {"id": b.id}]})
    assert video.status in ("queued", "in_progress")


def test_at_most_two_characters(client, source):
    ids = [_make_character(client, source, n).id for n in "ABC"]
    with pytest.raises(openai.BadRequestError) as exc:
        client.post("/videos", body={"prompt": "crowd", "characters": [{"id": i} for i in ids]}, cast_to=Video)
    assert_error(exc.value, 400, param="characters")
