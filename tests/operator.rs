//! What an operator meets around the API, each as a user would trip on it: a second process on the same data
//! directory, offline commands pointed at a missing store, `check` with several problems or without secrets, an
//! idempotent replay after a delete, alerting series that exist before their first event, plain HTTP sent to
//! the TLS port, a strict model, and the order jobs resume in after a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Fake, Shim, TEST_CONFIG, assert_error, cli, mapped_config};
use hyper::{Method, StatusCode};
use serde_json::json;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Starts `serve` and returns its exit status, or fails the test if it is still running after `within`.
fn serve_exits(args: &[&str], within: Duration) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sora-shim"))
        .arg("serve")
        .args(args)
        .env_remove("SORA_SHIM_DATA_DIR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
            return (status, stderr);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("a second `serve` was still running after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn a_second_serve_on_the_same_data_directory_exits_naming_the_first() {
    let shim = Shim::start();
    let id = shim.create("k", &json!({"prompt": "made by the first process"})).await;
    let data = shim.data_dir.to_str().unwrap().to_owned();
    let config = shim.config_path().to_str().unwrap().to_owned();
    let (status, stderr) = serve_exits(
        &["--listen", "127.0.0.1:0", "--config", &config, "--data-dir", &data],
        Duration::from_secs(20),
    );
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("in use by another sora-shim process"), "{stderr}");
    assert!(stderr.contains(&format!("pid {}", shim.child.id())), "{stderr}");
    // The first process never noticed.
    assert_eq!(shim.wait(&id, "k").await["status"], "completed");

    // Another data directory but the same SQLite file (an absolute `[store] path`): refused too.
    let tmp = tempfile::tempdir().unwrap();
    let db = shim.data_dir.join("sora-shim.db");
    let shared = tmp.path().join("shared.toml");
    std::fs::write(
        &shared,
        format!("{TEST_CONFIG}\n[store]\npath = \"{}\"\n", db.display()),
    )
    .unwrap();
    let (status, stderr) = serve_exits(
        &[
            "--listen",
            "127.0.0.1:0",
            "--config",
            shared.to_str().unwrap(),
            "--data-dir",
            tmp.path().join("other").to_str().unwrap(),
        ],
        Duration::from_secs(20),
    );
    assert!(!status.success() && stderr.contains("SQLite database"), "{stderr}");
}

