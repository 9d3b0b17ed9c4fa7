//! The production door, end to end against the real binary: tenants and keys, ownership, admin keys, open mode
//! bound to loopback, per-tenant limits, server limits against slow clients, TLS (h2 and http/1.1, certificate
//! rotation, a provider behind its own CA), prompt policies, metrics and JSON logs, and no secret anywhere.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::pki::TestPki;
use common::{Fake, Shim, assert_error, metric, multipart};
use http_body_util::{BodyExt, Empty};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
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

#[test]
fn open_mode_stays_on_loopback_unless_told_otherwise() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().to_str().unwrap();
    let out = common::cli(&["serve", "--listen", "0.0.0.0:0", "--data-dir", data], None, &[]);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--allow-open-mode") && stderr.contains("0.0.0.0"),
        "{stderr}"
    );

    let mut child = Command::new(env!("CARGO_BIN_EXE_sora-shim"))
        .args(["serve", "--allow-open-mode", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.starts_with("listening on http://0.0.0.0:"), "{line}");
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

/// Raw HTTP/1.1 on a fresh connection; returns what the server sent before closing (or within `wait`).
fn raw_exchange(addr: &str, request: &[u8], wait: Duration) -> (Vec<u8>, Duration) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(request).unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                panic!(
                    "connection still open after {wait:?}; got {:?}",
                    String::from_utf8_lossy(&out)
                )
            }
            Err(_) => break,
        }
    }
    (out, started.elapsed())
}

#[tokio::test]
async fn server_limits_stop_slow_and_oversized_clients() {
    let shim = Shim::start_with(
        r#"
[server]
max_body_bytes = 2097152
max_upload_bytes = 4096
max_header_bytes = 8192
header_read_timeout_secs = 1
request_timeout_secs = 1
idle_timeout_secs = 1
[backends.local]
kind = "local"
fps = 8
"#,
    );
    // An upload over the per-file cap, inside the body cap: 413 naming the field.
    let image = vec![0u8; 5000];
    let (ct, body) = multipart(&[
        ("prompt", None, "", b"a fox"),
        ("input_reference", Some("ref.png"), "image/png", &image),
    ]);
    let r = shim.post_multipart("/v1/videos", "sk-dev", &ct, body).await;
    assert_error(&r, 413, Some("input_reference"), Some("file_too_large"));

    let addr = shim.addr.clone();
    tokio::task::spawn_blocking(move || {
        // A request head over max_header_bytes: 431.
        let big = format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(10_000));
        let (out, _) = raw_exchange(&addr, big.as_bytes(), Duration::from_secs(5));
        assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 431"), "{:?}", String::from_utf8_lossy(&out));
        // Headers that never finish: the connection is closed after header_read_timeout.
        let (out, took) = raw_exchange(&addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n", Duration::from_secs(5));
        assert!(took < Duration::from_secs(4) && !String::from_utf8_lossy(&out).contains("200"), "{took:?}");
        // A connection that sends nothing at all is closed too.
        let (_, took) = raw_exchange(&addr, b"", Duration::from_secs(5));
        assert!(took < Duration::from_secs(4), "{took:?}");
        // A body that trickles: 408 after request_timeout.
        let slow = b"POST /v1/videos HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-dev\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"prompt\":";
        let (out, _) = raw_exchange(&addr, slow, Duration::from_secs(5));
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 408") && text.contains("request_timeout"), "{text}");
        // A keep-alive connection left idle is closed after idle_timeout.
        let (out, took) = raw_exchange(&addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", Duration::from_secs(5));
        assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 200"));
        assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(4), "{took:?}");
    })
    .await
    .unwrap();
}

/// TLS to `addr` trusting `ca_pem`, offering one ALPN protocol: (negotiated protocol, server certificate, stream).
async fn tls_connect(
    addr: &str,
    ca_pem: &str,
    alpn: &[u8],
) -> (
    Option<Vec<u8>>,
    Vec<u8>,
    tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let (_, conn) = stream.get_ref();
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    let cert = conn.peer_certificates().unwrap()[0].to_vec();
    (alpn, cert, stream)
}

