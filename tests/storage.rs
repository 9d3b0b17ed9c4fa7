//! Asset storage and retention against real things: S3 through moto in server mode (an S3-compatible server
//! started on loopback; `.ci/test` installs it and sets SORA_SHIM_TEST_MOTO): the shim serving and deleting
//! videos kept in S3, and expiry sweeps on local storage. The 200 MB round trip under a memory ceiling is in
//! `tests/s3_memory.rs`, a process of its own.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::Shim;
use common::moto::Moto;
use hyper::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};

fn s3_env() -> [(&'static str, &'static str); 3] {
    [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing-secret"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ]
}

#[tokio::test]
async fn the_shim_serves_and_deletes_videos_kept_in_s3() {
    let Some(moto) = Moto::start() else { return };
    moto.bucket("videos");
    let config = format!(
        r#"
[server]
poll_after_ms = 100
[worker]
poll_interval_ms = 50
[assets]
kind = "s3"
bucket = "videos"
prefix = "shim"
region = "us-east-1"
endpoint = "{}"
[backends.local]
kind = "local"
fps = 8
"#,
        moto.url
    );
    let shim = Shim::start_with_env(&config, &s3_env());
    let (ct, body) = common::multipart(&[
        ("prompt", None, "", b"a fox in S3"),
        ("size", None, "", b"720x1280"),
        ("input_reference", Some("ref.png"), "image/png", &common::png(720, 1280)),
    ]);
    let r = shim.post_multipart("/v1/videos", "sk-s3", &ct, body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let v = shim.wait(&id, "sk-s3").await;
    assert_eq!(v["status"], "completed", "{v}\n{}", shim.log());
    let keys = moto.keys("videos");
    for suffix in [
        "video.mp4",
        "thumbnail.webp",
        "spritesheet.jpg",
        "inputs/input_reference.png",
    ] {
        assert!(
            keys.contains(&format!("shim/{id}/{suffix}")),
            "{suffix} not in {keys:?}"
        );
    }
    let whole = shim.get(&format!("/v1/videos/{id}/content"), "sk-s3").await;
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(&whole.body[4..8], b"ftyp");
    let part = shim
        .call(
            hyper::Method::GET,
            &format!("/v1/videos/{id}/content"),
            Some("sk-s3"),
            &[("range", "bytes=100-199")],
            Bytes::new(),
        )
        .await;
    assert_eq!(part.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(part.body, whole.body.slice(100..200));
    let r = shim
        .call(
            hyper::Method::DELETE,
            &format!("/v1/videos/{id}"),
            Some("sk-s3"),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(
        moto.keys("videos").iter().all(|k| !k.contains(&id)),
        "{:?}",
        moto.keys("videos")
    );
}

#[tokio::test]
async fn expired_assets_are_swept_and_answer_as_expired() {
    let shim = Shim::start_with(&format!(
        r#"
[server]
poll_after_ms = 100
[worker]
poll_interval_ms = 50
[assets]
retention = "2s"
sweep_interval_secs = 1
[backends.local]
kind = "local"
fps = 8
[tenants.keeper]
keys = ["{keeper}"]
retention = "never"
[tenants.brief]
keys = ["{brief}"]
"#,
        keeper = digest("sk-keeper"),
        brief = digest("sk-brief")
    ));
    let brief = shim.create("sk-brief", &json!({"prompt": "brief"})).await;
    let kept = shim.create("sk-keeper", &json!({"prompt": "kept"})).await;
    let v = shim.wait(&brief, "sk-brief").await;
    // Checked at once: `expires_at` is in whole seconds, so the file may have as little as one second left, and
    // waiting for the other video first let the sweeper take it (a CI failure).
    let video_file = shim.data_dir.join("assets").join(&brief).join("video.mp4");
    assert!(video_file.exists());
    let completed_at = v["completed_at"].as_i64().unwrap();
    assert_eq!(v["expires_at"].as_i64(), Some(completed_at + 2));
    assert!(shim.wait(&kept, "sk-keeper").await["expires_at"].is_null());

    // After expiry: the record stays (completed, same expires_at), the content is gone, remix refused.
    let swept = common::eventually(Duration::from_secs(20), async || !video_file.exists()).await;
    assert!(swept, "not swept\n{}", shim.log());
    let r = shim.get(&format!("/v1/videos/{brief}"), "sk-brief").await;
    assert_eq!(r.json()["status"], "completed");
    assert_eq!(r.json()["expires_at"].as_i64(), Some(completed_at + 2));
    let r = shim.get(&format!("/v1/videos/{brief}/content"), "sk-brief").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&r.body).contains("expired"));
    let r = shim
        .post_json(
            &format!("/v1/videos/{brief}/remix"),
            "sk-brief",
            &json!({"prompt": "again"}),
        )
        .await;
    common::assert_error(&r, 400, Some("video_id"), Some("invalid_state"));
    // The tenant that keeps everything still has its video.
    assert_eq!(
        shim.get(&format!("/v1/videos/{kept}/content"), "sk-keeper")
            .await
            .status,
        StatusCode::OK
    );
}

fn digest(key: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(key.as_bytes())))
}
