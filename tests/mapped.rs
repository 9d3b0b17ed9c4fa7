//! The mapping engine against the fake providers in `tests/fakes/`: each built-in mapping end to end, and the
//! fault cases (429 with Retry-After, 5xx, lost create responses, resets, malformed JSON, moderation), each
//! ending in the right Sora state with no job lost and no create sent twice.
#![allow(clippy::unwrap_used)]

mod common;

use common::{BACKENDS, Fake, Shim, assert_error, index_of, mapped_config, start_mapped as start};
use hyper::StatusCode;
use serde_json::{Value, json};

/// Jobs the provider accepted (whatever their state).
async fn accepted(fake: &Fake) -> usize {
    fake.stats().await["jobs"].as_object().unwrap().len()
}

#[tokio::test]
async fn every_mapping_completes_a_video_and_serves_all_three_variants() {
    for (which, (name, _, _)) in BACKENDS.iter().enumerate() {
        let (fake, shim) = start(which, "");
        let id = shim
            .create(
                "k",
                &json!({"prompt": "a lighthouse at dawn", "size": "1280x720", "seconds": "4"}),
            )
            .await;
        let done = shim.wait(&id, "k").await;
        assert_eq!(
            done["status"],
            "completed",
            "{}: {done}\n{}",
            BACKENDS[which].0,
            shim.log()
        );
        for (variant, content_type) in [
            ("video", "video/mp4"),
            ("thumbnail", "image/webp"),
            ("spritesheet", "image/jpeg"),
        ] {
            let r = shim
                .get(&format!("/v1/videos/{id}/content?variant={variant}"), "k")
                .await;
            assert_eq!(r.status, StatusCode::OK, "{name} {variant}");
            assert_eq!(r.header("content-type"), Some(content_type));
            assert!(r.body.len() > 100);
        }
        assert_eq!(
            accepted(&fake).await,
            1,
            "{}: exactly one generation",
            BACKENDS[which].0
        );
    }
}

/// Mapping `which` against its fake with `plan` as the fault plan: one video created and waited for.
async fn one_video_under(which: usize, plan: Value, prompt: &str) -> (Fake, Shim, Value) {
    let (fake, shim) = start(which, "");
    fake.faults(plan).await;
    let id = shim.create("k", &json!({"prompt": prompt})).await;
    let done = shim.wait(&id, "k").await;
    (fake, shim, done)
}

#[tokio::test]
async fn a_429_with_retry_after_on_create_is_retried_and_pays_once() {
    for (which, (name, _, _)) in BACKENDS.iter().enumerate() {
        let plan = json!({"create": {"status": 429, "retry_after": 1, "times": 1}});
        let (fake, shim, done) = one_video_under(which, plan, "patience").await;
        assert_eq!(done["status"], "completed", "{name}: {}", shim.log());
        assert_eq!(accepted(&fake).await, 1, "{name}");
    }
}

#[tokio::test]
async fn a_lost_create_response_is_never_resent() {
    for (which, (name, _, _)) in BACKENDS.iter().enumerate() {
        let plan = json!({"create": {"status": 500, "after_accept": true, "times": 1}});
        let (fake, _shim, v) = one_video_under(which, plan, "did it go through?").await;
        assert_eq!(v["status"], "failed", "{name}");
        assert_eq!(v["error"]["code"], "submission_outcome_unknown", "{name}");
        let stats = fake.stats().await;
        assert_eq!(stats["creates"], 1, "{name}: the create was sent once: {stats}");
    }
}

#[tokio::test]
async fn poll_errors_malformed_answers_and_download_resets_are_ridden_out() {
    for (which, (name, _, _)) in BACKENDS.iter().enumerate() {
        let plan = json!({"poll": {"status": 503, "times": 2}, "download": {"reset": true, "times": 1}});
        let (fake, shim, done) = one_video_under(which, plan, "storm").await;
        assert_eq!(done["status"], "completed", "{name}: {}", shim.log());

        fake.faults(json!({"poll": {"malformed": true, "times": 2}})).await;
        let id = shim.create("k", &json!({"prompt": "garbled"})).await;
        assert_eq!(
            shim.wait(&id, "k").await["status"],
            "completed",
            "{name}: {}",
            shim.log()
        );
        assert_eq!(accepted(&fake).await, 2, "{name}: one generation per video");
    }
}

#[tokio::test]
async fn provider_moderation_becomes_moderation_blocked() {
    for (which, (name, _, _)) in BACKENDS.iter().enumerate() {
        let plan = json!({"outcome": "moderated"});
        let (_fake, _shim, v) = one_video_under(which, plan, "something the provider refuses").await;
        // A self-hosted ComfyUI has no moderation: its fake fails such a job as a node error.
        let code = if *name == "comfyui" {
            "backend_error"
        } else {
            "moderation_blocked"
        };
        assert_eq!(v["status"], "failed", "{name}");
        assert_eq!(v["error"]["code"], code, "{name}: {v}");
    }
}