async fn healthz_over(stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>, h2: bool) -> StatusCode {
    let io = TokioIo::new(stream);
    let req = Request::builder()
        .uri("https://localhost/healthz")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        sender.send_request(req).await.unwrap()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        sender.send_request(req).await.unwrap()
    };
    let status = resp.status();
    let _ = resp.into_body().collect().await;
    status
}

#[tokio::test]
async fn tls_serves_h2_and_http1_and_picks_up_a_rotated_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let (cert, key, first_der) = pki.leaf("first");
    let (cert_path, key_path) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    let shim = Shim::start_with(&format!(
        "[server]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n[backends.local]\nkind = \"local\"\nfps = 8\n",
        cert_path.display(),
        key_path.display()
    ));
    for (alpn, h2) in [(&b"h2"[..], true), (&b"http/1.1"[..], false)] {
        let (negotiated, der, stream) = tls_connect(&shim.addr, &pki.ca_pem, alpn).await;
        assert_eq!(negotiated.as_deref(), Some(alpn));
        assert_eq!(der, first_der);
        assert_eq!(healthz_over(stream, h2).await, StatusCode::OK);
    }
    // Rotate: new key and certificate in place; new connections get them without a restart.
    let (cert, key, second_der) = pki.leaf("second");
    std::fs::write(&key_path, &key).unwrap();
    std::fs::write(&cert_path, &cert).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, der, stream) = tls_connect(&shim.addr, &pki.ca_pem, b"h2").await;
        if der == second_der {
            assert_eq!(healthz_over(stream, true).await, StatusCode::OK);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still serving the old certificate\n{}",
            shim.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(shim.log().contains("TLS certificate reloaded"));
}

#[test]
fn a_key_that_does_not_fit_its_certificate_is_refused_at_check() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let (cert, _, _) = pki.leaf("a");
    let (_, other_key, _) = pki.leaf("b");
    std::fs::write(tmp.path().join("cert.pem"), cert).unwrap();
    std::fs::write(tmp.path().join("key.pem"), &other_key).unwrap();
    std::fs::write(tmp.path().join("ca.pem"), "not a certificate").unwrap();
    let config = tmp.path().join("c.toml");
    std::fs::write(
        &config,
        "[server]\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n\
         [backends.p]\nkind = \"mapping\"\nmapping = \"comfyui\"\nbase_url = \"https://127.0.0.1:1\"\nca_file = \"ca.pem\"\n",
    )
    .unwrap();
    let out = common::cli(&["check", "--config", config.to_str().unwrap()], None, &[]);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("server.tls_cert") && stderr.contains("backends.p.ca_file"),
        "{stderr}"
    );
    assert!(!stderr.contains("PRIVATE KEY"), "{stderr}");
}

#[tokio::test]
async fn a_provider_behind_its_own_ca_is_reached_with_ca_file() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = TestPki::new();
    let (cert, key, _) = pki.leaf("provider");
    let (cert_path, key_path, ca_path) = (
        tmp.path().join("p.pem"),
        tmp.path().join("p.key"),
        tmp.path().join("ca.pem"),
    );
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    std::fs::write(&ca_path, &pki.ca_pem).unwrap();
    let fake = Fake::start_with_args(
        "openai_videos",
        &[],
        &[
            "--tls-cert",
            cert_path.to_str().unwrap(),
            "--tls-key",
            key_path.to_str().unwrap(),
        ],
    );
    assert!(fake.url.starts_with("https://"), "{}", fake.url);
    let config = common::mapped_config(
        "openai",
        &fake,
        "wan-2.2",
        &format!("ca_file = \"{}\"", ca_path.display()),
    );
    let shim = Shim::start_with(&config);
    let id = shim
        .create("sk-dev", &json!({"prompt": "over TLS", "seconds": "4"}))
        .await;
    let v = shim.wait(&id, "sk-dev").await;
    assert_eq!(v["status"], "completed", "{v}\n{}", shim.log());
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
