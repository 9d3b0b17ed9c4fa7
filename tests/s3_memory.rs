//! A 200 MB asset round trip through S3 (moto on loopback) under a memory ceiling. A process of its own: the
//! ceiling is read from this process's peak RSS (`VmHWM`), which tests running beside it in the same process
//! would raise (seen in CI: +416 MB when run beside tests/storage.rs's other tests, +17 MB alone).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::moto::Moto;
use futures_util::TryStreamExt;
use sha2::{Digest, Sha256};

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
