//! The Sora surface over real HTTP against the real binary on the local backend.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::{Shim, assert_error, assert_schema, multipart};
use hyper::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn health_and_readiness() {
    let shim = Shim::start();
    for path in ["/healthz", "/readyz"] {
        let r = shim.call(Method::GET, path, None, &[], Bytes::new()).await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn create_poll_download_every_variant() {
    let shim = Shim::start();
    let r = shim
        .post_json(
            "/v1/videos",
            "k1",
            &json!({"prompt": "a red fox", "size": "1280x720", "seconds": "4"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.header("x-request-id").unwrap().starts_with("req_"));
    assert!(r.header("openai-processing-ms").is_some());
    let v = r.json();
    assert_schema("video", &v);
    assert_eq!(v["status"], "queued");
    assert_eq!(v["progress"], 0);
    assert_eq!(v["model"], "sora-2");
    assert_eq!(v["seconds"], "4");
    assert_eq!(v["prompt"], "a red fox");
    let id = v["id"].as_str().unwrap();
    assert!(id.starts_with("video_"));

    let done = shim.wait(id, "k1").await;
    assert_schema("video", &done);
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["progress"], 100);
    assert!(done["completed_at"].as_i64().unwrap() >= done["created_at"].as_i64().unwrap());

    for (variant, content_type, magic) in [
        ("video", "video/mp4", &b"ftyp"[..]),
        ("thumbnail", "image/webp", &b"RIFF"[..]),
        ("spritesheet", "image/jpeg", &b"\xff\xd8\xff"[..]),
    ] {
        let r = shim
            .get(&format!("/v1/videos/{id}/content?variant={variant}"), "k1")
            .await;
        assert_eq!(r.status, StatusCode::OK, "{variant}");
        assert_eq!(r.header("content-type"), Some(content_type));
        assert_eq!(
            r.header("content-length").unwrap().parse::<usize>().unwrap(),
            r.body.len()
        );
        assert!(r.body.len() > 100);
        let at = if variant == "video" { 4 } else { 0 };
        assert_eq!(&r.body[at..at + magic.len()], magic, "{variant}");
    }
    // The default variant is the video.
    let whole = shim.get(&format!("/v1/videos/{id}/content"), "k1").await;
    assert_eq!(whole.header("content-type"), Some("video/mp4"));
    let etag = whole.header("etag").unwrap().to_owned();

    // Ranges: a slice, a suffix, and one past the end.
    let path = format!("/v1/videos/{id}/content");
    let r = shim
        .call(
            Method::GET,
            &path,
            Some("k1"),
            &[("range", "bytes=10-19")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(&r.body[..], &whole.body[10..20]);
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes 10-19/{}", whole.body.len()).as_str())
    );
    let r = shim
        .call(Method::GET, &path, Some("k1"), &[("range", "bytes=-5")], Bytes::new())
        .await;
    assert_eq!(&r.body[..], &whole.body[whole.body.len() - 5..]);
    let past = format!("bytes={}-", whole.body.len());
    let r = shim
        .call(
            Method::GET,
            &path,
            Some("k1"),
            &[("range", past.as_str())],
            Bytes::new(),
        )
        .await;
    assert_error(&r, 416, Some("Range"), Some("range_not_satisfiable"));
    assert_eq!(
        r.header("content-range"),
        Some(format!("bytes */{}", whole.body.len()).as_str())
    );
    let r = shim
        .call(
            Method::GET,
            &path,
            Some("k1"),
            &[("if-none-match", etag.as_str())],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn multipart_create_with_reference_image_as_the_sdk_sends_it() {
    let shim = Shim::start();
    let mut png = Vec::new();
    image::RgbImage::from_pixel(720, 1280, image::Rgb([200, 30, 30]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let (ct, body) = multipart(&[
        ("prompt", None, "", b"a red wall"),
        ("model", None, "", b"sora-2"),
        ("seconds", None, "", b"4"),
        ("input_reference", Some("ref.png"), "image/png", &png),
    ]);
    let r = shim.post_multipart("/v1/videos", "k", &ct, body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    let id = r.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(shim.wait(&id, "k").await["status"], "completed");

    // The wrong size is refused at the door, as Sora did.
    let (ct, body) = multipart(&[
        ("prompt", None, "", b"a red wall"),
        ("size", None, "", b"1280x720"),
        ("input_reference", Some("ref.png"), "image/png", &png),
    ]);
    let r = shim.post_multipart("/v1/videos", "k", &ct, body).await;
    assert_error(&r, 400, Some("input_reference"), Some("invalid_value"));

    // Bracketed keys: input_reference[image_url] as a data URL.
    let data_url = format!("data:image/png;base64,{}", base64_encode(&png));
    let (ct, body) = multipart(&[
        ("prompt", None, "", b"from a data url"),
        ("input_reference[image_url]", None, "", data_url.as_bytes()),
    ]);
    let r = shim.post_multipart("/v1/videos", "k", &ct, body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn every_bad_input_gets_a_clear_error() {
    let shim = Shim::start();
    let json_ct = [("content-type", "application/json")];
    // No key.
    let r = shim.call(Method::GET, "/v1/videos", None, &[], Bytes::new()).await;
    assert_error(&r, 401, None, None);
    // Malformed JSON, not an object, wrong content type.
    let r = shim
        .call(Method::POST, "/v1/videos", Some("k"), &json_ct, "{\"prompt\": ")
        .await;
    assert_error(&r, 400, None, Some("invalid_json"));
    let r = shim.call(Method::POST, "/v1/videos", Some("k"), &json_ct, "[]").await;
    assert_error(&r, 400, None, Some("invalid_type"));
    let r = shim
        .call(
            Method::POST,
            "/v1/videos",
            Some("k"),
            &[("content-type", "text/plain")],
            "hi",
        )
        .await;
    assert_error(&r, 400, None, Some("invalid_content_type"));
    // Oversize (limit is 2 MiB in the test config).
    let big = json!({"prompt": "x".repeat(3 * 1024 * 1024)}).to_string();
    let r = shim.call(Method::POST, "/v1/videos", Some("k"), &json_ct, big).await;
    assert_error(&r, 413, None, Some("request_too_large"));
    // Fields.
    let cases = [
        (json!({}), "prompt", "missing_required_parameter"),
        (json!({"prompt": ""}), "prompt", "string_below_min_length"),
        (json!({"prompt": "p", "duration": 4}), "duration", "unknown_parameter"),
        (json!({"prompt": "p", "seconds": 8}), "seconds", "invalid_type"),
        (json!({"prompt": "p", "seconds": "15"}), "seconds", "invalid_value"),
        (json!({"prompt": "p", "size": "1920x1080"}), "size", "invalid_value"),
        (json!({"prompt": "p", "model": "sora-9"}), "model", "invalid_value"),
        (
            json!({"prompt": "p", "input_reference": {"image_url": "ftp://x"}}),
            "input_reference.image_url",
            "invalid_value",
        ),
        (
            json!({"prompt": "p", "characters": [{"id": "char_nope"}]}),
            "characters[0].id",
            "invalid_value",
        ),
    ];
    for (body, param, code) in cases {
        let r = shim.post_json("/v1/videos", "k", &body).await;
        let v = assert_error(&r, 400, Some(param), Some(code));
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(r.header("x-should-retry"), Some("false"));
    }
    let r = shim
        .post_json("/v1/videos", "k", &json!({"prompt": "p", "seconds": "15"}))
        .await;
    assert_eq!(
        r.json()["error"]["message"],
        "Invalid value: '15'. Supported values are: '4', '8', '12', '16', and '20'."
    );
    // The 1080p sizes are sora-2-pro's.
    let r = shim
        .post_json(
            "/v1/videos",
            "k",
            &json!({"prompt": "p", "model": "sora-2-pro", "size": "1920x1080"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    // Unknown ids, routes and methods; bad list parameters and variants.
    assert_error(&shim.get("/v1/videos/video_nope", "k").await, 404, None, None);
    assert_error(&shim.get("/v1/videos/video_nope/content", "k").await, 404, None, None);
    assert_error(&shim.get("/v1/images", "k").await, 404, None, None);
    let r = shim.call(Method::PUT, "/v1/videos", Some("k"), &[], Bytes::new()).await;
    assert_error(&r, 405, None, Some("method_not_allowed"));
    assert_eq!(r.header("allow"), Some("GET, POST"));
    assert_error(
        &shim.get("/v1/videos?limit=101", "k").await,
        400,
        Some("limit"),
        Some("invalid_value"),
    );
    assert_error(
        &shim.get("/v1/videos?order=up", "k").await,
        400,
        Some("order"),
        Some("invalid_value"),
    );
    let id = shim.create("k", &json!({"prompt": "p"})).await;
    let r = shim.get(&format!("/v1/videos/{id}/content?variant=mp4"), "k").await;
    assert_error(&r, 400, Some("variant"), Some("invalid_value"));
}

#[tokio::test]
async fn a_video_belongs_to_the_key_that_made_it() {
    let shim = Shim::start();
    let id = shim.create("alice", &json!({"prompt": "mine"})).await;
    assert_eq!(shim.wait(&id, "alice").await["status"], "completed");
    for path in [format!("/v1/videos/{id}"), format!("/v1/videos/{id}/content")] {
        assert_error(&shim.get(&path, "bob").await, 404, None, None);
    }
    let r = shim
        .call(
            Method::DELETE,
            &format!("/v1/videos/{id}"),
            Some("bob"),
            &[],
            Bytes::new(),
        )
        .await;
    assert_error(&r, 404, None, None);
    let r = shim
        .post_json(&format!("/v1/videos/{id}/remix"), "bob", &json!({"prompt": "theirs"}))
        .await;
    assert_error(&r, 404, Some("video_id"), None);
    let list = shim.get("/v1/videos", "bob").await.json();
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    assert_eq!(
        shim.get("/v1/videos", "alice").await.json()["data"][0]["id"],
        id.as_str()
    );
}

#[tokio::test]
async fn list_pages_in_both_orders() {
    let shim = Shim::start();
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(shim.create("lister", &json!({"prompt": format!("video {i}")})).await);
    }
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let r = shim
            .get(&format!("/v1/videos?limit=2&order=asc&after={after}"), "lister")
            .await;
        let page = r.json();
        assert_schema("video_list", &page);
        let data = page["data"].as_array().unwrap();
        seen.extend(data.iter().map(|v| v["id"].as_str().unwrap().to_owned()));
        assert_eq!(page["first_id"], data[0]["id"]);
        assert_eq!(page["last_id"], data[data.len() - 1]["id"]);
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
        after = page["last_id"].as_str().unwrap().to_owned();
    }
    assert_eq!(seen, ids);
    let desc = shim.get("/v1/videos?limit=100", "lister").await.json();
    let desc_ids: Vec<String> = desc["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(desc_ids, ids.iter().rev().cloned().collect::<Vec<_>>());
    let empty = shim.get("/v1/videos?limit=0", "lister").await.json();
    assert_eq!(empty["data"].as_array().unwrap().len(), 0);
    assert_eq!(empty["has_more"], true);
    assert_eq!(empty["first_id"], serde_json::Value::Null);
}

#[tokio::test]
async fn idempotency_key_never_pays_twice() {
    let shim = Shim::start();
    let body = json!({"prompt": "once"}).to_string();
    let headers = [("content-type", "application/json"), ("idempotency-key", "abc")];
    let first = shim
        .call(Method::POST, "/v1/videos", Some("k"), &headers, body.clone())
        .await
        .json();
    let again = shim
        .call(Method::POST, "/v1/videos", Some("k"), &headers, body)
        .await
        .json();
    assert_eq!(first["id"], again["id"]);
    let other = json!({"prompt": "something else"}).to_string();
    let r = shim.call(Method::POST, "/v1/videos", Some("k"), &headers, other).await;
    assert_error(&r, 409, Some("Idempotency-Key"), Some("idempotency_key_reused"));
    assert_eq!(r.header("x-should-retry"), Some("false"));
    let list = shim.get("/v1/videos", "k").await.json();
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn remix_edit_extend_and_delete() {
    let shim = Shim::start();
    let src = shim
        .create("k", &json!({"prompt": "a boat", "size": "1280x720", "seconds": "4"}))
        .await;
    let r = shim
        .post_json(
            &format!("/v1/videos/{src}/remix"),
            "k",
            &json!({"prompt": "a boat at night"}),
        )
        .await;
    // The source is not finished yet.
    assert_error(&r, 400, Some("video_id"), Some("invalid_state"));
    let r = shim
        .call(
            Method::DELETE,
            &format!("/v1/videos/{src}"),
            Some("k"),
            &[],
            Bytes::new(),
        )
        .await;
    assert_error(&r, 400, Some("video_id"), Some("invalid_state"));
    shim.wait(&src, "k").await;

    let remix = shim
        .post_json(
            &format!("/v1/videos/{src}/remix"),
            "k",
            &json!({"prompt": "a boat at night"}),
        )
        .await
        .json();
    assert_schema("video", &remix);
    assert_eq!(remix["remixed_from_video_id"], src.as_str());
    assert_eq!(
        (remix["size"].as_str(), remix["seconds"].as_str()),
        (Some("1280x720"), Some("4"))
    );

    let edit = shim
        .post_json(
            "/v1/videos/edits",
            "k",
            &json!({"prompt": "a red boat", "video": {"id": src}}),
        )
        .await
        .json();
    assert_schema("video", &edit);
    assert_eq!(edit["remixed_from_video_id"], serde_json::Value::Null);

    let (ct, body) = multipart(&[
        ("prompt", None, "", b"and then a storm"),
        ("seconds", None, "", b"8"),
        ("video[id]", None, "", src.as_bytes()),
    ]);
    let ext = shim.post_multipart("/v1/videos/extensions", "k", &ct, body).await;
    assert_eq!(ext.status, StatusCode::OK, "{}", String::from_utf8_lossy(&ext.body));
    let ext = ext.json();
    assert_eq!(ext["seconds"], "12", "an extension reports the stitched total");

    for id in [&remix["id"], &edit["id"], &ext["id"]] {
        let done = shim.wait(id.as_str().unwrap(), "k").await;
        assert_eq!(done["status"], "completed", "{done}");
    }
    // An uploaded MP4 can be edited too.
    let mp4 = shim.get(&format!("/v1/videos/{src}/content"), "k").await.body;
    let (ct, body) = multipart(&[
        ("prompt", None, "", b"restyle"),
        ("video", Some("in.mp4"), "video/mp4", &mp4),
    ]);
    let r = shim.post_multipart("/v1/videos/edits", "k", &ct, body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["size"], "1280x720");
    let (ct, body) = multipart(&[
        ("prompt", None, "", b"restyle"),
        ("video", Some("in.mp4"), "video/mp4", b"not a video"),
    ]);
    let r = shim.post_multipart("/v1/videos/edits", "k", &ct, body).await;
    assert_error(&r, 400, Some("video"), Some("invalid_value"));

    let r = shim
        .call(
            Method::DELETE,
            &format!("/v1/videos/{src}"),
            Some("k"),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let deleted = r.json();
    assert_schema("video_deleted", &deleted);
    assert_eq!(deleted, json!({"id": src, "object": "video.deleted", "deleted": true}));
    assert_error(&shim.get(&format!("/v1/videos/{src}"), "k").await, 404, None, None);
    assert_error(
        &shim.get(&format!("/v1/videos/{src}/content"), "k").await,
        404,
        None,
        None,
    );
    assert!(!shim.data_dir.join("assets").join(&src).exists(), "assets removed");
}

#[tokio::test]
async fn characters_are_created_and_fetched_per_tenant() {
    let shim = Shim::start();
    let src = shim.create("k", &json!({"prompt": "a clip", "seconds": "4"})).await;
    shim.wait(&src, "k").await;
    let mp4 = shim.get(&format!("/v1/videos/{src}/content"), "k").await.body;
    let (ct, body) = multipart(&[
        ("name", None, "", b"Mossy"),
        ("video", Some("c.mp4"), "video/mp4", &mp4),
    ]);
    let r = shim.post_multipart("/v1/videos/characters", "k", &ct, body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    let c = r.json();
    assert_schema("character", &c);
    let id = c["id"].as_str().unwrap();
    assert!(id.starts_with("char_"));
    assert_eq!(shim.get(&format!("/v1/videos/characters/{id}"), "k").await.json(), c);
    assert_error(
        &shim.get(&format!("/v1/videos/characters/{id}"), "other").await,
        404,
        None,
        None,
    );
    // A character can be used in a create by its owner only.
    let ok = shim
        .post_json(
            "/v1/videos",
            "k",
            &json!({"prompt": "with Mossy", "characters": [{"id": id}]}),
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    let r = shim
        .post_json(
            "/v1/videos",
            "other",
            &json!({"prompt": "p", "characters": [{"id": id}]}),
        )
        .await;
    assert_error(&r, 400, Some("characters[0].id"), None);
    // JSON is not accepted for characters (multipart only, as the API).
    let r = shim
        .post_json("/v1/videos/characters", "k", &json!({"name": "x"}))
        .await;
    assert_error(&r, 400, None, Some("invalid_content_type"));
}
