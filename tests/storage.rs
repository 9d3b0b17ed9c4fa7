//! Asset storage and retention against real things: S3 through moto in server mode (an S3-compatible server
//! started on loopback; `.ci/test` installs it and sets SORA_SHIM_TEST_MOTO), a 200 MB round trip under a
//! memory ceiling, the shim serving and deleting videos kept in S3, and expiry sweeps on local storage.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Shim;
use futures_util::TryStreamExt;
use hyper::StatusCode;
use serde_json::json;
use sha2::{Digest, Sha256};

/// moto's S3 on 127.0.0.1, killed on drop.
struct Moto {
    child: Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts moto, or explains how to get it. Under CI it must be there.
    fn start() -> Option<Moto> {
        let bin = std::env::var("SORA_SHIM_TEST_MOTO")
            .unwrap_or_else(|_| format!("{}/target/s3-venv/bin/moto_server", env!("CARGO_MANIFEST_DIR")));
        if !std::path::Path::new(&bin).exists() {
            assert!(
                std::env::var("CI").is_err(),
                "moto_server not found at {bin}: `bash .ci/test` installs it"
            );
            eprintln!("skipping: moto_server not found at {bin} (run `bash .ci/test` once to install it)");
            return None;
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(Moto { child, url })
    }

    /// Creates a bucket (moto accepts unsigned requests).
    fn bucket(&self, name: &str) {
        let status = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "PUT"])
            .arg(format!("{}/{name}", self.url))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&status.stdout), "200");
    }

    /// Keys in a bucket (ListObjectsV2, read crudely from the XML).
    fn keys(&self, bucket: &str) -> Vec<String> {
        let out = Command::new("curl")
            .arg("-s")
            .arg(format!("{}/{bucket}?list-type=2", self.url))
            .output()
            .unwrap();
        let xml = String::from_utf8_lossy(&out.stdout).into_owned();
        xml.split("<Key>")
            .skip(1)
            .filter_map(|s| s.split("</Key>").next().map(str::to_owned))
            .collect()
    }
}

fn s3_env() -> [(&'static str, &'static str); 3] {
    [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing-secret"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ]
}

/// Peak resident memory of this process so far (Linux `VmHWM`), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[tokio::test]
async fn a_200_mb_asset_round_trips_through_s3_in_bounded_memory() {
    let Some(moto) = Moto::start() else { return };
    moto.bucket("big");
    let settings = sora_shim::assets::object::S3Settings {
        bucket: "big".into(),
        prefix: "p".into(),
        region: Some("us-east-1".into()),
        endpoint: Some(moto.url.clone()),
    };
    let scratch = tempfile::tempdir().unwrap();
    let credentials = object_store::aws::AmazonS3Builder::new()
        .with_access_key_id("testing")
        .with_secret_access_key("testing-secret");
    let object = sora_shim::assets::object::ObjectAssets::s3_with(credentials, &settings).unwrap();
    let store = sora_shim::assets::AssetStore::with_object_store(object, scratch.path()).unwrap();

    const TOTAL: usize = 200 * 1024 * 1024;
    const CHUNK: usize = 256 * 1024;
    let before = peak_rss();
    // A generated stream: no buffer of the whole file exists anywhere in this process.
    let chunks = futures_util::stream::iter((0..TOTAL / CHUNK).map(|i| {
        let byte = (i % 251) as u8;
        Ok::<_, std::io::Error>(Bytes::from(vec![byte; CHUNK]))
    }));
    let stored = store.put_stream("video_big/video.mp4", chunks).await.unwrap();
    assert_eq!(stored.bytes, TOTAL as u64);
    assert_eq!(store.size("video_big/video.mp4").await.unwrap(), TOTAL as u64);
    let mut hasher = Sha256::new();
    let mut read = 0usize;
    let mut stream = store.read_range("video_big/video.mp4", 0, TOTAL as u64).await.unwrap();
    while let Some(chunk) = stream.try_next().await.unwrap() {
        hasher.update(&chunk);
        read += chunk.len();
    }
    assert_eq!(read, TOTAL);
    assert_eq!(hex::encode(hasher.finalize()), stored.sha256);
    let grown = peak_rss().saturating_sub(before);
    eprintln!(
        "peak memory grew by {} MB moving 200 MB through S3",
        grown / (1024 * 1024)
    );
    assert!(
        grown < 64 * 1024 * 1024,
        "peak memory grew by {} MB moving 200 MB",
        grown / (1024 * 1024)
    );
    // A range from the middle.
    let mid: Vec<u8> = store
        .read_range("video_big/video.mp4", (CHUNK * 7 + 5) as u64, 10)
        .await
        .unwrap()
        .map_ok(|b| b.to_vec())
        .try_concat()
        .await
        .unwrap();
    assert_eq!(mid, vec![7u8; 10]);
    assert_eq!(moto.keys("big"), vec!["p/video_big/video.mp4".to_owned()]);
    store.delete_prefix("video_big").await.unwrap();
    assert!(moto.keys("big").is_empty());
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
    let completed_at = v["completed_at"].as_i64().unwrap();
    assert_eq!(v["expires_at"].as_i64(), Some(completed_at + 2));
    assert!(shim.wait(&kept, "sk-keeper").await["expires_at"].is_null());
    let video_file = shim.data_dir.join("assets").join(&brief).join("video.mp4");
    assert!(video_file.exists());

    // After expiry: the record stays (completed, same expires_at), the content is gone, remix refused.
    let deadline = Instant::now() + Duration::from_secs(20);
    while video_file.exists() {
        assert!(Instant::now() < deadline, "not swept\n{}", shim.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
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
