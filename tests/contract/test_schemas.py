"""Offline checks of schemas/sora/*.json (no shim needed): every file is a valid, self-contained
draft 2020-12 schema, accepts the examples from the reference docs and rejects what it must."""

from __future__ import annotations

import json

import pytest
from jsonschema import Draft202012Validator

from support import SCHEMA_DIR, assert_invalid, assert_valid, load_schema

REQUEST_SCHEMAS = [
    "create_video.json.schema.json",
    "create_video.multipart.schema.json",
    "remix_video.schema.json",
    "edit_video.json.schema.json",
    "edit_video.multipart.schema.json",
    "extend_video.json.schema.json",
    "extend_video.multipart.schema.json",
    "create_character.multipart.schema.json",
]
RESPONSE_SCHEMAS = [
    "video.schema.json",
    "video_list.schema.json",
    "video_deleted.schema.json",
    "character.schema.json",
    "error.schema.json",
]


def _refs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref":
                yield v
            else:
                yield from _refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from _refs(v)


def _objects(node):
    if isinstance(node, dict):
        if node.get("type") == "object":
            yield node
        for v in node.values():
            yield from _objects(v)
    elif isinstance(node, list):
        for v in node:
            yield from _objects(v)


def test_exactly_the_expected_files():
    names = sorted(p.name for p in SCHEMA_DIR.glob("*.json"))
    assert names == sorted(REQUEST_SCHEMAS + RESPONSE_SCHEMAS)


