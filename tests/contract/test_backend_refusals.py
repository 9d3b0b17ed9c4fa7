"""What a mapped backend cannot do is refused up front: a 400 naming the model and the parameter (never the
backend, which stays in the shim's log), no video created, and nothing sent to (or paid at) the provider. With
the local backend everything is offered."""

from __future__ import annotations

import json
import urllib.request

import pytest

from backends import CAPS
from support import assert_error, png_bytes

OPERATIONS = ("remix", "edit", "extend")


def _provider_creates(fake) -> int:
    with urllib.request.urlopen(f"{fake.url}/__control/stats", timeout=10) as r:
        return json.load(r)["creates"]


def _requests(vid: str, mp4: bytes):
    """One request per operation, as a raw httpx call on the shim root."""
    return {
        "remix": lambda http: http.post(f"/v1/videos/{vid}/remix", json={"prompt": "refused remix"}),
        "edit": lambda http: http.post("/v1/videos/edits", json={"prompt": "refused edit", "video": {"id": vid}}),
        "extend": lambda http: http.post("/v1/videos/extensions",
                                         json={"prompt": "refused extension", "seconds": "4", "video": {"id": vid}}),
        "edit upload": lambda http: http.post("/v1/videos/edits", files={
            "prompt": (None, "refused edit upload"), "video": ("s.mp4", mp4, "video/mp4")}),
    }


def test_local_backend_offers_everything():
    if not CAPS.local:
        pytest.skip("a mapped backend: see the refusal tests")
    assert all(CAPS.offers(op) for op in OPERATIONS) and CAPS.characters


@pytest.mark.parametrize("operation", ["remix", "edit", "extend", "edit upload"])
def test_missing_operation_is_refused_before_anything_is_sent(clients, source, fake, operation):
    op = operation.split()[0]
    if CAPS.offers(op):
        pytest.skip(f"{CAPS.name} offers {op}")
    http = clients.raw(source.key)
    before = _provider_creates(fake)
    listed = [v["id"] for v in http.get("/v1/videos", params={"limit": 100}).json()["data"]]
    r = _requests(source.video.id, source.mp4)[operation](http)
    err = assert_error(r, 400, param="model")
    assert f"The model '{source.video.model}'" in err["message"] and op in err["message"], err
    assert "'prov'" not in err["message"], "the backend's name reached the client"
    assert [v["id"] for v in http.get("/v1/videos", params={"limit": 100}).json()["data"]] == listed
    assert _provider_creates(fake) == before, "a refused request reached the provider"


def test_uploaded_image_is_refused_when_the_backend_takes_none(clients, fake):
    if CAPS.takes_uploaded_image():
        pytest.skip(f"{CAPS.name} takes images ({CAPS.images})")
    http = clients.raw()
    before = _provider_creates(fake)
    r = http.post("/v1/videos", files={"prompt": (None, "from a frame"),
                                       "input_reference": ("r.png", png_bytes(720, 1280), "image/png")})
    err = assert_error(r, 400, param="input_reference")
    assert "The model '" in err["message"] and "'prov'" not in err["message"], err
    assert http.get("/v1/videos").json()["data"] == []
    assert _provider_creates(fake) == before
