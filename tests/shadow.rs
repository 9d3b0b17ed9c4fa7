//! Shadow mode through the real binary and fake providers: sampled copies on a candidate backend that clients
//! never see, a candidate that fails or is slow changing nothing for the client, the daily cap, and
//! `sora-shim shadow report` figures matching what the fakes were scripted to do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Fake, Shim};
use serde_json::{Value, json};

const SECRET: &str = "secrets = { api_key = \"SORA_SHIM_TEST_PROVIDER_KEY\" }";

fn config(primary: &Fake, candidate: &Fake, shadow: &str) -> String {
    let backend = |name: &str, url: &str, price: f64| {
        format!(
            "[backends.{name}]\nkind = \"mapping\"\nmapping = \"runway\"\nbase_url = \"{url}\"\n{SECRET}\nmodel = \"gen4.5\"\n\
             timeout_secs = 5\nprice_per_second = {price}\n"
        )
    };
    format!(
        "[server]\npoll_after_ms = 100\n[worker]\npoll_interval_ms = 50\nretry_base_ms = 50\nretry_max_ms = 400\n{}{}\
         [models.\"sora-2\"]\nbackend = \"primary\"\n{shadow}\nsizes = [\"1280x720\"]\nseconds = [\"4\", \"8\"]\n\
         [api]\ndefault_size = \"1280x720\"\n",
        backend("primary", &primary.url, 0.5),
        backend("candidate", &candidate.url, 0.25),
    )
}

async fn accepted(fake: &Fake) -> usize {
    fake.stats().await["jobs"].as_object().unwrap().len()
}

