"""Open development auth: every bearer key is its own tenant."""

from __future__ import annotations

import openai
import pytest
from openai.types import Video

from support import assert_error


def test_foreign_tenant_sees_nothing(clients, source):
    owner = clients.sync(source.key)
    other = clients.sync()
    vid = source.video.id

    calls = {
        "retrieve": lambda: other.videos.retrieve(vid),
        "content": lambda: other.videos.download_content(vid),
        "thumbnail": lambda: other.videos.download_content(vid, variant="thumbnail"),
        "delete": lambda: other.videos.delete(vid),
        "remix": lambda: other.videos.remix(vid, prompt="steal it"),
        "edit": lambda: other.post("/videos/edits", body={"prompt": "x", "video": {"id": vid}}, cast_to=Video),
        "extend": lambda: other.post("/videos/extensions", body={"prompt": "x", "seconds": "4", "video": {"id": vid}},
                                     cast_to=Video),
    }
    for name, call in calls.items():
        with pytest.raises(openai.NotFoundError) as exc:
            call()
        assert_error(exc.value, 404)

    assert vid not in [v.id for v in other.videos.list()]
    # the owner is unaffected (the foreign delete did nothing)
    assert owner.videos.retrieve(vid).status == "completed"
    assert vid in [v.id for v in owner.videos.list(limit=100)]


def test_lists_are_disjoint(clients):
    a, b = clients.sync(), clients.sync()
    va = a.videos.create(prompt="Tenant A")
    vb = b.videos.create(prompt="Tenant B")
    assert [v.id for v in a.videos.list()] == [va.id]
    assert [v.id for v in b.videos.list()] == [vb.id]
