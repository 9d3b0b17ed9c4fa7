"""DELETE /videos/{id}."""

from __future__ import annotations

import openai
import pytest

from support import POLL_MS, assert_completed, assert_error, assert_valid, create_and_poll, wait_terminal


def test_delete_completed_video(client):
    video = create_and_poll(client, prompt="Short-lived", seconds="4", poll_interval_ms=POLL_MS)
    assert_completed(video)

    resp = client.videos.with_raw_response.delete(video.id)
    body = assert_valid(resp.http_response.json(), "video_deleted.schema.json")
    assert body == {"id": video.id, "object": "video.deleted", "deleted": True}

    with pytest.raises(openai.NotFoundError) as exc:
        client.videos.retrieve(video.id)
    assert_error(exc.value, 404)
    for variant in ("video", "thumbnail", "spritesheet"):
        with pytest.raises(openai.NotFoundError) as exc:
            client.videos.download_content(video.id, variant=variant)
        assert_error(exc.value, 404)
    with pytest.raises(openai.NotFoundError) as exc:
        client.videos.delete(video.id)
    assert_error(exc.value, 404)
    with pytest.raises(openai.NotFoundError) as exc:
        client.videos.remix(video.id, prompt="x")
    assert_error(exc.value, 404)
    assert video.id not in [v.id for v in client.videos.list()]


def test_delete_unfinished_video_is_rejected(client):
    # the slowest render the test config allows, so it is still queued/in_progress when we delete it (a fake
    # provider takes 40 polls for it)
    video = client.videos.create(prompt="Long 1080p render [fake:steps=40]", model="sora-2-pro", size="1920x1080",
                                 seconds="20")
    assert video.status in ("queued", "in_progress")
    with pytest.raises(openai.BadRequestError) as exc:
        client.videos.delete(video.id)
    assert_error(exc.value, 400)
    # still there, and deletable once finished
    assert client.videos.retrieve(video.id).id == video.id
    assert_completed(wait_terminal(client, video.id))
    assert client.videos.delete(video.id).deleted is True


def test_delete_unknown_video(client):
    with pytest.raises(openai.NotFoundError) as exc:
        client.videos.delete("video_doesnotexist")
    assert_error(exc.value, 404)