/// Shadow jobs in the shim's SQLite file: (id, tenant, state, shadow_of).
fn shadow_rows(shim: &Shim) -> Vec<(String, String, String, String)> {
    let db = rusqlite::Connection::open_with_flags(
        shim.data_dir.join("sora-shim.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = db
        .prepare("SELECT id, tenant, state, shadow_of FROM jobs WHERE shadow_of IS NOT NULL")
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Waits until every shadow job is finished.
async fn shadows_finish(shim: &Shim, expected: usize) -> Vec<(String, String, String, String)> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let rows = shadow_rows(shim);
        if rows.len() == expected && rows.iter().all(|r| r.2 == "completed" || r.2 == "failed") {
            return rows;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "shadow jobs did not finish: {rows:?}\n{}",
            shim.log()
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The first comparison of the report once `ready` holds for it (copies not made reach the store within a second).
fn report_when(shim: &Shim, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let stats = report(shim);
        if stats.get(0).is_some_and(&ready) {
            return stats[0].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the report never got there: {stats}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn report(shim: &Shim) -> Value {
    let (config, data) = (shim.config_path(), shim.data_dir.clone());
    let args = [
        "shadow",
        "report",
        "--json",
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let out = common::cli(&args, None, &[("SORA_SHIM_TEST_PROVIDER_KEY", "x")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn shadow_copies_are_made_off_the_client_path_and_never_visible() {
    let (primary, candidate) = (Fake::start("runway"), Fake::start("runway"));
    let shim = Shim::start_with(&config(
        &primary,
        &candidate,
        "shadow = [{ backend = \"candidate\", sample = 1.0 }]",
    ));
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(shim.create("k", &json!({"prompt": format!("mirrored {i}")})).await);
    }
    for id in &ids {
        assert_eq!(shim.wait(id, "k").await["status"], "completed");
    }
    let rows = shadows_finish(&shim, 3).await;
    for (shadow_id, tenant, state, of) in &rows {
        assert_eq!(tenant, "shadow");
        assert_eq!(state, "completed");
        assert!(ids.contains(of));
        // Not readable through the API, by the client's key or any other.
        let r = shim.get(&format!("/v1/videos/{shadow_id}"), "k").await;
        assert_eq!(r.status, hyper::StatusCode::NOT_FOUND);
    }
    let listed = shim.get("/v1/videos?limit=100", "k").await.json();
    assert_eq!(
        listed["data"].as_array().unwrap().len(),
        3,
        "only the client's own videos are listed"
    );
    assert_eq!(accepted(&primary).await, 3);
    assert_eq!(accepted(&candidate).await, 3);

    let stats = report(&shim);
    // No admin key configured: the admin API refuses everyone, tenant keys included.
    assert_eq!(
        shim.get("/admin/shadow/report", "k").await.status,
        hyper::StatusCode::UNAUTHORIZED
    );
    let s = &stats[0];
    assert_eq!(
        (s["primary"].as_str(), s["shadow"].as_str()),
        (Some("primary"), Some("candidate"))
    );
    assert_eq!(s["pairs"], 3);
    assert_eq!(s["primary_completed"], 3);
    assert_eq!(s["shadow_completed"], 3);
    assert_eq!(s["moderation_disagreements"], 0);
    // Runway's fake renders 1280:720 for 4 s: 4 s × 0.5 and 4 s × 0.25 per video.
    assert_eq!(s["primary_video"]["resolution"], "1280x720");
    let cost = |v: &Value| (v.as_f64().unwrap() * 100.0).round() / 100.0;
    assert_eq!(cost(&s["primary_cost_per_video"]), 2.0);
    assert_eq!(cost(&s["shadow_cost_per_video"]), 1.0);
}

#[tokio::test]
async fn a_failing_candidate_changes_nothing_for_clients_and_the_report_says_how_it_failed() {
    let (primary, candidate) = (Fake::start("runway"), Fake::start("runway"));
    // The candidate moderates everything, and answers its first create with a 500 after accepting it.
    candidate
        .faults(json!({"outcome": "moderated", "create": {"status": 500, "after_accept": true, "times": 1}}))
        .await;
    let shim = Shim::start_with_env(
        &config(
            &primary,
            &candidate,
            "shadow = [{ backend = \"candidate\", sample = 1.0 }]",
        ),
        &[("SORA_SHIM_ADMIN_KEY", "admin-secret")],
    );
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(shim.create("k", &json!({"prompt": format!("kept {i}")})).await);
    }
    for id in &ids {
        let v = shim.wait(id, "k").await;
        assert_eq!(v["status"], "completed", "the primary is untouched by its shadow: {v}");
    }
    let rows = shadows_finish(&shim, 4).await;
    assert!(rows.iter().all(|r| r.2 == "failed"), "{rows:?}");
    let s = &report(&shim)[0];
    assert_eq!(s["pairs"], 4);
    assert_eq!(s["primary_completed"], 4);
    assert_eq!(s["shadow_completed"], 0);
    assert_eq!(s["moderation_disagreements"], 3, "{s}");
    assert_eq!(s["shadow_errors"]["moderation_blocked"], 3, "{s}");
    assert_eq!(s["shadow_errors"]["submission_outcome_unknown"], 1, "{s}");

    // The same report over the admin API, for the admin token only.
    let r = shim.get("/admin/shadow/report", "not-the-token").await;
    assert_eq!(r.status, hyper::StatusCode::UNAUTHORIZED);
    let r = shim.get("/admin/shadow/report", "admin-secret").await;
    assert_eq!(r.status, hyper::StatusCode::OK);
    let over_http = r.json();
    assert_eq!(over_http["object"], "shadow.report");
    assert_eq!(&over_http["data"][0], s);
}

#[tokio::test]
async fn sampling_and_the_daily_cap_limit_shadow_work() {
    let (primary, candidate) = (Fake::start("runway"), Fake::start("runway"));
    let shim = Shim::start_with(&config(
        &primary,
        &candidate,
        "shadow = [{ backend = \"candidate\", sample = 1.0 }]\nshadow_daily_cap = 2",
    ));
    for i in 0..5 {
        let id = shim.create("k", &json!({"prompt": format!("capped {i}")})).await;
        assert_eq!(shim.wait(&id, "k").await["status"], "completed");
    }
    assert_eq!(shadows_finish(&shim, 2).await.len(), 2);
    // The report says that five creates were sampled and two compared: an effective sample of 0.4, not 1.0.
    let s = report_when(&shim, |s| s["sampled"] == 5);
    assert_eq!(s["pairs"], 2);
    assert_eq!(s["missed"], json!({"capped": 3}));
    assert_eq!(s["sample"], 1.0);
    assert_eq!(s["effective_sample"], 0.4);

    // A 25% sample over 80 videos mirrors about 20: never all, never none.
    let (primary, candidate) = (Fake::start("runway"), Fake::start("runway"));
    let shim = Shim::start_with(&config(
        &primary,
        &candidate,
        "shadow = [{ backend = \"candidate\", sample = 0.25 }]",
    ));
    for i in 0..80 {
        shim.create(&format!("t{i}"), &json!({"prompt": "sampled"})).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mirrored = shadow_rows(&shim).len();
    // Binomial(80, 0.25): mean 20, sd 3.9; 5..=35 is beyond ±3.8 sd.
    assert!((5..=35).contains(&mirrored), "{mirrored} of 80 mirrored at 25%");
}

/// With a queue of one copy, many creates at once overflow it: every copy the sample called for is either made or
/// counted as dropped, across a restart, and the report's effective sample says how many were really compared.
#[tokio::test]
async fn copies_dropped_by_a_full_queue_are_counted_and_lower_the_effective_sample() {
    let (primary, candidate) = (Fake::start("runway"), Fake::start("runway"));
    let shadow = "shadow = [{ backend = \"candidate\", sample = 1.0 }]";
    let config = config(&primary, &candidate, shadow).replace("[worker]\n", "[worker]\nshadow_queue = 1\n");
    let shim = Shim::start_with(&config);
    const CREATES: usize = 40;
    let creates = (0..CREATES).map(|i| {
        let shim = &shim;
        async move { shim.create("k", &json!({"prompt": format!("burst {i}")})).await }
    });
    let ids = futures_util::future::join_all(creates).await;
    assert_eq!(ids.len(), CREATES);

    let s = report_when(&shim, |s| s["sampled"] == CREATES);
    let made = s["pairs"].as_u64().unwrap();
    let dropped = s["missed"]["dropped"].as_u64().unwrap_or(0);
    assert_eq!(made + dropped, CREATES as u64, "{s}");
    assert_eq!(shadow_rows(&shim).len() as u64, made);
    let effective = s["effective_sample"].as_f64().unwrap();
    assert!((effective - made as f64 / CREATES as f64).abs() < 1e-9, "{s}");
    if dropped > 0 {
        let text = common::cli(
            &[
                "shadow",
                "report",
                "--config",
                shim.config_path().to_str().unwrap(),
                "--data-dir",
                shim.data_dir.to_str().unwrap(),
            ],
            None,
            &[("SORA_SHIM_TEST_PROVIDER_KEY", "x")],
        );
        let text = String::from_utf8_lossy(&text.stdout).into_owned();
        assert!(
            text.contains(&format!(
                "copies not made: {dropped} of {CREATES} sampled (dropped ×{dropped})"
            )),
            "{text}"
        );
    }

    // The totals are the store's: a restart keeps them.
    let shim = shim.restart();
    let again = report(&shim);
    assert_eq!(again[0]["sampled"], CREATES, "{again}");
}
