//! Routes across backends, through the real binary and fake providers: a weighted split that converges and is
//! sticky per tenant, lineage for remix, failover when a backend is down (circuit open, then recovery through a
//! half-open probe), and the queue deadline for a job no backend takes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Fake, Shim};
use serde_json::json;

const SECRET: &str = "secrets = { api_key = \"SORA_SHIM_TEST_PROVIDER_KEY\" }";

fn runway_backend(name: &str, url: &str) -> String {
    format!(
        "[backends.{name}]\nkind = \"mapping\"\nmapping = \"runway\"\nbase_url = \"{url}\"\n{SECRET}\nmodel = \"gen4.5\"\n\
         timeout_secs = 5\n"
    )
}

fn worker(extra: &str) -> String {
    format!(
        "[server]\npoll_after_ms = 100\n[worker]\npoll_interval_ms = 50\nretry_base_ms = 50\nretry_max_ms = 400\n{extra}\n"
    )
}

/// Which backend each job is on, read from the shim's own SQLite file (the job record is where it is kept;
/// clients are never told).
fn backends_of_jobs(shim: &Shim) -> BTreeMap<String, String> {
    let db = rusqlite::Connection::open_with_flags(
        shim.data_dir.join("sora-shim.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = db.prepare("SELECT id, backend FROM jobs").unwrap();
    stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The value of the sample of `name` whose labels include all of `labels`, from a /metrics text.
fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|want| l.contains(want)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn accepted(fake: &Fake) -> usize {
    fake.stats().await["jobs"].as_object().unwrap().len()
}

#[tokio::test]
async fn a_weighted_split_converges_and_each_tenant_stays_on_its_backend() {
    // Nothing listens on port 1: the jobs are never sent anywhere, only routed.
    let config = format!(
        "{}{}{}[models.\"sora-2\"]\ntargets = [{{ backend = \"old\", weight = 90 }}, {{ backend = \"new\", weight = 10 }}]\n\
         sizes = [\"720x1280\"]\nseconds = [\"4\"]\n[api]\ndefault_size = \"720x1280\"\n",
        worker(""),
        runway_backend("old", "http://127.0.0.1:1"),
        runway_backend("new", "http://127.0.0.1:1"),
    );
    let shim = Shim::start_with(&config);
    let mut by_tenant = BTreeMap::new();
    for i in 0..2000 {
        let key = format!("tenant-{i}");
        by_tenant.insert(shim.create(&key, &json!({"prompt": "split"})).await, key);
    }
    let placed = backends_of_jobs(&shim);
    let on_new = placed.values().filter(|b| *b == "new").count();
    assert!(
        (140..=260).contains(&on_new),
        "{on_new} of 2000 creates on the 10% target (10% ± 3% is 140..=260)"
    );
    // Stickiness: more creates from the same tenants land where their first one did.
    for (first_id, key) in by_tenant.iter().take(50) {
        let again = shim.create(key, &json!({"prompt": "again"})).await;
        let placed = backends_of_jobs(&shim);
        assert_eq!(
            placed[&again], placed[first_id],
            "{key} moved while the weights were unchanged"
        );
    }
}

#[tokio::test]
async fn a_dead_backend_opens_its_circuit_jobs_fail_over_and_it_recovers_through_a_probe() {
    let primary = Fake::start("runway");
    let spare = Fake::start("runway");
    primary.faults(json!({"create": {"status": 503, "times": 1000}})).await;
    let config = format!(
        "{}[health]\nwindow_secs = 60\nmin_requests = 2\nfailure_rate = 0.5\nopen_secs = 2\n{}{}\
         [models.\"sora-2\"]\nbackend = \"primary\"\nfallback = [\"spare\"]\nsizes = [\"1280x720\"]\nseconds = [\"4\"]\n\
         [api]\ndefault_size = \"1280x720\"\n",
        worker(""),
        runway_backend("primary", &primary.url),
        runway_backend("spare", &spare.url),
    );
    let shim = Shim::start_with(&config);

    // Two creates refused with 503 (nothing accepted): each fails over and completes on the spare.
    for prompt in ["one", "two"] {
        let id = shim.create("k", &json!({"prompt": prompt})).await;
        assert_eq!(shim.wait(&id, "k").await["status"], "completed", "{}", shim.log());
        assert_eq!(backends_of_jobs(&shim)[&id], "spare");
    }
    assert_eq!(accepted(&primary).await, 0);
    let metrics = shim.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "sora_shim_failovers_total",
            &["from=\"primary\"", "to=\"spare\""]
        ),
        Some(2.0)
    );
    assert_eq!(
        metric(&metrics, "sora_shim_circuit_open", &["backend=\"primary\""]),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "sora_shim_jobs_finished_total",
            &["backend=\"spare\"", "outcome=\"completed\"", "role=\"primary\""]
        ),
        Some(2.0)
    );
    let tried = primary.stats().await["creates"].as_u64().unwrap();
    assert_eq!(tried, 2, "each job tried the primary once before failing over");

    // The circuit is open: the next job goes straight to the spare, and the primary sees no create.
    let id = shim.create("k", &json!({"prompt": "three"})).await;
    assert_eq!(shim.wait(&id, "k").await["status"], "completed");
    assert_eq!(backends_of_jobs(&shim)[&id], "spare");
    assert_eq!(primary.stats().await["creates"].as_u64().unwrap(), tried);

    // The primary recovers; after open_secs a probe goes through, succeeds, and it serves again.
    primary.faults(json!({})).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let id = shim.create("k", &json!({"prompt": "four"})).await;
    assert_eq!(shim.wait(&id, "k").await["status"], "completed", "{}", shim.log());
    assert_eq!(backends_of_jobs(&shim)[&id], "primary", "{}", shim.log());
    assert_eq!(accepted(&primary).await, 1);
    assert_eq!(accepted(&spare).await, 3, "one generation per video, never two");
}