#[tokio::test]
async fn an_operation_the_backend_lacks_is_a_clear_400() {
    let (_fake, shim) = start(index_of("runway"), "");
    let id = shim.create("k", &json!({"prompt": "a source"})).await;
    shim.wait(&id, "k").await;
    let r = shim
        .post_json(&format!("/v1/videos/{id}/remix"), "k", &json!({"prompt": "again"}))
        .await;
    let v = assert_error(&r, 400, Some("model"), Some("invalid_value"));
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not support remix"),
        "{v}"
    );
}

#[tokio::test]
async fn a_backend_can_offer_fewer_operations_than_its_mapping() {
    // The openai mapping offers remix; a vLLM-Omni server behind it has none, so the operator narrows it.
    let (fake, shim) = start(index_of("openai"), "operations = [\"create\"]");
    let id = shim.create("k", &json!({"prompt": "a source"})).await;
    assert_eq!(shim.wait(&id, "k").await["status"], "completed");
    let r = shim
        .post_json(&format!("/v1/videos/{id}/remix"), "k", &json!({"prompt": "again"}))
        .await;
    let v = assert_error(&r, 400, Some("model"), Some("invalid_value"));
    // The client hears of its model; the backend's name stays in the log.
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("The model 'sora-2'") && !message.contains("prov"),
        "{v}"
    );
    assert!(shim.log().contains("request refused: the backend cannot take it"));
    assert_eq!(fake.stats().await["creates"], 1, "the refused remix was never sent");
}

/// `sora-shim check` on a config directory holding `files` (the config is `c.toml`): it must refuse with exit 64;
/// returns what it printed.
fn check_refuses(files: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let config = dir.path().join("c.toml");
    let out = common::cli(&["check", "--config", config.to_str().unwrap()], None, &[]);
    assert_eq!(out.status.code(), Some(64));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn check_refuses_an_operation_the_mapping_does_not_offer() {
    let config = "[backends.prov]\nkind = \"mapping\"\nmapping = \"runway\"\nbase_url = \"http://127.0.0.1:9\"\n\
                  secrets = { api_key = \"HOME\" }\noperations = [\"create\", \"remix\"]\n\
                  [models.\"sora-2\"]\nbackend = \"prov\"\nsizes = [\"1280x720\"]\nseconds = [\"4\"]\n\
                  [api]\ndefault_size = \"1280x720\"\n";
    let err = check_refuses(&[("c.toml", config)]);
    assert!(
        err.contains("backends.prov.operations: the mapping does not offer \"remix\""),
        "{err}"
    );
}

#[tokio::test]
async fn a_backend_at_its_concurrency_limit_keeps_jobs_queued() {
    let (fake, shim) = start(index_of("runway"), "max_concurrent = 1");
    let a = shim.create("k", &json!({"prompt": "first"})).await;
    let b = shim.create("k", &json!({"prompt": "second"})).await;
    assert_eq!(shim.wait(&a, "k").await["status"], "completed");
    assert_eq!(shim.wait(&b, "k").await["status"], "completed");
    assert_eq!(accepted(&fake).await, 2);
}

#[tokio::test]
async fn a_secret_missing_from_the_environment_refuses_start_up_naming_key_and_variable() {
    let (mapping, fake_name, model) = BACKENDS[index_of("runway")];
    let fake = Fake::start(fake_name);
    let config =
        mapped_config(mapping, &fake, model, "").replace("SORA_SHIM_TEST_PROVIDER_KEY", "SORA_SHIM_TEST_WRONG_KEY");
    // The variable the config names is not set: start-up refuses, naming key and variable.
    let err = check_refuses(&[("c.toml", &config)]);
    assert!(
        err.contains("backends.prov.secrets.api_key: environment variable SORA_SHIM_TEST_WRONG_KEY is not set"),
        "{err}"
    );
}

#[test]
fn check_reports_a_broken_mapping_with_file_and_key() {
    let mapping = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/mappings/runway.toml"))
        .unwrap()
        .replace("job_id = '.response.id'", "job_id = '.response.id | ('");
    let config = "[backends.prov]\nkind = \"mapping\"\nmapping = \"broken.toml\"\nbase_url = \"http://127.0.0.1:9\"\n\
                  secrets = { api_key = \"HOME\" }\n[models.\"sora-2\"]\nbackend = \"prov\"\nsizes = [\"1280x720\"]\nseconds = [\"4\"]\n\
                  [api]\ndefault_size = \"1280x720\"\n";
    let err = check_refuses(&[("broken.toml", &mapping), ("c.toml", config)]);
    assert!(err.contains("broken.toml: create.job_id: cannot parse jq"), "{err}");
}

#[tokio::test]
async fn vertex_service_account_tokens_are_minted_cached_and_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = common::mint_vertex_key(dir.path());
    let fake = Fake::start_with_env("veo_vertex", &[("VERTEX_PUBLIC_KEY_PEM", public.to_str().unwrap())]);
    let service_account = json!({
        "type": "service_account",
        "client_email": "shim@test-project.iam.gserviceaccount.com",
        "private_key": std::fs::read_to_string(&key).unwrap(),
        "token_uri": format!("{}/token", fake.url),
    })
    .to_string();
    let config = mapped_config(
        "veo-vertex",
        &fake,
        "veo-3.0-generate-001",
        "options = { project = \"test-project\" }",
    )
    .replace("SORA_SHIM_TEST_PROVIDER_KEY", "SORA_SHIM_TEST_SERVICE_ACCOUNT");
    let shim = Shim::start_with_env(&config, &[("SORA_SHIM_TEST_SERVICE_ACCOUNT", &service_account)]);
    let a = shim
        .create(
            "k",
            &json!({"prompt": "vertex one", "size": "1280x720", "seconds": "4"}),
        )
        .await;
    let b = shim.create("k", &json!({"prompt": "vertex two"})).await;
    for id in [&a, &b] {
        let v = shim.wait(id, "k").await;
        assert_eq!(v["status"], "completed", "{v}\n{}", shim.log());
    }
    let video = shim.get(&format!("/v1/videos/{a}/content"), "k").await;
    assert_eq!(&video.body[4..8], b"ftyp");
    // The key never reaches the log.
    assert!(!shim.log().contains("PRIVATE KEY"));
    let stats = fake.stats().await;
    let token_calls = stats["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["path"] == "/token")
        .count();
    assert_eq!(token_calls, 1, "one token, cached for every later call: {stats}");

    // Without a bucket the video comes inline in the poll answer; one larger than max_response_mib fails the job
    // with a message naming the setting, instead of being polled forever.
    let small = Shim::start_with_env(
        &config.replace("[models.", "max_response_mib = 1\n[models."),
        &[("SORA_SHIM_TEST_SERVICE_ACCOUNT", &service_account)],
    );
    let c = small
        .create(
            "k",
            &json!({"prompt": "vertex too big", "size": "1280x720", "seconds": "4"}),
        )
        .await;
    let v = small.wait(&c, "k").await;
    assert_eq!(v["status"], "failed", "{v}\n{}", small.log());
    assert_eq!(v["error"]["code"], "backend_error");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("max_response_mib"),
        "{v}"
    );
}

