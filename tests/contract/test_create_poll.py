"""POST /videos + polling + GET /videos/{id}/content with the official SDK (sync and async)."""

from __future__ import annotations

import asyncio

import openai
import pytest

from backends import CAPS
from support import (
    ALL_SECONDS,
    POLL_MS,
    STATUSES,
    acreate_and_poll,
    assert_completed,
    assert_downloaded,
    assert_refused_by_backend,
    assert_valid,
    assert_video_file,
    check_status_history,
    create_and_poll,
    is_jpeg,
    is_webp,
)


def _check_assets_headers(raw_resp, ctype: str) -> bytes:
    assert raw_resp.status_code == 200
    assert raw_resp.headers.get("content-type", "").split(";")[0] == ctype
    data = raw_resp.content
    assert raw_resp.headers.get("content-length") == str(len(data))
    assert raw_resp.headers.get("etag"), "content response without ETag"
    return data


def test_create_and_poll_sync(client):
    # No poll_interval_ms: the SDK sleeps for the server's openai-poll-after-ms (100 ms in the test config).
    video = create_and_poll(client, prompt="A red kite over green hills", seconds="4", size="720x1280")
    assert_completed(video)
    assert video.object == "video"
    assert video.model == "sora-2"
    assert (video.size, video.seconds) == ("720x1280", "4")
    assert video.prompt == "A red kite over green hills"
    assert video.remixed_from_video_id is None

    create_body = client.recorder.last_json("POST", "/videos")
    assert_valid(create_body, "video.schema.json")
    assert create_body["status"] in ("queued", "in_progress")
    assert create_body["completed_at"] is None

    snaps = client.recorder.video_snapshots(video.id)
    assert snaps, "create_and_poll never called GET /videos/{id}"
    statuses = check_status_history([create_body] + snaps)
    assert set(statuses) <= set(STATUSES)
    assert statuses[-1] == "completed"
    for snap in snaps:
        assert_valid(snap, "video.schema.json")

    raw = client.videos.with_raw_response.retrieve(video.id)
    assert_valid(raw.http_response.json(), "video.schema.json")
    assert raw.parse().status == "completed"


def test_create_and_poll_async(clients):
    async def main():
        client = clients.async_()
        try:
            video = await acreate_and_poll(client, prompt="Rain on a tin roof", size="1280x720", seconds="4",
                                           poll_interval_ms=POLL_MS)
            assert_completed(video)
            assert (video.size, video.seconds) == ("1280x720", "4")
            snaps = client.recorder.video_snapshots(video.id)
            assert check_status_history(snaps)[-1] == "completed"

            listed = [v.id async for v in client.videos.list(order="asc")]
            assert listed == [video.id]

            mp4 = (await client.videos.download_content(video.id)).content
            produced = (await client.videos.with_raw_response.retrieve(video.id)).headers.get("x-sora-shim-produced")
            assert_video_file(mp4, "1280x720", "4", produced)
            thumb = (await client.videos.download_content(video.id, variant="thumbnail")).content
            assert is_webp(thumb)
            sprite = (await client.videos.download_content(video.id, variant="spritesheet")).content
            assert is_jpeg(sprite)

            deleted = await client.videos.delete(video.id)
            assert deleted.deleted is True and deleted.id == video.id
        finally:
            await client.close()

    asyncio.run(main())


def test_download_all_variants(source_client, source):
    vid = source.video.id
    raw = source_client.videos.with_raw_response.download_content(vid)  # default variant = video
    mp4 = _check_assets_headers(raw.http_response, "video/mp4")
    assert mp4 == source.mp4
    assert_video_file(mp4, "720x1280", "4", source.produced)

    raw = source_client.videos.with_raw_response.download_content(vid, variant="video")
    assert _check_assets_headers(raw.http_response, "video/mp4") == mp4

    raw = source_client.videos.with_raw_response.download_content(vid, variant="thumbnail")
    thumb = _check_assets_headers(raw.http_response, "image/webp")
    assert is_webp(thumb), thumb[:16]

    raw = source_client.videos.with_raw_response.download_content(vid, variant="spritesheet")
    sprite = _check_assets_headers(raw.http_response, "image/jpeg")
    assert is_jpeg(sprite), sprite[:16]

    # the SDK's plain (non-raw) path gives the same bytes
    assert source_client.videos.download_content(vid, variant="thumbnail").content == thumb