#[tokio::test]
async fn a_remix_goes_to_the_backend_that_made_its_source() {
    let a = Fake::start("openai_videos");
    let b = Fake::start("openai_videos");
    for fake in [&a, &b] {
        fake.faults(json!({"openai_remix": true})).await;
    }
    let openai = |name: &str, url: &str| {
        format!(
            "[backends.{name}]\nkind = \"mapping\"\nmapping = \"openai\"\nbase_url = \"{url}\"\n{SECRET}\n\
             model = \"wan-2.2\"\ntimeout_secs = 5\n"
        )
    };
    let config = format!(
        "{}{}{}[models.\"sora-2\"]\ntargets = [{{ backend = \"a\", weight = 50 }}, {{ backend = \"b\", weight = 50 }}]\n\
         sticky = \"job\"\nsizes = [\"1280x720\"]\nseconds = [\"4\"]\n[api]\ndefault_size = \"1280x720\"\n",
        worker(""),
        openai("a", &a.url),
        openai("b", &b.url),
    );
    let shim = Shim::start_with(&config);
    // Six sources at least, and more until both backends made some: each job is placed 50/50 on its own, so a
    // fixed six all landed on one backend in one run of 32; forty all on one happens once in 2^39.
    let mut sources = Vec::new();
    let both = |placed: &std::collections::BTreeMap<String, String>| {
        placed.values().any(|b| b == "a") && placed.values().any(|b| b == "b")
    };
    for i in 0..40 {
        let id = shim.create("k", &json!({"prompt": format!("source {i}")})).await;
        assert_eq!(shim.wait(&id, "k").await["status"], "completed");
        sources.push(id);
        if sources.len() >= 6 && both(&backends_of_jobs(&shim)) {
            break;
        }
    }
    let placed = backends_of_jobs(&shim);
    assert!(both(&placed), "sticky = job spreads jobs: {placed:?}");
    for source in &sources {
        let r = shim
            .post_json(&format!("/v1/videos/{source}/remix"), "k", &json!({"prompt": "again"}))
            .await;
        let remix = r.json()["id"].as_str().unwrap().to_owned();
        assert_eq!(shim.wait(&remix, "k").await["status"], "completed", "{}", shim.log());
        let placed = backends_of_jobs(&shim);
        assert_eq!(placed[&remix], placed[source], "the remix left its source's backend");
    }
}

