//! Several replicas of the real binary on loopback sharing one PostgreSQL (started by the test), one
//! S3-compatible server (moto) and one fake provider (Runway's protocol): what a client sees through any of
//! them, what the provider sees from all of them together, and what survives a kill -9 or a rolling restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::moto::Moto;
use common::postgres::Postgres;
use common::{Fake, Shim, eventually, mapped_config};
use serde_json::{Value, json};

/// One PostgreSQL, one moto, one fake provider, and the config every replica runs.
struct Cluster {
    _pg: Postgres,
    _moto: Moto,
    fake: Fake,
    config: String,
    env: Vec<(String, String)>,
}

impl Cluster {
    /// Through Runway's fake; `extra` goes into the backend's table (`max_concurrent = 2`, …).
    async fn start(extra: &str) -> Option<Cluster> {
        Cluster::start_on(("runway", "runway", "gen4.5"), &[], |_| extra.to_owned()).await
    }

    /// Through `(mapping, fake, provider model)`, the fake started with `fake_env`; `extra` makes the backend
    /// table's additions from the fake.
    async fn start_on(
        (mapping, fake_name, model): (&str, &str, &str),
        fake_env: &[(&str, &str)],
        extra: impl FnOnce(&Fake) -> String,
    ) -> Option<Cluster> {
        let pg = Postgres::start()?;
        let moto = Moto::start()?;
        moto.bucket("videos");
        let fake = Fake::start_with_env(fake_name, fake_env);
        let config = format!(
            "{}\n[store]\nkind = \"postgres\"\nlease_secs = 3\n[assets]\nkind = \"s3\"\nbucket = \"videos\"\n\
             region = \"us-east-1\"\nendpoint = \"{}\"\n",
            mapped_config(mapping, &fake, model, &extra(&fake)),
            moto.url
        );
        let env = vec![
            ("SORA_SHIM_DATABASE_URL".to_owned(), pg.database()),
            ("AWS_ACCESS_KEY_ID".to_owned(), "testing".to_owned()),
            ("AWS_SECRET_ACCESS_KEY".to_owned(), "testing-secret".to_owned()),
            ("AWS_DEFAULT_REGION".to_owned(), "us-east-1".to_owned()),
        ];
        Some(Cluster {
            _pg: pg,
            _moto: moto,
            fake,
            config,
            env,
        })
    }

    fn replica(&self) -> Shim {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Shim::start_with_env(&self.config, &env)
    }

    fn replica_listening(&self, addr: &str) -> Shim {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        Shim::start_listening(&self.config, &env, addr)
    }

    fn replicas(&self, n: usize) -> Vec<Shim> {
        (0..n).map(|_| self.replica()).collect()
    }

    /// One SQL query against the replicas' database (psql's unaligned output).
    fn sql(&self, query: &str) -> String {
        let url = &self.env.iter().find(|(k, _)| k == "SORA_SHIM_DATABASE_URL").unwrap().1;
        let db = url.rsplit('/').next().unwrap().split('?').next().unwrap();
        self._pg.psql(db, query).unwrap().trim().to_owned()
    }
}

async fn status(shim: &Shim, id: &str) -> Value {
    let r = shim.get(&format!("/v1/videos/{id}"), "k").await;
    // The replica's log with it: an error answer says only that there was one (seen once, under a full CI load).
    assert_eq!(r.status, 200, "{}\n{}", String::from_utf8_lossy(&r.body), shim.log());
    r.json()
}

