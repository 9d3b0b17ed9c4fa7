//! `sora-shim conformance` as a user runs it: the real binary as a subprocess, against the real shim (quick
//! profile, which must pass), through the shim in front of each fake provider (must pass or skip what the backend
//! declines), against almost-compatible endpoints (a proxy bending one thing) and a broken endpoint that answers
//! every request `200 {}` (each must fail, saying why).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::Output;
use std::time::{Duration, Instant};

use common::{BACKENDS, Shim, start_mapped};

fn conformance(base_url: &str, extra: &[&str]) -> (Output, String, Duration) {
    conformance_with_env(base_url, extra, &[])
}

fn conformance_with_env(base_url: &str, extra: &[&str], env: &[(&str, &str)]) -> (Output, String, Duration) {
    let started = Instant::now();
    let mut args = vec!["conformance", "--base-url", base_url, "--api-key", "k1"];
    args.extend_from_slice(extra);
    let out = common::cli(&args, None, env);
    let stdout = String::from_utf8(out.stdout.clone()).unwrap();
    (out, stdout, started.elapsed())
}

/// Tags balance and attributes are quoted: enough to call the JUnit file well-formed for CI readers.
fn assert_well_formed_xml(xml: &str) {
    assert!(xml.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"), "{xml}");
    let mut stack: Vec<String> = Vec::new();
    let mut rest = &xml[xml.find("?>").unwrap() + 2..];
    while let Some(open) = rest.find('<') {
        assert!(!rest[..open].contains('>'), "stray '>' in text: {:?}", &rest[..open]);
        let close = rest[open..].find('>').unwrap() + open;
        let tag = &rest[open + 1..close];
        assert!(!tag.contains('<'), "'<' inside a tag: {tag:?}");
        assert_eq!(tag.matches('"').count() % 2, 0, "unbalanced quotes in {tag:?}");
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(stack.pop().as_deref(), Some(name), "mismatched </{name}>");
        } else if !tag.ends_with('/') {
            stack.push(tag.split_whitespace().next().unwrap().to_owned());
        }
        rest = &rest[close + 1..];
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
}

fn attr<'a>(xml: &'a str, element: &str, name: &str) -> &'a str {
    let start = xml.find(&format!("<{element} ")).unwrap();
    let tag = &xml[start..start + xml[start..].find('>').unwrap()];
    let at = tag.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
    &tag[at..at + tag[at..].find('"').unwrap()]
}

/// The kit through the shim in front of each fake provider: every scenario passes, or is skipped because the
/// backend declines it with a 400 naming the parameter (remix on Runway, say); nothing fails.
#[test]
fn quick_profile_passes_through_every_mapping() {
    for (which, (name, _, _)) in BACKENDS.iter().enumerate() {
        // The OpenAI-compatible fake follows vLLM-Omni, which has no remix: narrowed as the README says (without
        // it the kit rightly fails `remix`: the job fails at the provider).
        let extra = if *name == "openai" {
            "operations = [\"create\"]"
        } else {
            ""
        };
        let (_fake, shim) = start_mapped(which, extra);
        let (out, stdout, took) = conformance(
            &format!("http://{}/v1", shim.addr),
            &[
                "--second-api-key",
                "k2",
                "--profile",
                "quick",
                "--max-body-bytes",
                "52428800",
            ],
        );
        eprintln!("{name}: quick profile took {took:?}");
        assert!(
            out.status.success(),
            "{name}: exit {:?}\n{stdout}\n{}",
            out.status,
            shim.log()
        );
        for must_pass in [
            "create.json",
            "poll.until_terminal",
            "content.video",
            "delete",
            "schemas.every_response",
        ] {
            assert!(
                stdout.contains(&format!("PASS {must_pass} (")),
                "{name}: {must_pass} did not pass:\n{stdout}"
            );
        }
        for line in stdout.lines().filter(|l| l.starts_with("SKIP ")) {
            assert!(
                line.contains("full profile only")
                    || line.contains("not offered by this endpoint")
                    || line.contains("needs --webhook-listen")
                    || line.starts_with("SKIP headers.rate_limit ("),
                "{name}: unexpected skip: {line}\n{stdout}"
            );
        }
    }
}

/// A signing secret for the webhook scenario, and a config delivering the shim's webhooks to `port`.
const WEBHOOK_SECRET: &str = "whsec_Y29uZm9ybWFuY2Uga2l0IHdlYmhvb2sgc2VjcmV0";

