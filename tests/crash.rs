//! Crash and shutdown: `kill -9` mid-render and SIGTERM, then a restart on the same data directory. Every job
//! completes exactly once and its assets are whole.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::Shim;
use serde_json::json;

async fn wait_for_status(shim: &Shim, id: &str, key: &str, status: &str) {
    let path = format!("/v1/videos/{id}");
    let reached = common::eventually(Duration::from_secs(60), async || {
        shim.get(&path, key).await.json()["status"] == status
    })
    .await;
    assert!(reached, "never reached {status}: {}", shim.get(&path, key).await.json());
}

fn mp4_seconds(bytes: &[u8]) -> f64 {
    let reader = mp4::Mp4Reader::read_header(std::io::Cursor::new(bytes), bytes.len() as u64).unwrap();
    reader.duration().as_secs_f64()
}

#[tokio::test]
async fn kill_9_during_a_render_then_restart_completes_the_job_once() {
    let mut shim = Shim::start();
    let r = shim
        .post_json(
            "/v1/videos",
            "k",
            &json!({"prompt": "survives a crash", "size": "1280x720", "seconds": "20"}),
        )
        .await;
    let id = r.json()["id"].as_str().unwrap().to_owned();
    // A second job still queued behind the first (one render at a time).
    let queued = shim
        .post_json("/v1/videos", "k", &json!({"prompt": "waits its turn"}))
        .await
        .json();
    wait_for_status(&shim, &id, "k", "in_progress").await;
    shim.kill9();

    let shim = shim.restart();
    let done = shim.wait(&id, "k").await;
    assert_eq!(done["status"], "completed", "{done}\n{}", shim.log());
    let second = shim.wait(queued["id"].as_str().unwrap(), "k").await;
    assert_eq!(second["status"], "completed");
    let video = shim.get(&format!("/v1/videos/{id}/content"), "k").await.body;
    assert!((mp4_seconds(&video) - 20.0).abs() < 0.3, "whole video after the crash");
    // Exactly once: one record, completed once, and nothing half-written left behind.
    let list = shim.get("/v1/videos?limit=100", "k").await.json();
    assert_eq!(list["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        shim.log()
            .lines()
            .filter(|l| l.contains("video completed") && l.contains(&id))
            .count(),
        1,
        "completed exactly once"
    );
    let tmp = std::fs::read_dir(shim.data_dir.join("assets/.tmp")).unwrap().count();
    assert_eq!(tmp, 0, "no partial asset left");
}

#[tokio::test]
async fn sigterm_drains_and_exits_0_and_the_job_resumes_on_the_next_start() {
    let mut shim = Shim::start();
    let r = shim
        .post_json(
            "/v1/videos",
            "k",
            &json!({"prompt": "interrupted politely", "seconds": "12"}),
        )
        .await;
    let id = r.json()["id"].as_str().unwrap().to_owned();
    wait_for_status(&shim, &id, "k", "in_progress").await;
    let status = shim.terminate();
    assert!(status.success(), "exit status {status:?}\n{}", shim.log());
    assert!(shim.log().contains("stopped"));

    let shim = shim.restart();
    assert_eq!(shim.wait(&id, "k").await["status"], "completed", "{}", shim.log());
}

/// Polls the fake's stats until `pred` holds.
async fn until_fake(fake: &common::Fake, what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
    let seen = common::eventually(Duration::from_secs(30), async || pred(&fake.stats().await)).await;
    assert!(seen, "never saw {what}: {}", fake.stats().await);
}

#[tokio::test]
async fn kill_9_in_every_state_against_a_provider_never_pays_twice() {
    use common::{Fake, mapped_config};
    let fake = Fake::start("runway");
    // One job at a time at the provider, so a second job waits in `accepted`; each job runs for 40 polls.
    fake.faults(json!({"steps": 40, "create": {"delay_ms": 3000, "times": 1}}))
        .await;
    let mut shim = Shim::start_with(&mapped_config("runway", &fake, "gen4.5", "max_concurrent = 1"));

    // submitting: the first create is held by the provider for 3 s; the shim dies while it waits.
    let lost = shim
        .create("k", &json!({"prompt": "in flight when the shim died"}))
        .await;
    until_fake(&fake, "the first create", |s| s["creates"] == 1).await;
    shim.kill9();
    let mut shim = shim.restart();
    let v = shim.wait(&lost, "k").await;
    assert_eq!(v["status"], "failed");
    assert_eq!(v["error"]["code"], "submission_outcome_unknown", "never resent: {v}");

    // running + accepted: one job generating at the provider, one waiting its turn in the shim.
    let running = shim
        .create("k", &json!({"prompt": "generating when the shim died"}))
        .await;
    let waiting = shim.create("k", &json!({"prompt": "waiting when the shim died"})).await;
    wait_for_status(&shim, &running, "k", "in_progress").await;
    assert_eq!(
        shim.get(&format!("/v1/videos/{waiting}"), "k").await.json()["status"],
        "queued"
    );
    let jobs_before = fake.stats().await["jobs"].as_object().unwrap().len();
    shim.kill9();
    let shim = shim.restart();
    // While the running job still runs, the waiting one must not be sent: the restarted shim counts the
    // running job against max_concurrent before it drives anything.
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    let stats = fake.stats().await;
    // The generating job is the one being polled (the lost create's job is never polled).
    let still_generating = stats["job_details"]
        .as_object()
        .unwrap()
        .values()
        .any(|j| j["polls"].as_u64().unwrap_or(0) > 0 && (j["phase"] == "running" || j["phase"] == "queued"));
    if still_generating {
        assert_eq!(
            stats["jobs"].as_object().unwrap().len(),
            jobs_before,
            "a second job was sent beside the first at max_concurrent = 1: {stats}"
        );
    }
    for id in [&running, &waiting] {
        assert_eq!(shim.wait(id, "k").await["status"], "completed", "{}", shim.log());
    }
    // Exactly once: the lost create plus one per later job, never a second paid generation.
    let stats = fake.stats().await;
    assert_eq!(stats["creates"], 3, "{stats}");
    assert_eq!(stats["jobs"].as_object().unwrap().len(), 3, "{stats}");
    let tmp = std::fs::read_dir(shim.data_dir.join("assets/.tmp")).unwrap().count();
    assert_eq!(tmp, 0, "no partial asset left");
}
