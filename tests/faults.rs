//! Provider outages and hangs against the OpenAI-compatible fake: a backend that is down for a while and comes
//! back, a download that stops sending midway (once, and every time), and a backend that answers 500 to every
//! poll. Each job ends completed, or failed with the Sora error that says why; none stays `in_progress`, and
//! none is paid for twice.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::{Fake, Shim, mapped_config};
use serde_json::json;

const KEY: &str = "k";

/// A loopback port nothing listens on (bound, read, released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// What is left half-written: temporary files of any download, and files for `id` other than its three finished
/// variants.
fn partial_files(shim: &Shim, id: &str) -> Vec<String> {
    let assets = shim.data_dir.join("assets");
    let names = |dir: std::path::PathBuf| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut left: Vec<String> = names(assets.join(".tmp"))
        .into_iter()
        .map(|n| format!(".tmp/{n}"))
        .collect();
    left.extend(
        names(assets.join(id))
            .into_iter()
            .filter(|n| !["video.mp4", "thumbnail.webp", "spritesheet.jpg"].contains(&n.as_str())),
    );
    left
}

#[tokio::test]
async fn a_backend_down_for_a_while_then_back_finishes_every_job_once() {
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    // The config needs a Fake for its URL; the backend itself is not there yet.
    let placeholder = Fake::start("openai_videos");
    let config = mapped_config("openai", &placeholder, "wan-2.2", "")
        .replace(&placeholder.url, &url)
        .replace("[worker]\n", "[health]\nopen_secs = 1\n[worker]\n");
    drop(placeholder);
    let shim = Shim::start_with(&config);
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(
            shim.create(KEY, &json!({"prompt": format!("during the outage {i}")}))
                .await,
        );
    }
    // Down for three seconds: every create is refused at connect (nothing sent), jobs wait, none fails.
    let down_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < down_until {
        for id in &ids {
            let v = shim.get(&format!("/v1/videos/{id}"), KEY).await.json();
            assert_eq!(v["status"], "queued", "while the backend is down: {v}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fake = Fake::start_with_args("openai_videos", &[], &["--port", &port.to_string()]);
    for id in &ids {
        let v = shim.wait(id, KEY).await;
        assert_eq!(v["status"], "completed", "{v}\n{}", shim.log());
    }
    let stats = fake.stats().await;
    assert_eq!(
        stats["creates"], 3,
        "each video was created once at the provider: {stats}"
    );
}

#[tokio::test]
async fn a_download_that_stops_midway_is_dropped_and_fetched_again() {
    let fake = Fake::start("openai_videos");
    // The fake sends its first 64 KiB, then nothing for 30 s; the shim waits at most 1 s for a chunk.
    let config = mapped_config("openai", &fake, "wan-2.2", "").replace("timeout_secs = 5", "timeout_secs = 1");
    let shim = Shim::start_with(&config);
    fake.faults(json!({"download": {"trickle_ms": 30000, "times": 1}}))
        .await;
    let id = shim.create(KEY, &json!({"prompt": "a stalled download"})).await;
    let v = shim.wait(&id, KEY).await;
    assert_eq!(v["status"], "completed", "{v}\n{}", shim.log());
    let stats = fake.stats().await;
    assert_eq!(
        stats["downloads"], 2,
        "the stalled download, then one whole one: {stats}"
    );
    assert_eq!(stats["creates"], 1);
    let content = shim.get(&format!("/v1/videos/{id}/content"), KEY).await;
    assert_eq!(content.status, 200);
    assert!(
        content.body.len() > 64 * 1024,
        "the premise: the video is more than the first chunk"
    );
    assert_eq!(&content.body[4..8], b"ftyp");
    assert_eq!(partial_files(&shim, &id), Vec::<String>::new());
}

#[tokio::test]
async fn a_download_that_always_stops_midway_fails_with_asset_download_failed() {
    let fake = Fake::start("openai_videos");
    let config = mapped_config("openai", &fake, "wan-2.2", "").replace("timeout_secs = 5", "timeout_secs = 1");
    let shim = Shim::start_with(&config);
    fake.faults(json!({"download": {"trickle_ms": 30000}})).await;
    let id = shim.create(KEY, &json!({"prompt": "never arrives whole"})).await;
    let v = shim.wait(&id, KEY).await;
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "asset_download_failed", "{v}");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("could not be copied"),
        "{v}"
    );
    assert_eq!(
        fake.stats().await["creates"],
        1,
        "the generation was not paid for again"
    );
    assert_eq!(shim.get(&format!("/v1/videos/{id}/content"), KEY).await.status, 404);
    assert_eq!(partial_files(&shim, &id), Vec::<String>::new());
}

#[tokio::test]
async fn a_backend_answering_500_to_every_poll_fails_the_job_at_its_deadline() {
    let fake = Fake::start("openai_videos");
    let config =
        mapped_config("openai", &fake, "wan-2.2", "").replace("[worker]\n", "[worker]\njob_deadline_secs = 3\n");
    let shim = Shim::start_with(&config);
    fake.faults(json!({"poll": {"status": 500}})).await;
    let started = Instant::now();
    let id = shim.create(KEY, &json!({"prompt": "an endless outage"})).await;
    let v = shim.wait(&id, KEY).await;
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "backend_timeout", "{v}");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "failed before its deadline"
    );
    let stats = fake.stats().await;
    assert_eq!(stats["creates"], 1, "{stats}");
    assert!(stats["polls"].as_u64().unwrap() >= 2, "it kept asking: {stats}");
}
