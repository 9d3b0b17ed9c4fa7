//! Outbound webhooks against a real receiver on loopback: the event's shape and signature, at-least-once
//! delivery with the same ids across retries, tenant and event filters, and no event lost across a kill -9.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine;
use common::Shim;
use common::receiver::{Received, Receiver};
use serde_json::{Value, json};

/// A signing secret in OpenAI's format.
const SECRET: &str = "whsec_c29yYS1zaGltIHRlc3Qgc2lnbmluZyBrZXkgMTIzNDU2Nzg=";

/// Verifies a delivery the way the official SDKs do (Standard Webhooks), independently of the shim's code.
fn verify(r: &Received) -> Value {
    let h = |n: &str| r.headers.get(n).unwrap().to_str().unwrap().to_owned();
    let (id, ts, sig) = (h("webhook-id"), h("webhook-timestamp"), h("webhook-signature"));
    let ts_num: i64 = ts.parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((now - ts_num).abs() <= 300, "timestamp outside the SDK's tolerance");
    let key_bytes = base64::engine::general_purpose::STANDARD
        .decode(SECRET.strip_prefix("whsec_").unwrap())
        .unwrap();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key_bytes);
    let mut signed = format!("{id}.{ts}.").into_bytes();
    signed.extend_from_slice(&r.body);
    let expected = base64::engine::general_purpose::STANDARD.encode(ring::hmac::sign(&key, &signed).as_ref());
    assert!(
        sig.split_whitespace()
            .any(|s| s.strip_prefix("v1,").unwrap_or(s) == expected),
        "signature {sig} does not verify"
    );
    assert_eq!(r.headers.get("content-type").unwrap(), "application/json");
    assert!(id.starts_with("wh_"));
    serde_json::from_slice(&r.body).unwrap()
}

fn config(receiver: &Receiver, extra: &str) -> String {
    format!(
        r#"
[server]
poll_after_ms = 100
[worker]
poll_interval_ms = 50
[backends.local]
kind = "local"
fps = 8
[webhooks.ops]
url = "{url}"
secret_env = "TEST_WEBHOOK_SECRET"
retry_base_ms = 100
retry_max_ms = 400
[moderation.house]
words = ["forbidden"]
[models."sora-2"]
backend = "local"
moderation = "house"
sizes = ["720x1280", "1280x720"]
seconds = ["4"]
{extra}
"#,
        url = receiver.url
    )
}

