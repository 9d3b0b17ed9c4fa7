//! The listener, end to end against the real binary: open mode bound to loopback, server limits against slow
//! and oversized clients, TLS (h2 and http/1.1, certificate rotation, a key that does not fit, a provider
//! behind its own CA).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::pki::TestPki;
use common::{Fake, Shim, assert_error, multipart};
use http_body_util::{BodyExt, Empty};
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;

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

/// Reads one HTTP/1.1 response (head and a `Content-Length` body) from `s`: (head, whether the peer then closed).
fn read_response(s: &mut TcpStream) -> (String, bool) {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed before a response: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    while got.len() < head_end + length {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed inside the body");
        got.extend_from_slice(&buf[..n]);
    }
    s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let closed = matches!(s.read(&mut buf), Ok(0));
    (head, closed)
}

/// An answer that comes before the request body is read (401, a remix of a missing video) must not leave a
/// keep-alive client with a connection the server is about to drop: a small body that arrives just behind its
/// headers is read so the connection carries the next request; a large one gets `Connection: close`.
#[test]
fn an_answer_before_the_body_keeps_the_connection_or_says_it_closes() {
    let shim = Shim::start();
    let body = br#"{"prompt":"a fox"}"#;
    for (path, auth, status) in [
        ("/v1/videos", "", "401"),
        (
            "/v1/videos/video_missing/remix",
            "Authorization: Bearer sk-dev\r\n",
            "404",
        ),
    ] {
        let mut s = TcpStream::connect(&shim.addr).unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        // The body in its own segment, a moment after the headers: the handler answers before it arrives.
        s.write_all(head.as_bytes()).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        s.write_all(body).unwrap();
        let (head, closed) = read_response(&mut s);
        assert!(head.starts_with(&format!("http/1.1 {status}")), "{head}");
        assert!(!head.contains("connection: close") && !closed, "{path}: {head}");
        // The same connection carries the next request.
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let (head, _) = read_response(&mut s);
        assert!(head.starts_with("http/1.1 200"), "{path}: {head}");
    }

    // 1 MB declared, 1 KB sent: the answer says the connection ends, and it does.
    let mut s = TcpStream::connect(&shim.addr).unwrap();
    s.write_all(
        b"POST /v1/videos HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n",
    )
    .unwrap();
    s.write_all(&[b' '; 1024]).unwrap();
    let (head, closed) = read_response(&mut s);
    assert!(
        head.starts_with("http/1.1 401") && head.contains("connection: close"),
        "{head}"
    );
    assert!(closed, "{head}");
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