@pytest.mark.parametrize("name", REQUEST_SCHEMAS + RESPONSE_SCHEMAS)
def test_schema_is_valid_draft_2020_12_and_self_contained(name):
    schema = json.loads((SCHEMA_DIR / name).read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    for ref in _refs(schema):
        assert ref.startswith("#/$defs/"), f"{name}: non-local $ref {ref}"
        target = ref[len("#/$defs/"):]
        assert target in schema.get("$defs", {}), f"{name}: dangling $ref {ref}"


@pytest.mark.parametrize("name", REQUEST_SCHEMAS)
def test_request_schemas_close_every_object(name):
    schema = load_schema(name)
    assert schema["type"] == "object"
    for obj in _objects(schema):
        assert obj.get("additionalProperties") is False, f"{name}: object without additionalProperties:false: {obj}"
    # no enums for model/size/seconds: allowed values live in the server config
    text = json.dumps(schema)
    assert '"enum"' not in text, f"{name} must not use enums"


def test_request_required_fields_match_openapi():
    req = {n: sorted(load_schema(n)["required"]) for n in REQUEST_SCHEMAS}
    assert req == {
        "create_video.json.schema.json": ["prompt"],
        "create_video.multipart.schema.json": ["prompt"],
        "remix_video.schema.json": ["prompt"],
        "edit_video.json.schema.json": ["prompt", "video"],
        "edit_video.multipart.schema.json": ["prompt", "video"],
        "extend_video.json.schema.json": ["prompt", "seconds", "video"],
        "extend_video.multipart.schema.json": ["prompt", "seconds", "video"],
        "create_character.multipart.schema.json": ["name", "video"],
    }


# --------------------------------------------------------------------------- request examples

CREATE_JSON_OK = [
    {"prompt": "x"},
    {"prompt": "A calico cat playing a piano on stage", "model": "sora-2", "size": "1280x720", "seconds": "8"},
    # Batch example from the guide
    {"model": "sora-2-pro", "prompt": "p", "size": "1920x1080", "seconds": "20"},
    {"prompt": "p", "input_reference": {"image_url": "data:image/png;base64,iVBORw0KGgo="}},
    {"prompt": "p", "input_reference": {"file_id": "file-123"}},
    {"prompt": "p", "characters": [{"id": "char_1"}, {"id": "char_2"}]},
    {"prompt": "p", "model": "not-a-model", "size": "640x480", "seconds": "15"},  # checked by the server, not here
    {"prompt": "x" * 32000},
]
CREATE_JSON_BAD = [
    {},
    {"model": "sora-2"},
    {"prompt": ""},
    {"prompt": "x" * 32001},
    {"prompt": 5},
    {"prompt": "p", "seconds": 8},
    {"prompt": "p", "size": 1280},
    {"prompt": "p", "duration": "5"},
    {"prompt": "p", "input_reference": {}},
    {"prompt": "p", "input_reference": {"image_url": "https://x/a.png", "file_id": "file-1"}},
    {"prompt": "p", "input_reference": {"url": "https://x/a.png"}},
    {"prompt": "p", "input_reference": "<binary>"},  # uploads only exist in multipart
    {"prompt": "p", "characters": [{"id": "a"}, {"id": "b"}, {"id": "c"}]},
    {"prompt": "p", "characters": [{"name": "a"}]},
    {"prompt": "p", "characters": [{"id": "a", "x": 1}]},
    {"prompt": "p", "character_ids": ["char_1"]},
    ["prompt"],
]


@pytest.mark.parametrize("body", CREATE_JSON_OK)
def test_create_json_accepts(body):
    assert_valid(body, "create_video.json.schema.json")
    assert_valid(body, "create_video.multipart.schema.json")


@pytest.mark.parametrize("body", CREATE_JSON_BAD)
def test_create_json_rejects(body):
    assert_invalid(body, "create_video.json.schema.json")


def test_create_multipart_upload_and_bracket_forms():
    s = "create_video.multipart.schema.json"
    # python SDK: text parts + uploaded file
    assert_valid({"prompt": "p", "model": "sora-2", "seconds": "8", "size": "1280x720", "input_reference": "<binary>"}, s)
    # node SDK: input_reference[image_url]=...
    assert_valid({"prompt": "p", "input_reference": {"image_url": "https://x/y.png"}}, s)
    # openai/skills: repeated characters[][id]
    assert_valid({"prompt": "p", "characters": [{"id": "char_1"}, {"id": "char_2"}]}, s)
    assert_invalid({"prompt": "p", "input_reference": "some text"}, s)
    assert_invalid({"prompt": "p", "input_reference": {"image_url": "a", "file_id": "b"}}, s)
    assert_invalid({"prompt": "p", "extra": "1"}, s)


def test_remix():
    s = "remix_video.schema.json"
    assert_valid({"prompt": "again"}, s)
    for bad in ({}, {"prompt": ""}, {"prompt": "a", "model": "sora-2"}, {"prompt": "a", "video": {"id": "v"}}):
        assert_invalid(bad, s)


def test_edit():
    j, m = "edit_video.json.schema.json", "edit_video.multipart.schema.json"
    assert_valid({"prompt": "p", "video": {"id": "video_123"}}, j)
    assert_valid({"prompt": "p", "video": {"id": "video_123"}}, m)
    assert_valid({"prompt": "p", "video": "<binary>"}, m)
    assert_valid({"prompt": "p", "video": "<binary>", "model": "sora-2-pro"}, m)
    for bad in (
        {"prompt": "p"},
        {"video": {"id": "v"}},
        {"prompt": "p", "video": "<binary>"},
        {"prompt": "p", "video": {}},
        {"prompt": "p", "video": {"id": "v", "x": 1}},
        {"prompt": "p", "video": {"id": "v"}, "model": "sora-2"},  # model is multipart-only (guide)
        {"prompt": "p", "video": "video_123"},
    ):
        assert_invalid(bad, j)
    for bad in ({"prompt": "p", "video": "video_123"}, {"prompt": "p", "video": "<binary>", "seconds": "4"}):
        assert_invalid(bad, m)


def test_extend():
    j, m = "extend_video.json.schema.json", "extend_video.multipart.schema.json"
    assert_valid({"prompt": "p", "seconds": "4", "video": {"id": "video_123"}}, j)
    assert_valid({"prompt": "p", "seconds": "20", "video": {"id": "video_123"}}, m)
    assert_valid({"prompt": "p", "seconds": "4", "video": "<binary>"}, m)
    for bad in (
        {"prompt": "p", "video": {"id": "v"}},
        {"prompt": "p", "seconds": 4, "video": {"id": "v"}},
        {"prompt": "p", "seconds": "4", "video": "<binary>"},
        {"prompt": "p", "seconds": "4", "video": {"id": "v"}, "model": "sora-2"},
        {"prompt": "p", "seconds": "4", "video": {"id": "v"}, "input_reference": {"file_id": "f"}},
    ):
        assert_invalid(bad, j)
    assert_invalid({"prompt": "p", "seconds": "4", "video": {"id": "v"}, "model": "sora-2"}, m)


def test_create_character():
    s = "create_character.multipart.schema.json"
    assert_valid({"name": "Mossy", "video": "<binary>"}, s)
    assert_valid({"name": "x" * 80, "video": "<binary>"}, s)
    for bad in (
        {"name": "Mossy"},
        {"video": "<binary>"},
        {"name": "", "video": "<binary>"},
        {"name": "x" * 81, "video": "<binary>"},
        {"name": "Mossy", "video": {"id": "video_1"}},
        {"name": "Mossy", "video": "video_1"},
        {"name": "Mossy", "video": "<binary>", "prompt": "p"},
    ):
        assert_invalid(bad, s)


# --------------------------------------------------------------------------- response examples

# the full shapes from sora-api.md §3
IN_PROGRESS = {"id": "video_abc", "object": "video", "model": "sora-2", "status": "in_progress", "progress": 33,
               "created_at": 1758941485, "completed_at": None, "expires_at": None, "prompt": "…",
               "size": "1280x720", "seconds": "8", "remixed_from_video_id": None, "error": None}
COMPLETED = {**IN_PROGRESS, "status": "completed", "progress": 100, "completed_at": 1758941790,
             "expires_at": 1758945390}
FAILED = {**IN_PROGRESS, "status": "failed", "progress": 0,
          "error": {"code": "moderation_blocked", "message": "Your request was blocked by our moderation system."}}
REMIX_QUEUED = {**IN_PROGRESS, "id": "video_456", "status": "queued", "progress": 0, "size": "720x1280",
                "remixed_from_video_id": "video_123"}


@pytest.mark.parametrize("video", [IN_PROGRESS, COMPLETED, FAILED, REMIX_QUEUED,
                                   {**COMPLETED, "size": "1920x1080", "seconds": "20", "model": "sora-2-pro"},
                                   {**COMPLETED, "seconds": "24"},  # stitched extension total
                                   {**IN_PROGRESS, "prompt": None}])
def test_video_accepts(video):
    assert_valid(video, "video.schema.json")


@pytest.mark.parametrize("video", [
    # the docs' own examples omit required nullable fields / carry `quality`
    {"id": "video_123", "object": "video", "model": "sora-2", "status": "queued", "progress": 0,
     "created_at": 1712697600, "size": "1024x1792", "seconds": "8", "quality": "standard"},
    {"id": "video_68d7512d07848190b3e45da0ecbebcde004da08e1e0678d5", "object": "video", "created_at": 1758941485,
     "status": "queued", "model": "sora-2-pro", "progress": 0, "seconds": "8", "size": "1280x720"},
    {**COMPLETED, "quality": "standard"},
    {**IN_PROGRESS, "status": "expired"},
    {**IN_PROGRESS, "status": "cancelled"},
    {**IN_PROGRESS, "object": "video.generation.job"},
    {**IN_PROGRESS, "progress": 101},
    {**IN_PROGRESS, "progress": -1},
    {**IN_PROGRESS, "progress": 33.5},
    {**IN_PROGRESS, "seconds": 8},
    {**IN_PROGRESS, "size": "1280×720"},
    {**IN_PROGRESS, "size": "720p"},
    {**COMPLETED, "progress": 99},
    {**COMPLETED, "completed_at": None},
    {**FAILED, "error": None},
    {**FAILED, "error": {"code": "x"}},
    {**IN_PROGRESS, "error": {"code": "x", "message": "y"}},
])
def test_video_rejects(video):
    assert_invalid(video, "video.schema.json")


def test_video_list():
    s = "video_list.schema.json"
    assert_valid({"object": "list", "data": [COMPLETED, IN_PROGRESS], "first_id": "video_abc",
                  "last_id": "video_abc", "has_more": True}, s)
    assert_valid({"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False}, s)
    assert_invalid({"object": "list", "data": [{**COMPLETED, "quality": "x"}], "first_id": None, "last_id": None,
                    "has_more": False}, s)
    assert_invalid({"object": "list", "data": [], "has_more": False}, s)
    assert_invalid({"object": "page", "data": [], "first_id": None, "last_id": None, "has_more": False}, s)
    assert_invalid({"object": "list", "data": [], "first_id": None, "last_id": None, "has_more": False,
                    "next": None}, s)


def test_video_deleted():
    s = "video_deleted.schema.json"
    assert_valid({"id": "video_123", "object": "video.deleted", "deleted": True}, s)  # spec example
    assert_invalid({"id": "video_123", "object": "video", "deleted": True}, s)
    assert_invalid({"id": "video_123", "object": "video.deleted"}, s)
    assert_invalid({"id": "video_123", "object": "video.deleted", "deleted": True, "x": 1}, s)


def test_character():
    s = "character.schema.json"
    assert_valid({"id": "char_123", "name": "Mossy", "created_at": 1758941485}, s)
    assert_valid({"id": None, "name": None, "created_at": 1758941485}, s)
    assert_invalid({"id": "char_123", "name": "Mossy"}, s)
    assert_invalid({"id": "char_123", "name": "Mossy", "created_at": "1758941485"}, s)
    assert_invalid({"id": "char_123", "name": "Mossy", "created_at": 1, "object": "character"}, s)


def test_error_envelope():
    s = "error.schema.json"
    # captured upstream example (sora-api.md §4.1)
    assert_valid({"error": {"message": "Invalid value: '15'. Supported values are: '4', '8', and '12'.",
                            "type": "invalid_request_error", "param": "seconds", "code": "invalid_value"}}, s)
    assert_valid({"error": {"message": "m", "type": "invalid_request_error", "param": None, "code": None}}, s)
    assert_invalid({"error": {"message": "m", "type": "invalid_request_error", "code": None}}, s)
    assert_invalid({"error": {"message": "m", "type": "t", "param": None, "code": None, "extra": 1}}, s)
    assert_invalid({"message": "m", "type": "t", "param": None, "code": None}, s)
    assert_invalid({"error": "boom"}, s)