#[tokio::test]
async fn a_job_no_backend_takes_fails_at_the_queue_deadline() {
    let config = format!(
        "{}[health]\nopen_secs = 1\n{}[models.\"sora-2\"]\nbackend = \"down\"\nsizes = [\"1280x720\"]\nseconds = [\"4\"]\n\
         [api]\ndefault_size = \"1280x720\"\n",
        worker("queue_deadline_secs = 2"),
        runway_backend("down", "http://127.0.0.1:1"),
    );
    let shim = Shim::start_with(&config);
    let started = Instant::now();
    let id = shim.create("k", &json!({"prompt": "nobody home"})).await;
    let v = shim.wait(&id, "k").await;
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "backend_unavailable", "{v}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "failed before its deadline"
    );
}

#[tokio::test]
async fn a_job_a_backend_never_finishes_fails_at_the_job_deadline() {
    let fake = Fake::start("runway");
    let config = format!(
        "{}{}[models.\"sora-2\"]\nbackend = \"slow\"\nsizes = [\"1280x720\"]\nseconds = [\"4\"]\n\
         [api]\ndefault_size = \"1280x720\"\n",
        worker("job_deadline_secs = 2"),
        runway_backend("slow", &fake.url),
    );
    let shim = Shim::start_with(&config);
    // The fake keeps this job running for 5000 polls.
    let id = shim.create("k", &json!({"prompt": "forever [fake:steps=5000]"})).await;
    let v = shim.wait(&id, "k").await;
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "backend_timeout", "{v}");
    assert_eq!(accepted(&fake).await, 1);
}

fn split_config(weights: (u32, u32), extra_backend: &str) -> String {
    format!(
        "{}{}{}{extra_backend}[models.\"sora-2\"]\ntargets = [{{ backend = \"a\", weight = {} }}, {{ backend = \"b\", weight = {} }}]\n\
         sizes = [\"720x1280\"]\nseconds = [\"4\"]\n[api]\ndefault_size = \"720x1280\"\n",
        worker(""),
        runway_backend("a", "http://127.0.0.1:1"),
        runway_backend("b", "http://127.0.0.1:1"),
        weights.0,
        weights.1,
    )
}

