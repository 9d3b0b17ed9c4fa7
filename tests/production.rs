//! The production door, end to end against the real binary: tenants and keys, ownership, admin keys, per-tenant
//! limits, prompt policies, metrics and JSON logs, and no secret anywhere. The listener (open mode, server
//! limits, TLS) is tested in tests/server.rs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use bytes::Bytes;
use common::{Fake, Shim, assert_error, metric};
use hyper::{Method, StatusCode};
use serde_json::{Value, json};

const ACME_KEY: &str = "sk-acme-0123456789abcdef";
const GLOBEX_KEY: &str = "sk-globex-fedcba9876543210";
const ADMIN_KEY: &str = "sk-admin-5555aaaa5555bbbb";

/// `sora-shim key hash`, fed the key on stdin.
fn key_hash(key: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sora-shim"))
        .args(["key", "hash"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{key}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let digest = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(digest.starts_with("sha256:") && digest.len() == 7 + 64, "{digest}");
    assert!(!digest.contains(key));
    digest
}

const MODELS: &str = r#"
[models."sora-2"]
backend = "local"
sizes = ["720x1280", "1280x720"]
seconds = ["4", "8"]
"#;

/// Two tenants (one key as a digest, one from the environment; globex with a request limit) and an admin key.
fn tenants_config(extra: &str) -> String {
    format!(
        r#"
[server]
poll_after_ms = 100
max_body_bytes = 2097152
[worker]
poll_interval_ms = 50
[backends.local]
kind = "local"
fps = 8
{MODELS}
[tenants.acme]
keys = ["{acme}"]
[tenants.globex]
key_env = ["TEST_GLOBEX_KEY"]
requests_per_minute = 30
[admin]
key_env = ["TEST_ADMIN_KEY"]
{extra}
"#,
        acme = key_hash(ACME_KEY)
    )
}

fn start_tenants(extra: &str) -> Shim {
    Shim::start_with_env(
        &tenants_config(extra),
        &[("TEST_GLOBEX_KEY", GLOBEX_KEY), ("TEST_ADMIN_KEY", ADMIN_KEY)],
    )
}

#[tokio::test]
async fn keys_name_tenants_and_nobody_sees_another_tenants_videos() {
    let shim = start_tenants("");
    // No key, an unknown key, the admin key on the Sora surface: 401 in OpenAI's shape, the key never echoed.
    let r = shim.call(Method::GET, "/v1/videos", None, &[], Bytes::new()).await;
    assert_error(&r, 401, None, None);
    for key in ["sk-nobody-1234", ADMIN_KEY] {
        let r = shim.get("/v1/videos", key).await;
        assert_error(&r, 401, None, Some("invalid_api_key"));
        assert!(!String::from_utf8_lossy(&r.body).contains(key));
    }

    let id = shim.create(ACME_KEY, &json!({"prompt": "a fox", "seconds": "4"})).await;
    let done = shim.wait(&id, ACME_KEY).await;
    assert_eq!(done["status"], "completed");
    // globex cannot read, download, remix, delete or list it: 404, as if it did not exist.
    for (method, path) in [
        (Method::GET, format!("/v1/videos/{id}")),
        (Method::GET, format!("/v1/videos/{id}/content")),
        (Method::DELETE, format!("/v1/videos/{id}")),
    ] {
        let r = shim.call(method, &path, Some(GLOBEX_KEY), &[], Bytes::new()).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
    }
    let r = shim
        .post_json(
            &format!("/v1/videos/{id}/remix"),
            GLOBEX_KEY,
            &json!({"prompt": "again"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(shim.get("/v1/videos", GLOBEX_KEY).await.json()["data"], json!([]));
    assert_eq!(
        shim.get("/v1/videos", ACME_KEY).await.json()["data"][0]["id"],
        id.as_str()
    );

    // The admin API: admin key only; it sees any tenant's job in full.
    let path = format!("/admin/jobs/{id}");
    let r = shim.call(Method::GET, &path, None, &[], Bytes::new()).await;
    assert_error(&r, 401, None, None);
    assert_error(&shim.get(&path, ACME_KEY).await, 401, None, Some("invalid_api_key"));
    let r = shim.get(&path, ADMIN_KEY).await;
    assert_eq!(r.status, StatusCode::OK);
    let job = r.json();
    assert_eq!(job["object"], "admin.job");
    assert_eq!(job["tenant"], "acme");
    assert_eq!(job["backend"], "local");
    assert_eq!(job["state"], "completed");
    assert_eq!(
        shim.get("/admin/jobs/video_nope", ADMIN_KEY).await.status,
        StatusCode::NOT_FOUND
    );
    let r = shim.get("/admin/shadow/report", ADMIN_KEY).await;
    assert_eq!(r.json()["object"], "shadow.report");
    assert_error(
        &shim.get("/admin/shadow/report", GLOBEX_KEY).await,
        401,
        None,
        Some("invalid_api_key"),
    );

    // The request line names the tenant, never the key.
    let log = shim.log();
    assert!(log.contains("tenant=\"acme\"") || log.contains("tenant=acme"), "{log}");
}

#[tokio::test]
async fn a_rotated_key_list_applies_on_reload() {
    let shim = start_tenants("");
    assert_eq!(shim.get("/v1/videos", ACME_KEY).await.status, StatusCode::OK);
    let rotated = "sk-acme-rotated-777777";
    let text = std::fs::read_to_string(shim.config_path())
        .unwrap()
        .replace(&key_hash(ACME_KEY), &key_hash(rotated));
    std::fs::write(shim.config_path(), text).unwrap();
    shim.signal("HUP");
    let refused = common::eventually(Duration::from_secs(10), async || {
        shim.get("/v1/videos", ACME_KEY).await.status == StatusCode::UNAUTHORIZED
    })
    .await;
    assert!(refused, "old key still accepted\n{}", shim.log());
    assert_eq!(shim.get("/v1/videos", rotated).await.status, StatusCode::OK);
}

#[tokio::test]
async fn request_limits_answer_429_with_headers_and_release() {
    let shim = start_tenants("");
    let mut remaining = Vec::new();
    for _ in 0..30 {
        let r = shim.get("/v1/videos", GLOBEX_KEY).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("x-ratelimit-limit-requests"), Some("30"));
        remaining.push(
            r.header("x-ratelimit-remaining-requests")
                .unwrap()
                .parse::<u32>()
                .unwrap(),
        );
        assert!(r.header("x-ratelimit-reset-requests").unwrap().ends_with('s'));
    }
    assert!(
        remaining.windows(2).all(|w| w[1] <= w[0]) && remaining[0] == 29,
        "{remaining:?}"
    );
    let r = shim.get("/v1/videos", GLOBEX_KEY).await;
    let body = assert_error(&r, 429, None, Some("rate_limit_exceeded"));
    assert_eq!(body["error"]["type"], "requests");
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(r.header("x-should-retry"), None, "the SDKs must retry a 429");
    let wait_ms: u64 = r.header("retry-after-ms").unwrap().parse().unwrap();
    let retry_after: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(
        (1..=2).contains(&retry_after) && wait_ms <= 2000,
        "{retry_after} {wait_ms}"
    );
    // Another tenant, without a limit, is untouched and gets no rate headers.
    let r = shim.get("/v1/videos", ACME_KEY).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-ratelimit-limit-requests"), None);
    // Released once the bucket has refilled by one.
    tokio::time::sleep(Duration::from_millis(wait_ms + 100)).await;
    assert_eq!(shim.get("/v1/videos", GLOBEX_KEY).await.status, StatusCode::OK);
    let metrics = shim.metrics().await;
    assert!(
        metric(
            &metrics,
            "sora_shim_rate_limited_total{limit=\"requests\",tenant=\"globex\"}"
        ) >= 1.0,
        "{metrics}"
    );
}

/// A tenant capped at one unfinished video on a fake provider that keeps jobs running for a while.
#[tokio::test]
async fn unfinished_jobs_are_capped_per_tenant_and_provider_moderation_is_recorded() {
    let fake = Fake::start("openai_videos");
    let config = common::mapped_config(
        "openai",
        &fake,
        "wan-2.2",
        &format!(
            "[tenants.acme]\nkeys = [\"{}\"]\nmax_unfinished_jobs = 1\n[admin]\nkey_env = [\"TEST_ADMIN_KEY\"]",
            key_hash(ACME_KEY)
        ),
    );
    let shim = Shim::start_with_env(&config, &[("TEST_ADMIN_KEY", ADMIN_KEY)]);
    let first = shim
        .create(
            ACME_KEY,
            &json!({"prompt": "a slow fox [fake:steps=30]", "seconds": "4"}),
        )
        .await;
    let r = shim
        .post_json("/v1/videos", ACME_KEY, &json!({"prompt": "another"}))
        .await;
    assert_error(&r, 429, None, Some("rate_limit_exceeded"));
    assert_eq!(r.header("retry-after"), Some("5"));
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("limit is 1"));
    assert_eq!(shim.wait(&first, ACME_KEY).await["status"], "completed");
    // The slot is free again; a provider's moderation verdict lands on the job.
    let second = shim
        .create(ACME_KEY, &json!({"prompt": "a fox [fake:moderated]", "seconds": "4"}))
        .await;
    let v = shim.wait(&second, ACME_KEY).await;
    assert_eq!(v["error"]["code"], "moderation_blocked", "{v}");
    let job = shim.get(&format!("/admin/jobs/{second}"), ADMIN_KEY).await.json();
    assert_eq!(job["moderation"]["source"], "backend");
    assert_eq!(job["moderation"]["by"], "prov");
    assert_eq!(job["moderation"]["verdict"], "blocked");
}

fn moderation_config(fake: &Fake) -> String {
    format!(
        r#"
[server]
poll_after_ms = 100
[worker]
poll_interval_ms = 50
[backends.local]
kind = "local"
fps = 8
[admin]
key_env = ["TEST_ADMIN_KEY"]
[moderation.house]
words = ["forbidden-word", "nope nope"]
patterns = ['(?i)\breal\s+person\b']
[moderation.gate]
words = ["halt"]
action = "reject"
[moderation.remote.endpoint]
url = "{url}/v1/moderations"
secret_env = "TEST_MODERATION_KEY"
request = '{{model: "omni-moderation-latest", input: .prompt}}'
flagged = '.results[0].flagged'
reason = '.results[0].categories | to_entries | map(select(.value)) | map(.key) | join(", ")'
[models."sora-2"]
backend = "local"
moderation = "house"
sizes = ["720x1280", "1280x720"]
seconds = ["4"]
[models."sora-2-pro"]
backend = "local"
moderation = "gate"
sizes = ["720x1280", "1280x720"]
seconds = ["4"]
[models."sora-2-2025-10-06"]
backend = "local"
moderation = "remote"
sizes = ["720x1280", "1280x720"]
seconds = ["4"]
"#,
        url = fake.url
    )
}

#[tokio::test]
async fn prompt_policies_block_before_dispatch_and_record_the_verdict() {
    let fake = Fake::start_with_args("moderation", &[], &["--key", "mod-secret-3141"]);
    let shim = Shim::start_with_env(
        &moderation_config(&fake),
        &[
            ("TEST_ADMIN_KEY", ADMIN_KEY),
            ("TEST_MODERATION_KEY", "mod-secret-3141"),
        ],
    );
    let key = "sk-dev";
    let admin_job = |id: String| {
        let shim = &shim;
        async move { shim.get(&format!("/admin/jobs/{id}"), ADMIN_KEY).await.json() }
    };

    // Allowed: runs, and the verdict is on the record.
    let ok = shim
        .create(key, &json!({"prompt": "a classic car", "model": "sora-2"}))
        .await;
    assert_eq!(shim.wait(&ok, key).await["status"], "completed");
    let job = admin_job(ok).await;
    assert_eq!(job["moderation"]["verdict"], "allowed");
    assert_eq!(job["moderation"]["by"], "house");

    // Blocked by a word or a pattern (action "fail"): the video exists, failed as Sora's were, never dispatched.
    for (prompt, rule) in [
        ("a FORBIDDEN-WORD sign", "words[0]"),
        ("a real  person waving", "patterns[0]"),
    ] {
        let r = shim
            .post_json("/v1/videos", key, &json!({"prompt": prompt, "model": "sora-2"}))
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let id = r.json()["id"].as_str().unwrap().to_owned();
        let v = shim.wait(&id, key).await;
        assert_eq!(v["status"], "failed");
        assert_eq!(v["error"]["code"], "moderation_blocked");
        assert_eq!(
            v["error"]["message"],
            "Your request was blocked by our moderation system."
        );
        let job = admin_job(id).await;
        assert_eq!(job["moderation"]["rule"], rule);
        assert_eq!(job["attempts"], 0);
        assert!(job["backend_job_id"].is_null());
    }

    // action "reject": the create itself is refused, nothing is kept.
    let r = shim
        .post_json(
            "/v1/videos",
            key,
            &json!({"prompt": "halt here", "model": "sora-2-pro"}),
        )
        .await;
    assert_error(&r, 400, Some("prompt"), Some("moderation_blocked"));

    // An external endpoint: flagged with its reason, allowed, and an outage fails closed.
    let model = "sora-2-2025-10-06";
    let r = shim
        .post_json("/v1/videos", key, &json!({"prompt": "a massacre", "model": model}))
        .await;
    let id = r.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(shim.wait(&id, key).await["error"]["code"], "moderation_blocked");
    let job = admin_job(id).await;
    assert_eq!(
        (job["moderation"]["rule"].as_str(), job["moderation"]["reason"].as_str()),
        (Some("endpoint"), Some("violence"))
    );
    let fine = shim
        .create(key, &json!({"prompt": "a calm lake", "model": model}))
        .await;
    assert_eq!(shim.wait(&fine, key).await["status"], "completed");
    let r = shim
        .post_json(
            "/v1/videos",
            key,
            &json!({"prompt": "[fake:down] a lake", "model": model}),
        )
        .await;
    let id = r.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(shim.wait(&id, key).await["error"]["code"], "moderation_blocked");
    assert!(
        admin_job(id).await["moderation"]["reason"]
            .as_str()
            .unwrap()
            .contains("unavailable")
    );

    let metrics = shim.metrics().await;
    assert!(
        metric(
            &metrics,
            "sora_shim_moderation_verdicts_total{source=\"policy\",verdict=\"blocked\"}"
        ) >= 4.0,
        "{metrics}"
    );
}

/// Every secret the scenario used, and where they must not appear.
#[tokio::test]
async fn metrics_move_logs_are_json_and_no_secret_leaks_anywhere() {
    let fake = Fake::start("openai_videos");
    let moderation = Fake::start_with_args("moderation", &[], &["--key", "mod-secret-2718"]);
    let config = common::mapped_config(
        "openai",
        &fake,
        "wan-2.2",
        &format!(
            r#"
[tenants.acme]
keys = ["{acme}"]
[tenants.globex]
key_env = ["TEST_GLOBEX_KEY"]
requests_per_minute = 5
[admin]
key_env = ["TEST_ADMIN_KEY"]
[moderation.remote.endpoint]
url = "{url}/v1/moderations"
secret_env = "TEST_MODERATION_KEY"
request = '{{input: .prompt}}'
flagged = '.results[0].flagged'
"#,
            acme = key_hash(ACME_KEY),
            url = moderation.url
        ),
    )
    .replace(
        "[models.\"sora-2\"]\nbackend = \"prov\"",
        "[models.\"sora-2\"]\nbackend = \"prov\"\nmoderation = \"remote\"",
    );
    let mut shim = Shim::start_with_env(
        &config,
        &[
            ("TEST_GLOBEX_KEY", GLOBEX_KEY),
            ("TEST_ADMIN_KEY", ADMIN_KEY),
            ("TEST_MODERATION_KEY", "mod-secret-2718"),
            ("SORA_SHIM_LOG", "debug"),
            ("SORA_SHIM_LOG_FORMAT", "json"),
        ],
    );
    let mut bodies: Vec<Bytes> = Vec::new();
    // A scenario touching every path: create, poll, download, a refused key, a 429, a blocked prompt, admin.
    let id = shim.create(ACME_KEY, &json!({"prompt": "a fox", "seconds": "4"})).await;
    assert_eq!(shim.wait(&id, ACME_KEY).await["status"], "completed");
    let r = shim.get(&format!("/v1/videos/{id}/content"), ACME_KEY).await;
    assert_eq!(r.status, StatusCode::OK);
    let blocked = shim
        .post_json("/v1/videos", ACME_KEY, &json!({"prompt": "bloodshed"}))
        .await;
    bodies.push(blocked.body.clone());
    let wrong = "sk-wrong-9999zzzz";
    bodies.push(shim.get("/v1/videos", wrong).await.body);
    for _ in 0..6 {
        bodies.push(shim.get("/v1/videos", GLOBEX_KEY).await.body);
    }
    bodies.push(shim.get(&format!("/admin/jobs/{id}"), ADMIN_KEY).await.body);
    bodies.push(shim.get(&format!("/v1/videos/{id}"), GLOBEX_KEY).await.body);

    let metrics = shim.metrics().await;
    for series in [
        "sora_shim_http_requests_total{method=\"POST\",route=\"create_video\",status=\"200\"}",
        "sora_shim_http_request_duration_seconds_count{method=\"GET\",route=\"get_video\"}",
        "sora_shim_job_transitions_total{backend=\"prov\",from=\"finalizing\",model=\"sora-2\",to=\"completed\"}",
        "sora_shim_job_duration_seconds_count{backend=\"prov\",model=\"sora-2\",outcome=\"completed\"}",
        "sora_shim_backend_calls_total{backend=\"prov\",operation=\"create\",outcome=\"ok\"}",
        "sora_shim_backend_calls_total{backend=\"prov\",operation=\"download\",outcome=\"ok\"}",
        "sora_shim_backend_call_duration_seconds_count{backend=\"prov\",operation=\"poll\"}",
        "sora_shim_asset_bytes_stored_total",
        "sora_shim_asset_bytes_served_total",
        "sora_shim_rate_limited_total{limit=\"requests\",tenant=\"globex\"}",
        "sora_shim_moderation_verdicts_total{source=\"policy\",verdict=\"blocked\"}",
        "sora_shim_jobs_finished_total{backend=\"prov\",model=\"sora-2\",outcome=\"completed\",role=\"primary\"}",
    ] {
        assert!(
            metric(&metrics, series) >= 1.0,
            "{series} missing or zero in\n{metrics}"
        );
    }
    assert!(
        metrics.contains("sora_shim_queue_depth{state=\"accepted\"} 0"),
        "{metrics}"
    );

    // JSON logs: one object per line; the request line has request id, tenant name, route, status, latency.
    let log = shim.log();
    let lines: Vec<Value> = log
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let request = lines
        .iter()
        .find(|l| l["message"] == "request" && l["tenant"] == "acme" && l["route"] == "create_video")
        .unwrap_or_else(|| panic!("no request line for acme's create\n{log}"));
    for field in ["request_id", "status", "ms", "method"] {
        assert!(!request[field].is_null(), "{field} missing: {request}");
    }
    assert!(
        lines.iter().any(|l| l["message"] == "job transition"
            && l["job"] == id.as_str()
            && l["backend"] == "prov"
            && l["backend_job_id"].as_str().is_some_and(|b| b != "-")),
        "{log}"
    );

    // No key, credential or secret in logs, bodies, metrics, the job store or the asset tree.
    shim.terminate();
    let mut stored = Vec::new();
    collect_files(&shim.data_dir, &mut stored);
    let secrets = [
        ACME_KEY,
        GLOBEX_KEY,
        ADMIN_KEY,
        wrong,
        common::FAKE_KEY,
        "mod-secret-2718",
    ];
    for secret in secrets {
        assert!(!log.contains(secret), "{secret} in the log");
        assert!(!metrics.contains(secret), "{secret} in /metrics");
        for b in &bodies {
            assert!(
                !String::from_utf8_lossy(b).contains(secret),
                "{secret} in a response body"
            );
        }
        for (path, bytes) in &stored {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} in {}",
                path.display()
            );
        }
    }
    assert!(
        stored.iter().any(|(p, _)| p.to_string_lossy().ends_with(".db")),
        "the job store was scanned"
    );
}

fn collect_files(dir: &Path, out: &mut Vec<(std::path::PathBuf, Vec<u8>)>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(&path, out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, bytes));
        }
    }
}