fn webhook_config(port: u16) -> String {
    format!(
        "{}\n[webhooks.kit]\nurl = \"http://127.0.0.1:{port}/hooks\"\nsecret_env = \"KIT_WEBHOOK_SECRET\"\nretry_base_ms = 200\n",
        common::TEST_CONFIG
    )
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn quick_profile_passes_against_the_shim() {
    let port = free_port();
    let shim = Shim::start_with_env(&webhook_config(port), &[("KIT_WEBHOOK_SECRET", WEBHOOK_SECRET)]);
    let dir = tempfile::tempdir().unwrap();
    let (junit, report) = (dir.path().join("junit.xml"), dir.path().join("report.md"));
    let base = format!("http://{}/v1", shim.addr);
    let listen = format!("127.0.0.1:{port}");
    let (out, stdout, took) = conformance(
        &base,
        &[
            "--webhook-listen",
            &listen,
            "--webhook-secret",
            WEBHOOK_SECRET,
            "--second-api-key",
            "k2",
            "--profile",
            "quick",
            "--max-body-bytes",
            "2097152",
            "--junit",
            junit.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ],
    );
    eprintln!("{stdout}\n(quick profile took {took:?})");
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        shim.log()
    );

    let lines: Vec<&str> = stdout.lines().collect();
    let last = *lines.last().unwrap();
    let closing = regex_like_closing(last).unwrap_or_else(|| panic!("closing line {last:?}"));
    assert_eq!(closing.1, 0);
    assert!(
        stdout.contains("\ngenerations requested: 4 (16 s of video); "),
        "{stdout}"
    );
    let scenario_lines: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("PASS ") || l.starts_with("FAIL ") || l.starts_with("SKIP "))
        .collect();
    assert_eq!(scenario_lines.len(), closing.0 + closing.1 + closing.2);
    for must_pass in [
        "create.json",
        "create.multipart",
        "poll.until_terminal",
        "content.video",
        "content.thumbnail",
        "content.spritesheet",
        "content.range",
        "idempotency.create",
        "remix",
        "edit",
        "extend",
        "characters",
        "list.pagination",
        "error.bad_size",
        "error.bad_seconds",
        "error.missing_prompt",
        "error.malformed_json",
        "error.oversize_body",
        "error.unknown_id",
        "error.missing_key",
        "error.other_key",
        "error.bad_variant",
        "delete",
        "headers.request_id",
        "schemas.every_response",
        "webhook.signed_event",
    ] {
        let prefix = format!("PASS {must_pass} (");
        assert!(
            scenario_lines.iter().any(|l| l.starts_with(&prefix)),
            "{must_pass} did not pass:\n{stdout}"
        );
    }
    assert!(stdout.contains("SKIP headers.rate_limit ("), "{stdout}");
    assert!(
        stdout.contains("SKIP generate.size.1920x1080 (0.0 s): full profile only"),
        "{stdout}"
    );
    assert!(
        stdout.contains("answered with the source video"),
        "the multipart create generated a video:\n{stdout}"
    );

    let xml = std::fs::read_to_string(&junit).unwrap();
    assert_well_formed_xml(&xml);
    assert_eq!(attr(&xml, "testsuites", "tests"), scenario_lines.len().to_string());
    assert_eq!(attr(&xml, "testsuites", "failures"), "0");
    assert_eq!(attr(&xml, "testsuites", "skipped"), closing.2.to_string());
    assert_eq!(xml.matches("<testcase ").count(), scenario_lines.len());
    assert!(xml.contains("<property name=\"generations\" value=\"4\"/>"));

    let md = std::fs::read_to_string(&report).unwrap();
    assert!(md.contains(&format!("| Endpoint | `{base}` |")), "{md}");
    assert!(
        md.contains(&format!("| Shim version | {} |", env!("CARGO_PKG_VERSION"))),
        "{md}"
    );
    assert!(md.contains(&format!("| Results | {last} |")), "{md}");
    assert!(md.contains("| Generations used | 4 (16 s of video) |"), "{md}");
    assert!(md.contains("| Date | 20"), "{md}");
    assert_eq!(
        md.lines().filter(|l| l.starts_with("| `")).count(),
        scenario_lines.len()
    );
    assert!(
        !md.contains("k1") && !xml.contains("k1") && !stdout.contains("k2"),
        "an API key leaked"
    );
}

/// `N passed, N failed[, N skipped]` → (passed, failed, skipped).
fn regex_like_closing(line: &str) -> Option<(usize, usize, usize)> {
    let mut parts = line.split(", ");
    let num = |part: Option<&str>, word: &str| part?.strip_suffix(word)?.trim().parse::<usize>().ok();
    let passed = num(parts.next(), " passed")?;
    let failed = num(parts.next(), " failed")?;
    let skipped = match parts.next() {
        Some(p) => num(Some(p), " skipped")?,
        None => 0,
    };
    parts.next().is_none().then_some((passed, failed, skipped))
}

/// An endpoint that answers every request `200 {}` (after reading it whole).
fn broken_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut stream = stream;
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            length = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let answer = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                    if stream.write_all(answer.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}/v1")
}