/// Where each provider's create carries the reference image, as jq-like paths into the logged request.
fn image_in_create(mapping: &str, create: &Value) -> Option<String> {
    let s = |v: &Value| v.as_str().map(str::to_owned);
    match mapping {
        "openai" => s(&create["input_reference"]["image_url"]),
        "runway" => s(&create["promptImage"]),
        "replicate" => s(&create["input"]["image"]),
        "fal" => s(&create["image_url"]),
        "veo-gemini" => s(&create["instances"][0]["image"]["bytesBase64Encoded"]),
        "seedance" => create["content"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "image_url")
            .and_then(|c| s(&c["image_url"]["url"])),
        "comfyui" => s(&create["prompt"]["sora_shim_image"]["inputs"]["image"]),
        _ => None,
    }
}

/// An uploaded reference image reaches every provider in the form it takes: a data URI, inline base64, or a
/// provider upload step (ComfyUI's /upload/image) whose answer names the file in the workflow.
#[tokio::test]
async fn an_uploaded_image_reaches_each_provider_the_way_it_takes_images() {
    let mut png = Vec::new();
    image::RgbImage::from_pixel(1280, 720, image::Rgb([30, 200, 30]))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    for (which, (name, _, _)) in BACKENDS.iter().enumerate() {
        let (fake, shim) = start(which, "");
        let (ct, body) = common::multipart(&[
            ("prompt", None, "", b"a green wall comes alive"),
            ("size", None, "", b"1280x720"),
            ("input_reference", Some("ref.png"), "image/png", &png),
        ]);
        let r = shim.post_multipart("/v1/videos", "k", &ct, body).await;
        assert_eq!(r.status, StatusCode::OK, "{name}: {}", String::from_utf8_lossy(&r.body));
        let id = r.json()["id"].as_str().unwrap().to_owned();
        let done = shim.wait(&id, "k").await;
        assert_eq!(done["status"], "completed", "{name}: {done}\n{}", shim.log());
        let stats = fake.stats().await;
        let requests = stats["requests"].as_array().unwrap();
        let create = requests
            .iter()
            .rev()
            .find(|r| r["category"] == "create" && r["method"] == "POST")
            .unwrap_or_else(|| panic!("{name}: no create in {stats}"));
        let image = image_in_create(name, &create["body_json"])
            .unwrap_or_else(|| panic!("{name}: the create carries no image: {create}"));
        match *name {
            "veo-gemini" => assert!(image.starts_with("iVBORw0KGgo"), "{name}: not a base64 PNG"),
            "comfyui" => {
                assert_eq!(image, format!("sora-shim/{id}.png"), "{name}");
                let upload = requests
                    .iter()
                    .find(|r| r["path"] == "/upload/image")
                    .unwrap_or_else(|| panic!("{name}: no upload: {stats}"));
                assert_eq!(upload["body_json"]["image"]["size"], png.len(), "{name}: {upload}");
            }
            _ => assert!(
                image.starts_with("data:image/png;base64,iVBORw0KGgo"),
                "{name}: {image:.60}"
            ),
        }
    }
}