/// Creates from fresh tenants until one lands on `want` (the reload has been applied), or gives up.
async fn until_new_jobs_land_on(shim: &Shim, want: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut i = 0;
    while Instant::now() < deadline {
        i += 1;
        let id = shim
            .create(&format!("probe-{want}-{i}"), &json!({"prompt": "where?"}))
            .await;
        if backends_of_jobs(shim)[&id] == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test]
async fn sighup_applies_new_weights_and_an_invalid_file_keeps_the_running_config() {
    let shim = Shim::start_with(&split_config((100, 0), ""));
    for i in 0..20 {
        let id = shim.create(&format!("t{i}"), &json!({"prompt": "before"})).await;
        assert_eq!(backends_of_jobs(&shim)[&id], "a");
    }
    std::fs::write(shim.config_path(), split_config((0, 100), "")).unwrap();
    shim.signal("HUP");
    assert!(
        until_new_jobs_land_on(&shim, "b").await,
        "weights not applied:\n{}",
        shim.log()
    );
    for i in 0..20 {
        let id = shim.create(&format!("t{i}"), &json!({"prompt": "after"})).await;
        assert_eq!(backends_of_jobs(&shim)[&id], "b", "the reload moved every tenant");
    }

    // A file naming a backend that does not exist is rejected, with the reason; the running routes stay.
    std::fs::write(
        shim.config_path(),
        split_config((0, 100), "").replace("backend = \"b\", weight", "backend = \"nope\", weight"),
    )
    .unwrap();
    shim.signal("HUP");
    common::eventually(Duration::from_secs(10), async || {
        shim.log().contains("config reload rejected")
    })
    .await;
    let log = shim.log();
    assert!(log.contains("config reload rejected"), "{log}");
    assert!(log.contains("no backend named \"nope\""), "{log}");
    let id = shim.create("t0", &json!({"prompt": "still b"})).await;
    assert_eq!(backends_of_jobs(&shim)[&id], "b");
}

#[tokio::test]
async fn reloads_under_steady_load_fail_no_request_and_in_flight_jobs_keep_their_backend() {
    let fake = Fake::start("runway");
    let with_fake = runway_backend("slow", &fake.url);
    // The model also routes nothing to `slow` once it is removed; a job already there must still finish.
    let start = split_config((100, 0), &with_fake).replace(
        "targets = [{ backend = \"a\", weight = 100 }, { backend = \"b\", weight = 0 }]",
        "targets = [{ backend = \"slow\", weight = 100 }, { backend = \"a\", weight = 0 }, { backend = \"b\", weight = 0 }]",
    );
    let shim = std::sync::Arc::new(Shim::start_with(&start));
    let running = shim
        .create("owner", &json!({"prompt": "in flight [fake:steps=40]"}))
        .await;
    assert_eq!(backends_of_jobs(&shim)[&running], "slow");

    // `slow` leaves the file; then four clients create steadily while it is rewritten again and again.
    std::fs::write(shim.config_path(), split_config((30, 70), "")).unwrap();
    shim.signal("HUP");
    assert!(until_new_jobs_land_on(&shim, "b").await, "{}", shim.log());
    let on_slow = |shim: &Shim| backends_of_jobs(shim).values().filter(|b| *b == "slow").count();
    let slow_before_load = on_slow(&shim);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (shim, stop) = (std::sync::Arc::clone(&shim), std::sync::Arc::clone(&stop));
        clients.push(tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = shim
                    .post_json("/v1/videos", &format!("load-{c}-{n}"), &json!({"prompt": "steady"}))
                    .await;
                assert_eq!(r.status, hyper::StatusCode::OK, "{}", String::from_utf8_lossy(&r.body));
                n += 1;
            }
            n
        }));
    }
    for round in 0..10 {
        let weights = if round % 2 == 0 { (30, 70) } else { (70, 30) };
        std::fs::write(shim.config_path(), split_config(weights, "")).unwrap();
        shim.signal("HUP");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut total = 0;
    for c in clients {
        total += c.await.unwrap();
    }
    assert!(total > 20, "only {total} creates during the reloads");
    let log = shim.log();
    assert!(
        log.contains("backend \"slow\" removed: it keeps serving its unfinished jobs"),
        "{log}"
    );
    let done = shim.wait(&running, "owner").await;
    assert_eq!(done["status"], "completed", "{done}\n{log}");
    assert_eq!(backends_of_jobs(&shim)[&running], "slow");
    assert_eq!(on_slow(&shim), slow_before_load, "a removed backend got new jobs");
    assert_eq!(accepted(&fake).await, slow_before_load, "one generation per job on it");
}

#[tokio::test]
async fn an_edited_config_file_is_picked_up_without_a_signal() {
    let shim = Shim::start_with(&split_config((100, 0), ""));
    let id = shim.create("t", &json!({"prompt": "before"})).await;
    assert_eq!(backends_of_jobs(&shim)[&id], "a");
    // Sections bound at start-up are reported, not applied.
    let edited =
        split_config((0, 100), "").replace("poll_after_ms = 100", "poll_after_ms = 100\nmax_body_bytes = 1048576");
    std::fs::write(shim.config_path(), edited).unwrap();
    assert!(
        until_new_jobs_land_on(&shim, "b").await,
        "the edit was not applied:\n{}",
        shim.log()
    );
    assert!(shim.log().contains("trigger=\"file changed\""), "{}", shim.log());
    assert!(
        shim.log().contains("[server] changed: it applies at the next restart"),
        "{}",
        shim.log()
    );
    // Backends whose settings did not change (their mappings, secrets and options compared) are not reported.
    assert!(!shim.log().contains("backend \"a\" changed"), "{}", shim.log());
    // One that did is, and keeps running as it started.
    let retimed = split_config((0, 100), "").replace(
        "[backends.b]\nkind = \"mapping\"\nmapping = \"runway\"\nbase_url = \"http://127.0.0.1:1\"",
        "[backends.b]\nkind = \"mapping\"\nmapping = \"runway\"\nbase_url = \"http://127.0.0.1:2\"",
    );
    std::fs::write(shim.config_path(), retimed).unwrap();
    let noted = common::eventually(Duration::from_secs(10), async || {
        shim.log()
            .contains("backend \"b\" changed: its jobs keep the running settings until a restart")
    })
    .await;
    assert!(noted, "{}", shim.log());
    assert!(!shim.log().contains("backend \"a\" changed"), "{}", shim.log());
}