def test_content_range_requests(clients, source):
    http = clients.raw(source.key)
    url = f"/v1/videos/{source.video.id}/content"
    total = len(source.mp4)

    full = http.get(url)
    assert full.status_code == 200
    etag = full.headers.get("etag")
    assert etag and full.headers.get("content-length") == str(total)

    r = http.get(url, headers={"Range": "bytes=0-99"})
    assert r.status_code == 206, r.text[:200]
    assert r.headers.get("content-range") == f"bytes 0-99/{total}"
    assert r.headers.get("content-length") == "100"
    assert r.content == source.mp4[:100]

    r = http.get(url, headers={"Range": "bytes=-10"})
    assert r.status_code == 206
    assert r.content == source.mp4[-10:]
    assert r.headers.get("content-range") == f"bytes {total - 10}-{total - 1}/{total}"

    r = http.get(url, headers={"Range": f"bytes={total - 5}-"})
    assert r.status_code == 206
    assert r.content == source.mp4[-5:]

    r = http.get(url, headers={"Range": f"bytes={total}-"})
    assert r.status_code == 416, r.status_code
    assert r.headers.get("content-range") == f"bytes */{total}"

    again = http.get(url)
    assert again.headers.get("etag") == etag, "ETag changed between two downloads of the same asset"


SIZES = [
    ("sora-2", "720x1280"),
    ("sora-2", "1280x720"),
    ("sora-2-pro", "1024x1792"),
    ("sora-2-pro", "1792x1024"),
    ("sora-2-pro", "1080x1920"),
    ("sora-2-pro", "1920x1080"),
]


@pytest.mark.parametrize("model,size", SIZES, ids=[f"{m}-{s}" for m, s in SIZES])
def test_every_size(client, model, size):
    if CAPS.refuses_size(size):
        with pytest.raises(openai.BadRequestError) as exc:
            client.videos.create(prompt="too big for this backend", model=model, size=size, seconds="4")
        assert_refused_by_backend(exc.value, "size")
        return
    video = create_and_poll(client, prompt=f"A lighthouse at dusk, {size}", model=model, size=size, seconds="4",
                            poll_interval_ms=POLL_MS)
    assert_completed(video)
    assert (video.model, video.size, video.seconds) == (model, size, "4")
    assert_downloaded(client, video.id, size, "4")


# "4" is covered by test_every_size (720x1280 / 4 s)
@pytest.mark.parametrize("seconds", [s for s in ALL_SECONDS if s != "4"])
def test_every_duration(client, seconds):
    if CAPS.refuses_seconds(seconds):
        with pytest.raises(openai.BadRequestError) as exc:
            client.videos.create(prompt="too long for this backend", size="720x1280", seconds=seconds)
        assert_refused_by_backend(exc.value, "seconds")
        return
    video = create_and_poll(client, prompt=f"Waves for {seconds} seconds", size="720x1280", seconds=seconds,
                            poll_interval_ms=POLL_MS)
    assert_completed(video)
    assert video.seconds == seconds
    assert_downloaded(client, video.id, "720x1280", seconds)


def test_defaults(client):
    video = client.videos.create(prompt="Defaults only")
    assert (video.model, video.size, video.seconds) == ("sora-2", "720x1280", "4")
    assert video.status in ("queued", "in_progress")
    assert video.progress < 100
    assert video.id.startswith("video_")


@pytest.mark.parametrize("model", ["sora-2-2025-10-06", "sora-2-2025-12-08", "sora-2-pro-2025-10-06"])
def test_model_snapshots_accepted(client, model):
    video = client.videos.create(prompt="Snapshot model", model=model, size="1280x720", seconds="4")
    assert video.model == model
    assert (video.size, video.seconds) == ("1280x720", "4")


def test_create_json_body(client, raw):
    """Legacy clients (python <2.27, node <6.28, Batch) send JSON."""
    body = {"prompt": "JSON body create", "model": "sora-2-pro", "size": "1792x1024", "seconds": "8"}
    assert_valid(body, "create_video.json.schema.json")
    r = raw.post("/v1/videos", json=body)
    assert r.status_code == 200, r.text
    v = assert_valid(r.json(), "video.schema.json")
    assert (v["model"], v["size"], v["seconds"], v["prompt"]) == ("sora-2-pro", "1792x1024", "8", "JSON body create")
    assert client.videos.retrieve(v["id"]).id == v["id"]
