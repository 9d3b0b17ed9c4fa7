//! `sora-shim export` → `sora-shim import` into a fresh data directory → the same API answers; importing twice
//! changes nothing; a tampered file is refused; filters narrow an export.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use bytes::Bytes;
use common::{Shim, TEST_CONFIG, multipart, png};
use hyper::StatusCode;
use serde_json::{Value, json};

fn run(args: &[&str], config: &Path, data_dir: &Path) -> (bool, String, String) {
    let mut all = args.to_vec();
    all.extend([
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data_dir.to_str().unwrap(),
    ]);
    let out = common::cli(&all, None, &[]);
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn an_export_imported_elsewhere_answers_the_same() {
    let config = format!(
        "{TEST_CONFIG}\n[moderation.house]\nwords = [\"forbidden\"]\n[models.\"sora-2\"]\nbackend = \"local\"\nmoderation = \"house\"\nsizes = [\"720x1280\", \"1280x720\"]\nseconds = [\"4\", \"8\"]\n"
    );
    let mut shim = Shim::start_with(&config);
    let key = "sk-export";
    let plain = shim.create(key, &json!({"prompt": "a plain fox"})).await;
    let (ct, body) = multipart(&[
        ("prompt", None, "", b"a fox with a reference"),
        ("size", None, "", b"720x1280"),
        ("input_reference", Some("ref.png"), "image/png", &png(720, 1280)),
    ]);
    let r = shim.post_multipart("/v1/videos", key, &ct, body).await;
    let with_ref = r.json()["id"].as_str().unwrap().to_owned();
    let blocked = shim
        .post_json("/v1/videos", key, &json!({"prompt": "forbidden"}))
        .await
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let gone = shim.create(key, &json!({"prompt": "to be deleted"})).await;
    for id in [&plain, &with_ref, &gone] {
        assert_eq!(shim.wait(id, key).await["status"], "completed");
    }
    let r = shim
        .call(
            hyper::Method::DELETE,
            &format!("/v1/videos/{gone}"),
            Some(key),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let mut before: Vec<(String, Value, Bytes)> = Vec::new();
    for id in [&plain, &with_ref, &blocked] {
        let v = shim.get(&format!("/v1/videos/{id}"), key).await.json();
        let content = shim.get(&format!("/v1/videos/{id}/content"), key).await.body;
        before.push((id.clone(), v, content));
    }
    let listed = shim.get("/v1/videos?order=asc", key).await.json();
    shim.terminate();

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("export");
    let (ok, stdout, stderr) = run(
        &["export", "--out", out.to_str().unwrap()],
        shim.config_path(),
        &shim.data_dir,
    );
    assert!(ok, "{stderr}");
    assert!(stdout.contains("exported 4 jobs"), "{stdout}");
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        (manifest["format"].as_str(), manifest["version"].as_u64()),
        (Some("sora-shim-export"), Some(1))
    );
    let lines: Vec<Value> = std::fs::read_to_string(out.join("jobs.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    let record = lines.iter().find(|l| l["id"] == blocked.as_str()).unwrap();
    assert_eq!(record["moderation"]["verdict"], "blocked");
    assert_eq!(record["error"]["code"], "moderation_blocked");
    assert!(lines.iter().find(|l| l["id"] == gone.as_str()).unwrap()["deleted_at"].is_i64());
    let record = lines.iter().find(|l| l["id"] == with_ref.as_str()).unwrap();
    for field in [
        "tenant",
        "backend",
        "backend_version",
        "created_at",
        "completed_at",
        "request",
    ] {
        assert!(!record[field].is_null(), "{field} missing in {record}");
    }
    assert!(
        out.join("assets")
            .join(&with_ref)
            .join("inputs/input_reference.png")
            .exists()
    );
    assert!(out.join("assets").join(&plain).join("video.mp4").exists());

    // Into a fresh data directory, twice: the first time only with --new-store (a mistyped data directory must
    // not quietly become a new, empty store), and nothing is created when it is refused.
    let fresh = tmp.path().join("fresh");
    let (ok, _, stderr) = run(&["import", out.to_str().unwrap()], shim.config_path(), &fresh);
    assert!(!ok && stderr.contains("no job store at"), "{stderr}");
    assert!(!fresh.exists(), "a refused import created the data directory");
    let (ok, stdout, stderr) = run(
        &["import", "--new-store", out.to_str().unwrap()],
        shim.config_path(),
        &fresh,
    );
    assert!(ok && stdout.contains("imported 4 jobs"), "{stdout}{stderr}");
    let (ok, stdout, _) = run(&["import", out.to_str().unwrap()], shim.config_path(), &fresh);
    assert!(
        ok && stdout.contains("imported 0 jobs") && stdout.contains("4 already present"),
        "{stdout}"
    );

    let other = spawn_on(shim.config_path(), &fresh);
    for (id, v, content) in &before {
        assert_eq!(&other.get(&format!("/v1/videos/{id}"), key).await.json(), v);
        let r = other.get(&format!("/v1/videos/{id}/content"), key).await;
        assert_eq!(&r.body, content, "content of {id}");
    }
    assert_eq!(other.get("/v1/videos?order=asc", key).await.json(), listed);
    assert_eq!(
        other.get(&format!("/v1/videos/{gone}"), key).await.status,
        StatusCode::NOT_FOUND
    );

    // Filters, and a tampered file.
    let none = tmp.path().join("none");
    let (ok, stdout, _) = run(
        &["export", "--out", none.to_str().unwrap(), "--since", "2999-01-01"],
        shim.config_path(),
        &shim.data_dir,
    );
    assert!(ok && stdout.contains("exported 0 jobs"), "{stdout}");
    let (ok, _, stderr) = run(
        &["export", "--out", out.to_str().unwrap()],
        shim.config_path(),
        &shim.data_dir,
    );
    assert!(!ok && stderr.contains("already holds an export"), "{stderr}");
    std::fs::write(out.join("assets").join(&plain).join("video.mp4"), b"not the video").unwrap();
    let (ok, _, stderr) = run(
        &["import", "--new-store", out.to_str().unwrap()],
        shim.config_path(),
        &tmp.path().join("third"),
    );
    assert!(!ok && stderr.contains("does not match"), "{stderr}");
}

/// A shim on an existing data directory with the given config.
fn spawn_on(config: &Path, data_dir: &Path) -> Shim {
    Shim::start_on(config, data_dir)
}