#[tokio::test]
async fn a_target_can_carry_its_own_provider_model_and_options() {
    let fake = Fake::start("openai_videos");
    let config = format!(
        "{}[backends.a]\nkind = \"mapping\"\nmapping = \"openai\"\nbase_url = \"{}\"\n{SECRET}\nmodel = \"wan-2.2\"\n\
         timeout_secs = 5\n[models.\"sora-2\"]\ntargets = [{{ backend = \"a\", weight = 50 }}, \
         {{ backend = \"a\", weight = 50, model = \"wan-2.2-fast\" }}]\nsticky = \"job\"\nsizes = [\"1280x720\"]\n\
         seconds = [\"4\"]\n[api]\ndefault_size = \"1280x720\"\n",
        worker(""),
        fake.url,
    );
    let shim = Shim::start_with(&config);
    for i in 0..12 {
        let id = shim.create("k", &json!({"prompt": format!("which model {i}")})).await;
        assert_eq!(shim.wait(&id, "k").await["status"], "completed");
    }
    let stats = fake.stats().await;
    let models: std::collections::BTreeSet<String> = stats["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["category"] == "create")
        .map(|r| r["body_json"]["model"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        models.into_iter().collect::<Vec<_>>(),
        vec!["wan-2.2", "wan-2.2-fast"],
        "both targets' provider models were used"
    );
}

/// `worker.max_active_steps` is per backend: with one turn each, a backend whose polls hang holds only its own
/// turn, and a job on another backend finishes meanwhile.
#[tokio::test]
async fn a_backend_whose_calls_hang_does_not_hold_another_backends_turns() {
    let slow = Fake::start("runway");
    let quick = Fake::start("runway");
    slow.faults(json!({"poll": {"delay_ms": 4000}})).await;
    let config = format!(
        "{}{}{}[models.\"sora-2\"]\nbackend = \"slow\"\nsizes = [\"1280x720\"]\nseconds = [\"4\"]\n\
         [models.\"sora-2-pro\"]\nbackend = \"quick\"\nsizes = [\"1280x720\"]\nseconds = [\"4\"]\n\
         [api]\ndefault_size = \"1280x720\"\n",
        worker("max_active_steps = 1"),
        runway_backend("slow", &slow.url),
        runway_backend("quick", &quick.url),
    );
    let shim = Shim::start_with(&config);
    let stuck = shim.create("k", &json!({"prompt": "stuck", "model": "sora-2"})).await;
    let polled = common::eventually(Duration::from_secs(10), async || slow.stats().await["polls"] != 0).await;
    assert!(polled, "the slow backend was never polled");
    let other = shim
        .create("k", &json!({"prompt": "other", "model": "sora-2-pro"}))
        .await;
    assert_eq!(shim.wait(&other, "k").await["status"], "completed");
    // Sharing one turn, the quick job's five steps would each have waited out a hanging poll first.
    let slow_polls = slow.stats().await["polls"].as_u64().unwrap();
    assert!(
        slow_polls <= 2,
        "the quick job waited behind {slow_polls} hanging polls"
    );
    let status = shim.get(&format!("/v1/videos/{stuck}"), "k").await.json()["status"].clone();
    assert_ne!(
        status, "completed",
        "the slow backend's job is still held by its hanging poll"
    );
}