#[test]
fn a_broken_endpoint_fails() {
    let base = broken_endpoint();
    let (out, stdout, _) = conformance(
        &base,
        &[
            "--second-api-key",
            "k2",
            "--timeout-secs",
            "5",
            "--max-body-bytes",
            "4096",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap();
    let (_, failed, _) = regex_like_closing(last).unwrap_or_else(|| panic!("closing line {last:?}"));
    assert!(failed >= 10, "{stdout}");
    for line in [
        "FAIL create.json (",
        "FAIL error.bad_size (",
        "FAIL error.missing_key (",
        "FAIL headers.request_id (",
        "FAIL schemas.every_response (",
    ] {
        assert!(stdout.contains(line), "no {line:?} in\n{stdout}");
    }
    assert!(stdout.contains("expected HTTP 400, got 200: {}"), "{stdout}");
    assert!(
        stdout.contains("SKIP content.video (") && stdout.contains("no finished source video"),
        "{stdout}"
    );
}

/// An endpoint that cannot be reached is one clear message and exit 2, never a run whose checks "pass" on
/// nothing (the schema check used to PASS with 0 answers).
#[test]
fn an_unreachable_endpoint_exits_2_with_one_message() {
    let port = free_port();
    let (out, stdout, _) = conformance(&format!("http://127.0.0.1:{port}/v1"), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("cannot reach") && stderr.contains("Nothing was checked"),
        "{stderr}"
    );
    assert!(!stdout.contains("PASS"), "{stdout}");
}

/// An HTTPS endpoint behind a private CA: refused (exit 2, the TLS reason) until the kit is told to trust the
/// CA, with --ca-file or the usual SSL_CERT_FILE.
#[test]
fn an_https_endpoint_behind_a_private_ca_is_checked_with_its_ca() {
    let tmp = tempfile::tempdir().unwrap();
    let (cert, key, ca_path) = common::pki::TestPki::new().write(tmp.path(), "private");
    let shim = Shim::start_with(&common::pki::tls_config(&cert, &key));
    let base = format!("https://{}/v1", shim.addr);
    let only = ["--only", "error.bad_size,error.unknown_id"];
    let (out, stdout, _) = conformance(&base, &only);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stdout}{stderr}");
    assert!(
        stderr.contains("cannot reach") && stderr.to_lowercase().contains("certificate"),
        "{stderr}"
    );

    let ca = ca_path.to_str().unwrap();
    let (out, stdout, _) = conformance(&base, &[&only[..], &["--ca-file", ca]].concat());
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("2 passed, 0 failed"), "{stdout}");
    let (out, stdout, _) = conformance_with_env(&base, &only, &[("SSL_CERT_FILE", ca)]);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn bad_arguments_exit_2() {
    let (out, _, _) = conformance("ftp://nowhere", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid --base-url"));
    let (out, _, _) = conformance("http://127.0.0.1:9/v1", &["--only", "no-such-scenario"]);
    assert_eq!(out.status.code(), Some(2));
}

/// Almost-compatible endpoints: the real shim behind a proxy that bends one thing (tests/fakes/mutating_proxy.py).
/// Each must make the kit fail (exit 1), and the failure must name what is wrong.
#[test]
fn almost_compatible_endpoints_fail_with_the_reason() {
    for (mutation, failing, reason) in [
        (
            "fifth_status",
            "FAIL poll.until_terminal (",
            "status \"processing\" is not a Sora status",
        ),
        (
            "drop_expires_at",
            "FAIL create.json (",
            "\"expires_at\" is a required property",
        ),
        (
            "bare_errors",
            "FAIL error.missing_prompt (",
            "\"error\" is a required property",
        ),
    ] {
        let shim = Shim::start();
        let upstream = format!("http://{}", shim.addr);
        let proxy = common::Fake::start_with_env("mutating_proxy", &[("UPSTREAM", &upstream), ("MUTATION", mutation)]);
        let (out, stdout, _) = conformance(
            &format!("{}/v1", proxy.url),
            &["--profile", "quick", "--max-body-bytes", "2097152"],
        );
        assert_eq!(
            out.status.code(),
            Some(1),
            "{mutation}: the kit passed a broken endpoint:\n{stdout}"
        );
        let line = stdout
            .lines()
            .find(|l| l.starts_with(failing))
            .unwrap_or_else(|| panic!("{mutation}: no `{failing}` line:\n{stdout}"));
        assert!(
            line.contains(reason),
            "{mutation}: the failure does not say why: {line}"
        );
    }
}

/// An endpoint whose webhooks are signed with another secret than the receiver expects fails the scenario.
#[test]
fn a_webhook_signed_with_another_secret_fails() {
    let port = free_port();
    let other = "whsec_c29tZW9uZSBlbHNlJ3Mgc2VjcmV0IGtleQ==";
    let shim = Shim::start_with_env(&webhook_config(port), &[("KIT_WEBHOOK_SECRET", other)]);
    let listen = format!("127.0.0.1:{port}");
    let (out, stdout, _) = conformance(
        &format!("http://{}/v1", shim.addr),
        &[
            "--only",
            "webhook",
            "--webhook-listen",
            &listen,
            "--webhook-secret",
            WEBHOOK_SECRET,
        ],
    );
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains("FAIL webhook.signed_event (") && stdout.contains("does not verify"),
        "{stdout}"
    );
}
