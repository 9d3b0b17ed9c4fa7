"""Response headers: x-request-id everywhere, openai-processing-ms on POST, openai-poll-after-ms
while a video is unfinished. (Every response made through the `clients` fixture is also checked
for x-request-id by the recorder.)"""

from __future__ import annotations

from backends import CAPS
from support import POLL_MS, assert_completed, new_key, png_bytes, wait_terminal


def test_every_response_has_x_request_id(clients, source):
    http = clients.raw(source.key)
    anon = clients.raw(auth=False)
    vid = source.video.id
    responses = [
        http.get("/v1/videos"),
        http.get(f"/v1/videos/{vid}"),
        http.get(f"/v1/videos/{vid}/content"),
        http.get(f"/v1/videos/{vid}/content", params={"variant": "thumbnail"}),
        http.get(f"/v1/videos/{vid}/content", params={"variant": "spritesheet"}),
        http.get(f"/v1/videos/{vid}/content", headers={"Range": "bytes=0-9"}),
        http.get(f"/v1/videos/{vid}/content", headers={"Range": "bytes=999999999-"}),
        http.get(f"/v1/videos/{vid}/content", params={"variant": "mp4"}),
        http.get("/v1/videos/video_doesnotexist"),
        http.get("/v1/videos/characters/char_doesnotexist"),
        http.delete("/v1/videos/video_doesnotexist"),
        http.post("/v1/videos", json={"prompt": "x", "seconds": 8}),
        http.post("/v1/videos", content=b"{", headers={"Content-Type": "application/json"}),
        http.post("/v1/videos", content=b"hi", headers={"Content-Type": "text/plain"}),
        http.post(f"/v1/videos/{vid}/remix", json={}),
        http.post("/v1/videos/edits", json={"prompt": "x"}),
        http.post("/v1/videos/extensions", json={"prompt": "x"}),
        http.post("/v1/videos/characters", files={"name": (None, "n")}),
        anon.get("/v1/videos"),
        anon.post("/v1/videos", json={"prompt": "x"}),
    ]
    ids = []
    for r in responses:
        rid = r.headers.get("x-request-id")
        assert rid, f"{r.request.method} {r.request.url} -> {r.status_code} without x-request-id"
        ids.append(rid)
    assert len(set(ids)) == len(ids), "x-request-id values are not unique"


def test_post_responses_carry_processing_ms(clients, source):
    http = clients.raw(source.key)
    vid = source.video.id
    posts = [
        http.post("/v1/videos", json={"prompt": "processing-ms"}),
        http.post("/v1/videos", files={"prompt": (None, "processing-ms multipart"),
                                       "input_reference": ("r.png", png_bytes(720, 1280), "image/png")}),
        http.post(f"/v1/videos/{vid}/remix", json={"prompt": "processing-ms remix"}),
        http.post("/v1/videos/edits", json={"prompt": "processing-ms edit", "video": {"id": vid}}),
        http.post("/v1/videos/extensions", json={"prompt": "processing-ms ext", "seconds": "4", "video": {"id": vid}}),
        http.post("/v1/videos/characters", files={"name": (None, "n"), "video": ("c.mp4", source.mp4, "video/mp4")}),
        http.post("/v1/videos", json={"prompt": ""}),  # errors too
    ]
    for r in posts:
        v = r.headers.get("openai-processing-ms")
        assert v is not None and v.isdigit(), f"POST {r.request.url} -> {r.status_code}: openai-processing-ms={v!r}"
    # A mapped backend refuses up front (400) what it cannot do: an image, a remix, an edit, an extension.
    expected = [200, 200 if CAPS.takes_uploaded_image() else 400] + [
        200 if CAPS.offers(op) else 400 for op in ("remix", "edit", "extend")
    ] + [200, 400]
    assert [r.status_code for r in posts] == expected, [(r.status_code, r.text[:200]) for r in posts]


def test_poll_after_ms_on_unfinished_video(clients):
    http = clients.raw(new_key())
    r = http.post("/v1/videos", json={"prompt": "Long 1080p render [fake:steps=40]", "model": "sora-2-pro",
                                      "size": "1920x1080", "seconds": "20"})
    assert r.status_code == 200, r.text
    vid = r.json()["id"]
    g = http.get(f"/v1/videos/{vid}")
    assert g.json()["status"] in ("queued", "in_progress")
    assert g.headers.get("openai-poll-after-ms") == str(POLL_MS)


def test_sdk_exposes_request_id(client):
    video = client.videos.create(prompt="request id")
    assert video._request_id, "SDK could not read x-request-id"
    assert_completed(wait_terminal(client, video.id))