#[tokio::test]
async fn a_failing_receiver_gets_each_event_until_it_answers_with_the_same_ids() {
    let receiver = Receiver::start(3).await;
    let shim = Shim::start_with_env(
        &config(&receiver, "[admin]\nkey_env = [\"TEST_ADMIN\"]"),
        &[("TEST_WEBHOOK_SECRET", SECRET), ("TEST_ADMIN", "sk-admin-webhooks")],
    );
    let id = shim.create("sk-a", &json!({"prompt": "a fox"})).await;
    assert_eq!(shim.wait(&id, "sk-a").await["status"], "completed");
    let got = receiver.until_delivered(1, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 4, "3 failures then one success, nothing after: {got:?}");
    let bodies: Vec<Value> = got.iter().map(verify).collect();
    let hook_ids: Vec<_> = got
        .iter()
        .map(|r| r.headers.get("webhook-id").unwrap().clone())
        .collect();
    assert!(
        hook_ids.windows(2).all(|w| w[0] == w[1]),
        "webhook-id changed between attempts"
    );
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "the event changed between attempts"
    );
    let event = &bodies[0];
    assert!(event["id"].as_str().unwrap().starts_with("evt_"));
    assert_eq!(event["object"], "event");
    assert_eq!(event["type"], "video.completed");
    assert_eq!(event["data"], json!({"id": id}));
    assert!(event["created_at"].is_i64());

    // The admin sees the delivery and its attempts.
    let r = shim
        .get(&format!("/admin/webhooks?video_id={id}"), "sk-admin-webhooks")
        .await;
    let list = r.json();
    let d = &list["data"][0];
    assert_eq!(
        (d["state"].as_str(), d["attempts"].as_u64(), d["last_status"].as_u64()),
        (Some("delivered"), Some(4), Some(200)),
        "{list}"
    );
    assert_eq!(d["endpoint"], "ops");
    assert_eq!(
        shim.get("/admin/webhooks", "sk-a").await.status,
        hyper::StatusCode::UNAUTHORIZED
    );
    let bad = shim.get("/admin/webhooks?state=lost", "sk-admin-webhooks").await;
    common::assert_error(&bad, 400, Some("state"), Some("invalid_value"));

    // A blocked prompt fails at once, and its video.failed event goes out too.
    let r = shim
        .post_json("/v1/videos", "sk-a", &json!({"prompt": "forbidden things"}))
        .await;
    let failed = r.json()["id"].as_str().unwrap().to_owned();
    let got = receiver.until_delivered(2, Duration::from_secs(30)).await;
    let last = verify(got.last().unwrap());
    assert_eq!(
        (last["type"].as_str(), last["data"]["id"].as_str()),
        (Some("video.failed"), Some(failed.as_str()))
    );
    let metrics = shim.metrics().await;
    assert!(
        metrics.contains("sora_shim_webhook_deliveries_total{outcome=\"retry\"} 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn endpoints_get_only_their_tenants_and_event_types() {
    let receiver = Receiver::start(0).await;
    let extra = format!(
        "[tenants.acme]\nkeys = [\"{}\"]\n[tenants.globex]\nkeys = [\"{}\"]\n[webhooks.acme-failures]\nurl = \"{}\"\nsecret_env = \"TEST_WEBHOOK_SECRET\"\ntenants = [\"acme\"]\nevents = [\"video.failed\"]\n",
        digest("sk-acme"),
        digest("sk-globex"),
        receiver.url.replace("/hooks", "/acme")
    );
    let shim = Shim::start_with_env(&config(&receiver, &extra), &[("TEST_WEBHOOK_SECRET", SECRET)]);
    let ok = shim.create("sk-globex", &json!({"prompt": "a fox"})).await;
    shim.wait(&ok, "sk-globex").await;
    let r = shim
        .post_json("/v1/videos", "sk-acme", &json!({"prompt": "forbidden"}))
        .await;
    let failed = r.json()["id"].as_str().unwrap().to_owned();
    // ops gets both; acme-failures only acme's failure.
    let got = receiver.until_delivered(3, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 3, "{got:?}");
    let to_acme: Vec<Value> = got
        .iter()
        .filter(|r| String::from_utf8_lossy(&r.body).contains(&failed))
        .map(verify)
        .collect();
    assert_eq!(to_acme.len(), 2, "the failure went to both endpoints");
    assert_eq!(to_acme[0]["id"], to_acme[1]["id"], "one event id, whichever endpoint");
}

fn digest(key: &str) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(key.as_bytes())))
}

#[tokio::test]
async fn a_crash_mid_backoff_loses_no_event() {
    let receiver = Receiver::start(usize::MAX).await;
    let text = config(&receiver, "").replace("retry_base_ms = 100", "retry_base_ms = 1500");
    let mut shim = Shim::start_with_env(&text, &[("TEST_WEBHOOK_SECRET", SECRET)]);
    let id = shim.create("sk-a", &json!({"prompt": "a fox"})).await;
    shim.wait(&id, "sk-a").await;
    let tried = common::eventually(Duration::from_secs(20), async || !receiver.received().is_empty()).await;
    assert!(tried, "no attempt at all");
    shim.kill9();
    receiver.fail.store(0, Ordering::SeqCst);
    let shim = shim.restart();
    let got = receiver.until_delivered(1, Duration::from_secs(30)).await;
    let ids: std::collections::BTreeSet<_> = got
        .iter()
        .map(|r| r.headers.get("webhook-id").unwrap().clone())
        .collect();
    assert_eq!(ids.len(), 1, "the same delivery resumed: {got:?}");
    assert_eq!(verify(got.last().unwrap())["data"]["id"], id.as_str());
    drop(shim);
}