#[tokio::test]
async fn offline_commands_refuse_a_missing_store_and_find_the_configured_one() {
    let tmp = tempfile::tempdir().unwrap();
    let conf_dir = tmp.path().join("etc");
    std::fs::create_dir_all(&conf_dir).unwrap();
    let config = conf_dir.join("sora-shim.toml");
    // `data_dir` relative to the config file: the offline commands find it from any working directory.
    std::fs::write(&config, format!("{TEST_CONFIG}\n[store]\ndata_dir = \"state\"\n")).unwrap();
    let shim = Shim::start_on(&config, &conf_dir.join("state"));
    let id = shim.create("k", &json!({"prompt": "to back up"})).await;
    assert_eq!(shim.wait(&id, "k").await["status"], "completed");

    let elsewhere = tmp.path().join("cron");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let config = config.to_str().unwrap();
    let out = cli(
        &["export", "--config", config, "--out", "backup"],
        Some(&elsewhere),
        &[],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("exported 1 jobs"), "{}", text(&out.stdout));
    let out = cli(&["shadow", "report", "--config", config], Some(&elsewhere), &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // SORA_SHIM_DATA_DIR outranks the file, and --data-dir outranks both.
    let empty = tmp.path().join("empty");
    let env = [("SORA_SHIM_DATA_DIR", empty.to_str().unwrap())];
    let out = cli(&["export", "--config", config, "--out", "b2"], Some(&elsewhere), &env);
    assert_eq!(out.status.code(), Some(66), "{}", text(&out.stderr));
    let state = conf_dir.join("state");
    let out = cli(
        &[
            "export",
            "--config",
            config,
            "--data-dir",
            state.to_str().unwrap(),
            "--out",
            "b3",
        ],
        Some(&elsewhere),
        &env,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Without the key, from another directory: every offline command refuses, and creates nothing.
    let bare = tmp.path().join("bare.toml");
    std::fs::write(&bare, TEST_CONFIG).unwrap();
    let bare = bare.to_str().unwrap();
    for args in [
        vec!["export", "--config", bare, "--out", "b4"],
        vec!["import", "--config", bare, "backup"],
        vec!["shadow", "report", "--config", bare],
    ] {
        let out = cli(&args, Some(&elsewhere), &[]);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(66), "{args:?}: {stderr}");
        assert!(
            stderr.contains("no job store at") && stderr.contains("--data-dir"),
            "{stderr}"
        );
    }
    assert!(!elsewhere.join("data").exists(), "an offline command created ./data");
    assert!(!elsewhere.join("b4").exists());
}

/// `sora-shim check` on `config` (written to a file) with `extra` arguments: (exit code, stderr).
fn check(config: &str, extra: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("c.toml");
    std::fs::write(&path, config).unwrap();
    let mut args = vec!["check", "--config", path.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = cli(&args, None, env);
    (out.status.code(), text(&out.stderr))
}

#[test]
fn check_lists_every_problem_at_once_and_suggests_the_key_meant() {
    let config = r#"
[backends.one]
kind = "local"
fpz = 8
[backends.two]
kind = "mapping"
mapping = "openai"
base_url = "http://127.0.0.1:1"
max_concurent = 2
"#;
    let (code, stderr) = check(config, &[], &[]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("unknown field `fpz`"), "{stderr}");
    assert!(
        stderr.contains("backends.two: unknown field `max_concurent`"),
        "{stderr}"
    );
    assert!(stderr.contains("did you mean `max_concurrent`?"), "{stderr}");
    assert!(stderr.contains("did you mean `fps`?"), "{stderr}");
    assert_eq!(
        stderr.matches("unknown field `fpz`").count(),
        1,
        "listed once: {stderr}"
    );
}

const WITH_SECRETS: &str = r#"
[backends.prov]
kind = "mapping"
mapping = "runway"
base_url = "http://127.0.0.1:1"
secrets = { api_key = "SORA_SHIM_TEST_UNSET_SECRET" }
[models."sora-2"]
targets = [{ backend = "prov", weight = 60 }, { backend = "local", weight = 30 }]
sizes = ["720x1280"]
seconds = ["4", "12"]
[tenants.acme]
key_env = ["SORA_SHIM_TEST_UNSET_KEY"]
"#;

#[test]
fn check_without_secrets_validates_the_rest_and_warns_about_rounding_and_weights() {
    let (code, stderr) = check(WITH_SECRETS, &[], &[]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("SORA_SHIM_TEST_UNSET_SECRET is not set"), "{stderr}");
    assert!(stderr.contains("SORA_SHIM_TEST_UNSET_KEY is not set"), "{stderr}");

    let (code, stderr) = check(WITH_SECRETS, &["--without-secrets"], &[]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("secret values not read"), "{stderr}");
    assert!(
        stderr.contains("\"12\" is made as 10 s by backend \"prov\""),
        "{stderr}"
    );
    assert!(stderr.contains("weights sum to 90, not 100"), "{stderr}");

    // Still a real check: a secret whose variable is not even named fails.
    let unnamed = WITH_SECRETS.replace("secrets = { api_key = \"SORA_SHIM_TEST_UNSET_SECRET\" }", "");
    let (code, stderr) = check(&unnamed, &["--without-secrets"], &[]);
    assert_eq!(code, Some(64), "{stderr}");
    assert!(stderr.contains("backends.prov.secrets.api_key: missing"), "{stderr}");
}

#[test]
fn offline_commands_do_not_offer_serve_only_options() {
    for args in [
        &["check", "--help"][..],
        &["export", "--help"],
        &["shadow", "report", "--help"],
    ] {
        let help = text(&cli(args, None, &[]).stdout);
        assert!(
            help.contains("--data-dir") && !help.contains("--listen"),
            "{args:?}: {help}"
        );
    }
    assert!(text(&cli(&["serve", "--help"], None, &[]).stdout).contains("--listen"));
}

#[tokio::test]
async fn a_replay_after_delete_does_not_bring_the_video_back() {
    let shim = Shim::start();
    let key = [("content-type", "application/json"), ("idempotency-key", "nightly-42")];
    let body = json!({"prompt": "once only"}).to_string();
    let first = shim
        .call(Method::POST, "/v1/videos", Some("k"), &key, body.clone())
        .await;
    let id = first.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(shim.wait(&id, "k").await["status"], "completed");
    let r = shim
        .call(
            Method::DELETE,
            &format!("/v1/videos/{id}"),
            Some("k"),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let replay = shim.call(Method::POST, "/v1/videos", Some("k"), &key, body).await;
    let v = assert_error(&replay, 409, Some("Idempotency-Key"), Some("idempotency_key_reused"));
    assert!(v["error"]["message"].as_str().unwrap().contains(&id), "{v}");
    assert_eq!(replay.header("x-should-retry"), Some("false"));
    assert_eq!(
        shim.get(&format!("/v1/videos/{id}"), "k").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(shim.get("/v1/videos", "k").await.json()["data"], json!([]));
}

#[tokio::test]
async fn alerting_series_exist_at_zero_from_start_up() {
    let config = format!(
        r#"{TEST_CONFIG}
[backends.spare]
kind = "local"
fps = 8
[models."sora-2"]
backend = "local"
fallback = ["spare"]
sizes = ["720x1280"]
seconds = ["4"]
[tenants.acme]
keys = ["sha256:{digest}"]
requests_per_minute = 600
max_unfinished_jobs = 4
[moderation.house]
words = ["forbidden"]
[webhooks.ops]
url = "http://127.0.0.1:9/hook"
secret_env = "SORA_SHIM_TEST_WEBHOOK_SECRET"
"#,
        digest = "0".repeat(64)
    );
    let shim = Shim::start_with_env(
        &config,
        &[(
            "SORA_SHIM_TEST_WEBHOOK_SECRET",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        )],
    );
    let metrics = shim.metrics().await;
    for series in [
        r#"sora_shim_storage_full_total{at="create"} 0"#,
        r#"sora_shim_storage_full_total{at="finalize"} 0"#,
        r#"sora_shim_rate_limited_total{limit="requests",tenant="acme"} 0"#,
        r#"sora_shim_rate_limited_total{limit="concurrent_jobs",tenant="acme"} 0"#,
        r#"sora_shim_moderation_verdicts_total{source="policy",verdict="blocked"} 0"#,
        r#"sora_shim_webhook_deliveries_total{outcome="failed"} 0"#,
        r#"sora_shim_failovers_total{from="local",model="sora-2",to="spare"} 0"#,
    ] {
        assert!(metrics.lines().any(|l| l == series), "missing {series}\n{metrics}");
    }
}

#[tokio::test]
async fn plain_http_on_the_tls_port_gets_a_400_saying_https() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key, _) = common::pki::TestPki::new().write(tmp.path(), "shim");
    let shim = Shim::start_with(&common::pki::tls_config(&cert, &key));
    let answer = tokio::task::spawn_blocking({
        let addr = shim.addr.clone();
        move || {
            let mut stream = std::net::TcpStream::connect(addr).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            stream
                .write_all(b"GET /v1/videos HTTP/1.1\r\nHost: shim\r\nAuthorization: Bearer k\r\n\r\n")
                .unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).unwrap();
            answer
        }
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 Bad Request"), "{answer}");
    let body: serde_json::Value = serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["error"]["code"], "plain_http_to_https_port");
    assert!(body["error"]["message"].as_str().unwrap().contains("https://"));
}

#[tokio::test]
async fn a_strict_model_refuses_what_its_backend_would_round() {
    let fake = Fake::start("runway");
    let config = mapped_config("runway", &fake, "gen4.5", "").replace(
        "seconds = [\"4\", \"8\", \"12\"]",
        "seconds = [\"4\", \"8\", \"12\"]\nstrict = true",
    );
    assert!(config.contains("strict = true"));
    let shim = Shim::start_with(&config);
    let r = shim
        .post_json("/v1/videos", "k", &json!({"prompt": "a long take", "seconds": "12"}))
        .await;
    let v = assert_error(&r, 400, Some("seconds"), Some("invalid_value"));
    assert_eq!(
        v["error"]["message"],
        "Invalid value: '12'. Supported values are: '4' and '8'."
    );
    assert_eq!(fake.stats().await["creates"], 0, "nothing was sent to the provider");
    let id = shim
        .create("k", &json!({"prompt": "a short take", "seconds": "8"}))
        .await;
    assert_eq!(shim.wait(&id, "k").await["status"], "completed");
}

#[tokio::test]
async fn after_a_restart_the_job_that_was_rendering_finishes_before_the_queued_one() {
    let config = "[server]\npoll_after_ms = 100\n[worker]\npoll_interval_ms = 50\n\
                  [backends.local]\nkind = \"local\"\nfps = 24\nconcurrent_renders = 1\n";
    let mut shim = Shim::start_with(config);
    // The second is created once the first holds the only render slot, so it is certainly the one waiting. The
    // first has a reference image, which its resubmission reads back from storage before it asks for a slot, so
    // after the restart the second can get there first: the order must come from the renderer's queue (whose
    // rules src/backends/local/queue.rs tests deterministically), not from who asks first.
    let (content_type, body) = common::multipart(&[
        ("prompt", None, "", b"the long one"),
        ("model", None, "", b"sora-2-pro"),
        ("seconds", None, "", b"20"),
        ("size", None, "", b"1920x1080"),
        (
            "input_reference",
            Some("ref.png"),
            "image/png",
            &common::png(1920, 1080),
        ),
    ]);
    let r = shim.post_multipart("/v1/videos", "k", &content_type, body).await;
    let first = r.json()["id"].as_str().unwrap().to_owned();
    let status = async |id: &str| shim.get(&format!("/v1/videos/{id}"), "k").await.json()["status"].clone();
    let rendering = common::eventually(Duration::from_secs(60), async || status(&first).await == "in_progress").await;
    assert!(rendering, "the first video never started rendering");
    let second = shim.create("k", &json!({"prompt": "the short one"})).await;
    assert_eq!(status(&second).await, "queued");
    assert_eq!(
        status(&first).await,
        "in_progress",
        "the first video finished before the restart: nothing left to order"
    );
    shim.kill9();
    let shim = shim.restart();
    let a = shim.wait(&first, "k").await;
    let b = shim.wait(&second, "k").await;
    assert_eq!(
        (a["status"].as_str(), b["status"].as_str()),
        (Some("completed"), Some("completed"))
    );
    assert!(
        a["completed_at"].as_i64() <= b["completed_at"].as_i64(),
        "the queued video overtook the one that was rendering: {a}\n{b}"
    );
}

/// `check` reads the PostgreSQL URL as `serve` will: what start-up would refuse, it refuses, without printing
/// the password.
#[test]
fn check_reads_the_postgres_url_as_serve_would() {
    let config = "[store]\nkind = \"postgres\"\n[assets]\nshared = true\n";
    let url = |u: &str| [("SORA_SHIM_DATABASE_URL", u.to_owned())];
    let run = |u: &str| {
        let env = url(u);
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        check(config, &[], &env)
    };
    let (code, stderr) = run("postgres://shim:hunter2@db:5432/shim?sslmode=require");
    assert_eq!(code, Some(0), "{stderr}");
    for bad in [
        "postgres://shim:hunter2@db:5432/shim?sslmode=verify-full",
        "postgres://shim:hunter2@db:port/shim",
        "mysql://shim:hunter2@db/shim",
    ] {
        let (code, stderr) = run(bad);
        assert_eq!(code, Some(64), "{bad}: {stderr}");
        assert!(stderr.contains("store.url_env"), "{bad}: {stderr}");
        assert!(!stderr.contains("hunter2"), "{bad}: {stderr}");
    }
}
