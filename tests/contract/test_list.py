"""GET /videos: cursor pagination through the SDK's auto-paginator and on raw pages."""

from __future__ import annotations

import openai
import pytest

from support import assert_error, assert_valid


def _create_five(client) -> list[str]:
    return [client.videos.create(prompt=f"List item {i}", seconds="4").id for i in range(5)]


def test_list_autopaginates_in_creation_order(client):
    ids = _create_five(client)
    asc = [v.id for v in client.videos.list(limit=2, order="asc")]
    assert asc == ids
    desc = [v.id for v in client.videos.list(limit=2, order="desc")]
    assert desc == ids[::-1]
    # the paginator must have followed after=<last_id> three times per direction
    pages = [e for e in client.recorder.entries if e["method"] == "GET" and e["path"].endswith("/videos")]
    assert len(pages) == 6, [e["url"] for e in pages]
    for e in pages:
        assert_valid(e["json"], "video_list.schema.json")


def test_list_raw_pages(client):
    ids = _create_five(client)

    def page(**q):
        raw = client.videos.with_raw_response.list(**q)
        return assert_valid(raw.http_response.json(), "video_list.schema.json")

    p1 = page(limit=2, order="asc")
    assert p1["object"] == "list"
    assert [v["id"] for v in p1["data"]] == ids[:2]
    assert (p1["first_id"], p1["last_id"], p1["has_more"]) == (ids[0], ids[1], True)

    p2 = page(limit=2, order="asc", after=p1["last_id"])
    assert [v["id"] for v in p2["data"]] == ids[2:4]
    assert (p2["first_id"], p2["last_id"], p2["has_more"]) == (ids[2], ids[3], True)

    p3 = page(limit=2, order="asc", after=p2["last_id"])
    assert [v["id"] for v in p3["data"]] == ids[4:]
    assert (p3["first_id"], p3["last_id"], p3["has_more"]) == (ids[4], ids[4], False)

    d1 = page(limit=3, order="desc")
    assert [v["id"] for v in d1["data"]] == ids[::-1][:3]
    assert (d1["first_id"], d1["last_id"], d1["has_more"]) == (ids[4], ids[2], True)
    d2 = page(limit=3, order="desc", after=d1["last_id"])
    assert [v["id"] for v in d2["data"]] == ids[1::-1]
    assert d2["has_more"] is False

    everything = page(limit=100)
    assert sorted(v["id"] for v in everything["data"]) == sorted(ids)
    assert everything["has_more"] is False

    exact = page(limit=5, order="asc")
    assert [v["id"] for v in exact["data"]] == ids
    assert exact["has_more"] is False


def test_list_empty_for_new_key(client):
    raw = client.videos.with_raw_response.list()
    body = assert_valid(raw.http_response.json(), "video_list.schema.json")
    assert body == {"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}
    assert list(client.videos.list()) == []


@pytest.mark.parametrize("limit", [101, -1])
def test_list_limit_out_of_range(client, limit):
    with pytest.raises(openai.BadRequestError) as exc:
        client.videos.list(limit=limit)
    assert_error(exc.value, 400, param="limit")


def test_list_bad_order(raw):
    assert_error(raw.get("/v1/videos", params={"order": "sideways"}), 400, param="order")