/// Waits (through `shim`) until the video has finished; returns it.
async fn finished(shim: &Shim, id: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let v = status(shim, id).await;
        if v["status"] == "completed" || v["status"] == "failed" {
            return v;
        }
        assert!(Instant::now() < deadline, "{id} still {}:\n{}", v["status"], shim.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_serve_one_set_of_videos() {
    let Some(cluster) = Cluster::start("").await else {
        return;
    };
    let r = cluster.replicas(3);

    // Created on one, seen at once on the others (no replica answers from a stale copy).
    let id = r[0]
        .create("k", &json!({"prompt": "three replicas [fake:steps=20]"}))
        .await;
    for shim in &r[1..] {
        assert_eq!(status(shim, &id).await["id"], id);
    }
    let mut last_progress = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        // Polled round the replicas, as behind a load balancer: progress never goes back.
        for shim in &r {
            let v = status(shim, &id).await;
            let progress = v["progress"].as_i64().unwrap();
            assert!(
                progress >= last_progress,
                "progress went back from {last_progress} to {progress}"
            );
            last_progress = progress;
        }
        let v = status(&r[2], &id).await;
        if v["status"] == "completed" {
            break v;
        }
        assert!(Instant::now() < deadline, "{v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(done["progress"], 100);
    // The video is in the shared storage: any replica serves it.
    for shim in &r {
        let content = shim.get(&format!("/v1/videos/{id}/content"), "k").await;
        assert_eq!(content.status, 200);
        assert!(content.body.len() > 1000);
    }
    let listed = r[1].get("/v1/videos?limit=10", "k").await.json();
    assert_eq!(listed["data"][0]["id"], id);

    // The same Idempotency-Key on two replicas at the same instant: one video.
    for round in 0..5 {
        let key = format!("same-key-{round}");
        let body = json!({"prompt": format!("once [fake:steps=2] {round}")}).to_string();
        let headers = [("content-type", "application/json"), ("idempotency-key", key.as_str())];
        let (x, y) = tokio::join!(
            r[0].call(hyper::Method::POST, "/v1/videos", Some("k"), &headers, body.clone()),
            r[1].call(hyper::Method::POST, "/v1/videos", Some("k"), &headers, body.clone())
        );
        assert_eq!((x.status.as_u16(), y.status.as_u16()), (200, 200));
        assert_eq!(x.json()["id"], y.json()["id"], "round {round}");
    }

    // Deleted on one: gone on the others at once.
    let r1 = r[1]
        .call(hyper::Method::DELETE, &format!("/v1/videos/{id}"), Some("k"), &[], "")
        .await;
    assert_eq!(r1.status, 200);
    for shim in [&r[0], &r[2]] {
        assert_eq!(shim.get(&format!("/v1/videos/{id}"), "k").await.status, 404);
    }
    let stats = cluster.fake.stats().await;
    assert_eq!(stats["creates"], 6, "one create per video: {stats}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_concurrent_holds_across_replicas() {
    let Some(cluster) = Cluster::start("max_concurrent = 2").await else {
        return;
    };
    let r = cluster.replicas(3);
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            r[i % 3]
                .create("k", &json!({"prompt": format!("slot {i} [fake:steps=4]")}))
                .await,
        );
    }
    for id in &ids {
        let v = finished(&r[0], id, Duration::from_secs(120)).await;
        assert_eq!(v["status"], "completed", "{v}");
    }
    let stats = cluster.fake.stats().await;
    assert_eq!(stats["creates"], 20, "{stats}");
    let peak = stats["peak_unfinished"].as_u64().unwrap();
    assert!(
        peak <= 2,
        "the provider held {peak} jobs at once with max_concurrent = 2"
    );
    assert_eq!(peak, 2, "the slots were used");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_replicas_jobs_move_to_the_survivors() {
    let Some(cluster) = Cluster::start("").await else {
        return;
    };
    let mut r = cluster.replicas(3);
    // Long enough at the provider to be mid-flight when their replica dies (200 polls of 50 ms).
    let mut running = Vec::new();
    for i in 0..4 {
        running.push(
            r[0].create("k", &json!({"prompt": format!("orphan {i} [fake:steps=200]")}))
                .await,
        );
    }
    for id in &running {
        let seen = eventually(Duration::from_secs(30), async || {
            status(&r[1], id).await["status"] == "in_progress"
        })
        .await;
        assert!(seen, "{id} never ran");
    }
    // One more caught in `submitting`: the provider holds its create for 3 s.
    cluster
        .fake
        .faults(json!({"create": {"delay_ms": 3000, "times": 1}}))
        .await;
    let submitting = r[0].create("k", &json!({"prompt": "in flight [fake:steps=3]"})).await;
    assert!(
        eventually(Duration::from_secs(10), async || cluster.fake.stats().await["creates"]
            == 5)
        .await
    );
    let killed = Instant::now();
    r[0].kill9();

    let mut taken_over = None;
    for id in &running {
        let v = finished(&r[2], id, Duration::from_secs(90)).await;
        assert_eq!(v["status"], "completed", "{v}\n{}\n{}", r[1].log(), r[2].log());
        taken_over.get_or_insert(killed.elapsed());
    }
    let v = finished(&r[1], &submitting, Duration::from_secs(60)).await;
    // Runway does not deduplicate creates: a create cut off by the crash is never sent again.
    assert_eq!(v["status"], "failed", "{v}");
    assert_eq!(v["error"]["code"], "submission_outcome_unknown", "{v}");
    let stats = cluster.fake.stats().await;
    assert_eq!(stats["creates"], 5, "exactly one create per video: {stats}");
    eprintln!("kill -9 to the first orphan finished: {:?}", taken_over.unwrap());
    // The dead replica's registration lapses; the survivors keep serving.
    let after = r[1].create("k", &json!({"prompt": "after [fake:steps=2]"})).await;
    assert_eq!(
        finished(&r[2], &after, Duration::from_secs(30)).await["status"],
        "completed"
    );
}

/// A client that spreads requests over whichever replicas are in `live` (what a load balancer with readiness
/// checks does), creating videos and polling them to the end; returns (requests, failures).
async fn steady_load(live: Arc<Mutex<Vec<String>>>, stop: Arc<std::sync::atomic::AtomicBool>) -> (u64, Vec<String>) {
    use http_body_util::{BodyExt, Full};
    let client: hyper_util::client::legacy::Client<_, Full<bytes::Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let mut requests = 0;
    let mut failures = Vec::new();
    let mut open: Vec<String> = Vec::new();
    let mut n = 0usize;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) || !open.is_empty() {
        n += 1;
        let addr = {
            let live = live.lock().unwrap();
            live[n % live.len()].clone()
        };
        let creating = open.len() < 4 && !stop.load(std::sync::atomic::Ordering::Relaxed);
        let req = if creating {
            hyper::Request::post(format!("http://{addr}/v1/videos"))
                .header("authorization", "Bearer k")
                .header("content-type", "application/json")
                .body(Full::new(
                    json!({"prompt": format!("load {n} [fake:steps=6]")}).to_string().into(),
                ))
                .unwrap()
        } else {
            let id = &open[n % open.len()];
            hyper::Request::get(format!("http://{addr}/v1/videos/{id}"))
                .header("authorization", "Bearer k")
                .body(Full::new(bytes::Bytes::new()))
                .unwrap()
        };
        requests += 1;
        match client.request(req).await {
            Ok(resp) => {
                let status = resp.status();
                let body = resp
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                if status != 200 {
                    failures.push(format!("{addr}: HTTP {status} {}", String::from_utf8_lossy(&body)));
                    continue;
                }
                let v: Value = serde_json::from_slice(&body).unwrap();
                let id = v["id"].as_str().unwrap().to_owned();
                match v["status"].as_str() {
                    Some("completed") => open.retain(|o| *o != id),
                    Some("failed") => {
                        failures.push(format!("{id} failed: {v}"));
                        open.retain(|o| *o != id);
                    }
                    _ if creating => open.push(id),
                    _ => {}
                }
            }
            Err(e) => failures.push(format!("{addr}: {e}")),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (requests, failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_fails_no_client_request() {
    let Some(cluster) = Cluster::start("").await else {
        return;
    };
    let mut r = cluster.replicas(3);
    let live = Arc::new(Mutex::new(r.iter().map(|s| s.addr.clone()).collect::<Vec<_>>()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = tokio::spawn(steady_load(Arc::clone(&live), Arc::clone(&stop)));
    tokio::time::sleep(Duration::from_secs(2)).await;
    for shim in r.iter_mut() {
        // Out of the load balancer first (Kubernetes: the endpoint is removed, then SIGTERM after preStop).
        let old = shim.addr.clone();
        live.lock().unwrap().retain(|a| *a != old);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(shim.terminate().success(), "{}", shim.log());
        let fresh = cluster.replica();
        live.lock().unwrap().push(fresh.addr.clone());
        *shim = fresh;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (requests, failures) = tokio::time::timeout(Duration::from_secs(120), load)
        .await
        .unwrap()
        .unwrap();
    assert!(
        failures.is_empty(),
        "{} of {requests} requests failed: {failures:#?}",
        failures.len()
    );
    assert!(requests > 100, "only {requests} requests");
    let stats = cluster.fake.stats().await;
    let jobs = stats["jobs"].as_object().unwrap();
    assert!(jobs.values().all(|p| p == "succeeded"), "{stats}");
    assert_eq!(stats["creates"].as_u64().unwrap(), jobs.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sqlite_deployment_moves_to_postgres_with_export_and_import() {
    let Some(pg) = Postgres::start() else { return };
    let Some(moto) = Moto::start() else { return };
    moto.bucket("videos");
    let key = "sk-move";
    let mut old = Shim::start();
    let kept = old.create(key, &json!({"prompt": "kept through the move"})).await;
    let gone = old.create(key, &json!({"prompt": "deleted before the move"})).await;
    for id in [&kept, &gone] {
        assert_eq!(old.wait(id, key).await["status"], "completed");
    }
    let r = old
        .call(hyper::Method::DELETE, &format!("/v1/videos/{gone}"), Some(key), &[], "")
        .await;
    assert_eq!(r.status, 200);
    let before = old.get(&format!("/v1/videos/{kept}"), key).await.json();
    let content = old.get(&format!("/v1/videos/{kept}/content"), key).await.body;
    assert!(old.terminate().success());

    let tmp = tempfile::tempdir().unwrap();
    let dump = tmp.path().join("export");
    let data = old.data_dir.to_str().unwrap().to_owned();
    let out = common::cli(
        &[
            "export",
            "--config",
            old.config_path().to_str().unwrap(),
            "--data-dir",
            &data,
            "--out",
            dump.to_str().unwrap(),
        ],
        None,
        &[],
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let pg_config = tmp.path().join("pg.toml");
    std::fs::write(
        &pg_config,
        format!(
            "{}\n[store]\nkind = \"postgres\"\n[assets]\nkind = \"s3\"\nbucket = \"videos\"\nregion = \"us-east-1\"\n\
             endpoint = \"{}\"\n",
            common::TEST_CONFIG,
            moto.url
        ),
    )
    .unwrap();
    let url = pg.database();
    let env = [
        ("SORA_SHIM_DATABASE_URL", url.as_str()),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing-secret"),
        ("AWS_DEFAULT_REGION", "us-east-1"),
    ];
    let import_dir = tmp.path().join("import-data");
    let import = |extra: &[&str]| {
        let mut args = vec!["import", "--config", pg_config.to_str().unwrap(), "--data-dir"];
        args.push(import_dir.to_str().unwrap());
        args.extend_from_slice(extra);
        args.push(dump.to_str().unwrap());
        common::cli(&args, None, &env)
    };
    let out = import(&[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("imported 2 jobs"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Twice changes nothing.
    let out = import(&[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("2 already present"));

    // Two replicas on PostgreSQL answer what the SQLite process answered.
    let config = std::fs::read_to_string(&pg_config).unwrap();
    let replicas: Vec<Shim> = (0..2).map(|_| Shim::start_with_env(&config, &env)).collect();
    for shim in &replicas {
        assert_eq!(shim.get(&format!("/v1/videos/{kept}"), key).await.json(), before);
        assert_eq!(shim.get(&format!("/v1/videos/{kept}/content"), key).await.body, content);
        assert_eq!(shim.get(&format!("/v1/videos/{gone}"), key).await.status, 404);
    }
    // And go on making videos.
    let next = replicas[0].create(key, &json!({"prompt": "after the move"})).await;
    assert_eq!(replicas[1].wait(&next, key).await["status"], "completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_provider_callback_reaches_the_replica_that_drives_the_job() {
    const SECRET: &str = "whsec_ZmFrZSByZXBsaWNhdGUgc2lnbmluZyBrZXk=";
    // Every callback goes to one replica (the balancer's address, in production); the jobs are another's.
    let receiver = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let Some(mut cluster) = Cluster::start_on(
        ("replicate", "replicate", "google/veo-3.1"),
        &[("FAKE_WEBHOOK_SECRET", SECRET)],
        |_| {
            // Polling every 10 minutes: only a callback can finish a job within the test.
            format!("callback_base_url = \"http://{receiver}\"\ncallback_poll_interval_ms = 600000")
        },
    )
    .await
    else {
        return;
    };
    cluster.config = cluster.config.replace(
        "secrets = { api_token = \"SORA_SHIM_TEST_PROVIDER_KEY\" }",
        "secrets = { api_token = \"SORA_SHIM_TEST_PROVIDER_KEY\", webhook_secret = \"TEST_REPLICATE_WEBHOOK_SECRET\" }",
    );
    cluster
        .env
        .push(("TEST_REPLICATE_WEBHOOK_SECRET".into(), SECRET.into()));
    let owner = cluster.replica();
    let front = cluster.replica_listening(&receiver);
    let ids = [
        owner
            .create("k", &json!({"prompt": "called back elsewhere", "seconds": "4"}))
            .await,
        owner
            .create("k", &json!({"prompt": "called back elsewhere too", "seconds": "4"}))
            .await,
    ];
    for id in &ids {
        let v = finished(&owner, id, Duration::from_secs(60)).await;
        assert_eq!(v["status"], "completed", "{v}\n{}\n{}", owner.log(), front.log());
    }
    let stats = cluster.fake.stats().await;
    assert_eq!(stats["polls"], 0, "a job was polled: {stats}");
    assert!(front.log().contains("provider callback accepted"), "{}", front.log());
    assert!(
        !owner.log().contains("provider callback accepted"),
        "the callbacks went to the front replica"
    );
    // A late callback (a provider retrying one it thinks was lost) for a finished job: acknowledged, not kept.
    let body = json!({"id": "late", "status": "succeeded"}).to_string();
    let (msg, ts) = (
        "msg_late_1",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .to_string(),
    );
    let key = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        SECRET.strip_prefix("whsec_").unwrap(),
    )
    .unwrap();
    let mac = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key),
        format!("{msg}.{ts}.{body}").as_bytes(),
    );
    let signature = format!(
        "v1,{}",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, mac.as_ref())
    );
    let late = front
        .call(
            hyper::Method::POST,
            &format!("/callbacks/prov/{}", ids[0]),
            None,
            &[
                ("content-type", "application/json"),
                ("webhook-id", msg),
                ("webhook-timestamp", &ts),
                ("webhook-signature", &signature),
            ],
            body,
        )
        .await;
    assert_eq!(late.status, 200, "{}", String::from_utf8_lossy(&late.body));
    // Nothing is left waiting for a finished job: what its owner did not take is dropped when the job ends.
    let drained = eventually(Duration::from_secs(10), async || {
        cluster.sql("SELECT count(*) FROM callbacks") == "0"
    })
    .await;
    assert!(drained, "{}", cluster.sql("SELECT job_id FROM callbacks"));
}

/// The limits that hold for all replicas together, not per process: a tenant's requests per minute (one bucket
/// in PostgreSQL), a model's shadow daily cap (counted in PostgreSQL) and a backend's requests per second
/// (shared out among the live replicas).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rate_limits_and_the_shadow_cap_hold_across_replicas() {
    let candidate = Fake::start("runway");
    let cand_url = candidate.url.clone();
    let Some(mut cluster) = Cluster::start_on(("runway", "runway", "gen4.5"), &[], |_| {
        format!(
            "requests_per_second = 6\n\
             [backends.cand]\nkind = \"mapping\"\nmapping = \"runway\"\nbase_url = \"{cand_url}\"\n\
             secrets = {{ api_key = \"SORA_SHIM_TEST_PROVIDER_KEY\" }}\nmodel = \"gen4.5\"\ntimeout_secs = 5\n\
             [tenants.acme]\nkey_env = [\"TEST_ACME_KEY\"]\n\
             [tenants.metered]\nkey_env = [\"TEST_METERED_KEY\"]\nrequests_per_minute = 6\n"
        )
    })
    .await
    else {
        return;
    };
    cluster.config = cluster.config.replace(
        "[models.\"sora-2\"]\nbackend = \"prov\"",
        "[models.\"sora-2\"]\nbackend = \"prov\"\nshadow = [{ backend = \"cand\", sample = 1.0 }]\nshadow_daily_cap = 3",
    );
    let (acme, metered) = ("sk-acme-replicas-0001", "sk-metered-replicas-0002");
    cluster.env.push(("TEST_ACME_KEY".into(), acme.into()));
    cluster.env.push(("TEST_METERED_KEY".into(), metered.into()));
    let r = cluster.replicas(3);
    // Each replica counts all three (their heartbeats) before the load starts.
    for shim in &r {
        let counted = eventually(Duration::from_secs(20), async || {
            shim.metrics().await.contains("sora_shim_live_replicas 3")
        })
        .await;
        assert!(counted, "{}", shim.metrics().await);
    }

    // Nine requests of a tenant allowed six a minute, spread over the three: six pass, wherever they land.
    let mut passed = 0;
    for i in 0..9 {
        let reply = r[i % 3].get("/v1/videos?limit=1", metered).await;
        match reply.status.as_u16() {
            200 => passed += 1,
            429 => assert!(reply.headers.contains_key("retry-after")),
            other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&reply.body)),
        }
    }
    assert_eq!(passed, 6, "requests_per_minute = 6 across three replicas");

    // Nine videos, every one sampled for shadowing with a daily cap of 3: the candidate gets three.
    let mut ids = Vec::new();
    for i in 0..9 {
        ids.push(
            r[i % 3]
                .create(acme, &json!({"prompt": format!("paced {i} [fake:steps=3]")}))
                .await,
        );
    }
    for id in &ids {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let v = r[0].get(&format!("/v1/videos/{id}"), acme).await.json();
            if v["status"] == "completed" {
                break;
            }
            assert_ne!(v["status"], "failed", "{v}");
            assert!(Instant::now() < deadline, "{id} still {}", v["status"]);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Shadow copies are made off the client's path: wait for them, then for a straggler past the cap.
    let made = eventually(Duration::from_secs(30), async || {
        candidate.stats().await["creates"] == 3
    })
    .await;
    assert!(made, "{}\n{}", candidate.stats().await, r[0].metrics().await);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        candidate.stats().await["creates"],
        3,
        "shadow_daily_cap = 3 across three replicas"
    );
    let stats = cluster.fake.stats().await;
    assert_eq!(stats["creates"], 9, "{stats}");
    // 6 calls a second shared by three replicas: each sends one every 0.5 s. A provider's one-second window
    // can still catch a third call of one replica when network delay bunches two arrivals (at most one more
    // per replica: 9); each replica at the full 6 would have let 18 through.
    let peak = stats["peak_rps"].as_u64().unwrap();
    eprintln!("peak calls in one second at the provider: {peak}");
    assert!(
        peak <= 9,
        "the provider saw {peak} calls in one second with requests_per_second = 6"
    );
}

/// kill -9 of the replica that drives one job in each internal state — `queued` (held by `max_concurrent`),
/// `submitting` (its create held by the provider), `running`, `finalizing` (its download held) — and webhooks
/// on: the survivors end every job within the lease, the provider sees one create per video, and each video's
/// webhook keeps one id however many times and from whichever replica it is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_in_every_state_ends_every_job_once() {
    // The first two deliveries are answered 500: retried, perhaps by another replica, under the same id.
    let receiver = common::receiver::Receiver::start(2).await;
    let hook = receiver.url.clone();
    let Some(mut cluster) = Cluster::start_on(("runway", "runway", "gen4.5"), &[], |_| {
        format!(
            "max_concurrent = 3\n[webhooks.ops]\nurl = \"{hook}\"\nsecret_env = \"TEST_WEBHOOK_SECRET\"\n\
             retry_base_ms = 100\nretry_max_ms = 400\n"
        )
    })
    .await
    else {
        return;
    };
    cluster.env.push((
        "TEST_WEBHOOK_SECRET".into(),
        "whsec_c29yYS1zaGltIHRlc3Qgc2lnbmluZyBrZXkgMTIzNDU2Nzg=".into(),
    ));
    let mut r = cluster.replicas(3);
    let running = r[0].create("k", &json!({"prompt": "running [fake:steps=200]"})).await;
    assert!(
        eventually(
            Duration::from_secs(30),
            async || status(&r[1], &running).await["status"] == "in_progress"
        )
        .await
    );
    // The next create and the next download are each held 8 s by the provider.
    cluster
        .fake
        .faults(json!({"create": {"delay_ms": 8000, "times": 1}, "download": {"delay_ms": 8000, "times": 1}}))
        .await;
    let submitting = r[0].create("k", &json!({"prompt": "submitting [fake:steps=2]"})).await;
    // Its create is the one held (the worker submits jobs concurrently: the next is made only once it is).
    assert!(
        eventually(Duration::from_secs(10), async || cluster.fake.stats().await["creates"]
            == 2)
        .await
    );
    let finalizing = r[0].create("k", &json!({"prompt": "finalizing [fake:steps=1]"})).await;
    let held = eventually(Duration::from_secs(6), async || {
        let s = cluster.fake.stats().await;
        s["creates"] == 3 && s["downloads"] == 1
    })
    .await;
    assert!(held, "{}", cluster.fake.stats().await);
    // Three at the backend (running, submitting, finalizing): the fourth waits its turn in the shim (the API
    // says `queued` for it as for one being submitted: the provider's count tells them apart).
    let queued = r[0].create("k", &json!({"prompt": "queued [fake:steps=2]"})).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(status(&r[1], &queued).await["status"], "queued");
    assert_eq!(
        cluster.fake.stats().await["creates"],
        3,
        "max_concurrent = 3 holds the fourth"
    );
    r[0].kill9();

    let outcomes = [
        (&running, "completed"),
        (&finalizing, "completed"),
        (&queued, "completed"),
        (&submitting, "failed"),
    ];
    for (id, want) in outcomes {
        let v = finished(&r[1], id, Duration::from_secs(90)).await;
        assert_eq!(v["status"], want, "{v}\n{}\n{}", r[1].log(), r[2].log());
    }
    assert_eq!(
        status(&r[2], &submitting).await["error"]["code"],
        "submission_outcome_unknown"
    );
    assert_eq!(cluster.fake.stats().await["creates"], 4, "one create per video");

    // One webhook per video (video.completed ×3, video.failed ×1), each with one id on every attempt.
    let got = receiver.until_delivered(4, Duration::from_secs(30)).await;
    assert!(got.len() >= 6, "two attempts were refused and retried: {}", got.len());
    let mut ids: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
    for delivery in &got {
        let body: Value = serde_json::from_slice(&delivery.body).unwrap();
        let hook_id = delivery.headers["webhook-id"].to_str().unwrap().to_owned();
        ids.entry(body["data"]["id"].as_str().unwrap().to_owned())
            .or_default()
            .insert(hook_id);
    }
    assert_eq!(ids.len(), 4, "{ids:?}");
    for (video, hook_ids) in &ids {
        assert_eq!(
            hook_ids.len(),
            1,
            "{video} was announced under several ids: {hook_ids:?}"
        );
    }
}
