//! Provider callbacks through the fakes: Replicate's (Standard Webhooks) and fal's (Ed25519 with a JWKS) complete
//! a job without a single poll; a badly signed or unsigned callback is refused and counted, and polling — the
//! safety net — still finishes the job.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bytes::Bytes;
use common::{Fake, Shim, metric};
use hyper::{Method, StatusCode};
use serde_json::json;

const REPLICATE_SECRET: &str = "whsec_ZmFrZSByZXBsaWNhdGUgc2lnbmluZyBrZXk=";

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// A shim whose `sora-2` runs on `mapping` at `fake`, with callbacks on and polling every `poll_ms`.
fn shim_with_callbacks(mapping: &str, fake: &Fake, model: &str, poll_ms: u64) -> Shim {
    let addr = free_addr();
    let mut config = common::mapped_config(
        mapping,
        fake,
        model,
        &format!(
            "callback_base_url = \"http://{addr}\"\ncallback_poll_interval_ms = {poll_ms}\ncallback_jwks_url = \"{}/.well-known/jwks.json\"",
            fake.url
        ),
    );
    if mapping == "replicate" {
        config = config.replace(
            "secrets = { api_token = \"SORA_SHIM_TEST_PROVIDER_KEY\" }",
            "secrets = { api_token = \"SORA_SHIM_TEST_PROVIDER_KEY\", webhook_secret = \"TEST_REPLICATE_WEBHOOK_SECRET\" }",
        );
    }
    Shim::start_listening(&config, &[("TEST_REPLICATE_WEBHOOK_SECRET", REPLICATE_SECRET)], &addr)
}

#[tokio::test]
async fn replicate_and_fal_callbacks_complete_jobs_without_a_poll() {
    for (mapping, fake_name, model) in [
        ("replicate", "replicate", "google/veo-3.1"),
        ("fal", "fal", "fal-ai/veo3"),
    ] {
        let fake = Fake::start_with_env(fake_name, &[("FAKE_WEBHOOK_SECRET", REPLICATE_SECRET)]);
        // Polling every 10 minutes: only a callback can finish the job within the test.
        let shim = shim_with_callbacks(mapping, &fake, model, 600_000);
        let id = shim
            .create("sk-cb", &json!({"prompt": "a fox, called back", "seconds": "4"}))
            .await;
        let v = shim.wait(&id, "sk-cb").await;
        assert_eq!(v["status"], "completed", "{mapping}: {v}\n{}", shim.log());
        let stats = fake.stats().await;
        assert_eq!(stats["polls"], 0, "{mapping}: the job was polled: {stats}");
        assert_eq!(stats["results"], 0, "{mapping}: the result was fetched: {stats}");
        assert_eq!(
            shim.get(&format!("/v1/videos/{id}/content"), "sk-cb").await.status,
            StatusCode::OK
        );
        let m = shim.metrics().await;
        assert!(
            metric(
                &m,
                "sora_shim_provider_callbacks_total{backend=\"prov\",outcome=\"accepted\"}"
            ) >= 1.0,
            "{m}"
        );
        // Unsigned, to a real job: refused, counted, and the job is untouched.
        let r = shim
            .call(
                Method::POST,
                &format!("/callbacks/prov/{id}"),
                None,
                &[("content-type", "application/json")],
                Bytes::from_static(b"{\"status\":\"failed\"}"),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{mapping}");
        assert_eq!(r.json()["error"]["code"], "invalid_signature");
        assert_eq!(
            shim.get(&format!("/v1/videos/{id}"), "sk-cb").await.json()["status"],
            "completed"
        );
        assert!(
            metric(
                &shim.metrics().await,
                "sora_shim_provider_callbacks_total{backend=\"prov\",outcome=\"refused\"}"
            ) >= 1.0
        );
        // A backend that takes no callbacks has no such door.
        let r = shim
            .call(
                Method::POST,
                &format!("/callbacks/nope/{id}"),
                None,
                &[],
                Bytes::from_static(b"{}"),
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn a_badly_signed_callback_is_refused_and_polling_finishes_the_job() {
    for (mapping, fake_name, model) in [
        ("replicate", "replicate", "google/veo-3.1"),
        ("fal", "fal", "fal-ai/veo3"),
    ] {
        let fake = Fake::start_with_env(fake_name, &[("FAKE_WEBHOOK_SECRET", REPLICATE_SECRET)]);
        let shim = shim_with_callbacks(mapping, &fake, model, 1000);
        let id = shim
            .create("sk-cb", &json!({"prompt": "a fox [fake:badsig]", "seconds": "4"}))
            .await;
        let v = shim.wait(&id, "sk-cb").await;
        assert_eq!(v["status"], "completed", "{mapping}: {v}\n{}", shim.log());
        assert!(
            fake.stats().await["polls"].as_u64().unwrap() >= 1,
            "{mapping}: finished without polling?"
        );
        let m = shim.metrics().await;
        assert!(
            metric(
                &m,
                "sora_shim_provider_callbacks_total{backend=\"prov\",outcome=\"refused\"}"
            ) >= 1.0,
            "{mapping}: {m}\n{}",
            shim.log()
        );
        assert!(shim.log().contains("provider callback refused"));
    }
}
