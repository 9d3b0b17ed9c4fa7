//! The job store contract: one suite, run against SQLite (a file in a temp dir) and PostgreSQL (a real server
//! started by the test, `tests/common/postgres.rs`). Each case gets two handles on one fresh store, replicas
//! `a` and `b`, as two processes would have: what one writes the other reads, and what they share (leases,
//! idempotency keys, caps, backend slots, webhook deliveries) holds across both.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use sora_shim::store::postgres::{PgOptions, PgStore};
use sora_shim::store::sqlite::SqliteStore;
use sora_shim::store::{Delivery, ExportedJob, Inserted, JobStore, Order, Replica, StoreError};
use sora_shim::video::{
    Asset, Character, Job, JobError, JobKind, NormalizedRequest, Seconds, Segment, Size, State, Variant,
};

type Store = Arc<dyn JobStore>;

/// Opens a fresh store twice, as two replicas whose leases last `lease`.
enum Kind<'a> {
    Sqlite,
    Postgres(&'a common::postgres::Postgres),
}

struct Pair {
    a: Store,
    b: Store,
    _dir: Option<tempfile::TempDir>,
}

async fn pair(kind: &Kind<'_>, lease: Duration) -> Pair {
    let (ra, rb) = (Replica::new(lease), Replica::new(lease));
    match kind {
        Kind::Sqlite => {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.db");
            let a = SqliteStore::open_as(&path, ra).unwrap();
            let b = SqliteStore::open_as(&path, rb).unwrap();
            Pair {
                a: Arc::new(a),
                b: Arc::new(b),
                _dir: Some(dir),
            }
        }
        Kind::Postgres(pg) => {
            let options = PgOptions {
                url: sora_shim::http::Secret::new(pg.database()),
                pool_size: 8,
                ca_file: None,
            };
            // Connected together: the second waits on the migration lock, then finds the schema current.
            let (a, b) = tokio::join!(PgStore::connect(&options, ra), PgStore::connect(&options, rb));
            Pair {
                a: Arc::new(a.unwrap()),
                b: Arc::new(b.unwrap()),
                _dir: None,
            }
        }
    }
}

fn job(id: &str, tenant: &str, key: Option<&str>) -> Job {
    let request = NormalizedRequest {
        prompt: "a fox".into(),
        model: "sora-2".into(),
        size: Size {
            width: 1280,
            height: 720,
        },
        seconds: Seconds(4),
        input_reference: None,
        source_video: None,
        characters: vec![],
        extension_seconds: None,
        segments: vec![Segment {
            prompt: "a fox".into(),
            seconds: 4,
        }],
        source_backend_job_id: None,
        target: None,
    };
    Job {
        idempotency_key: key.map(Into::into),
        request_hash: "h".into(),
        backend_data: Some(serde_json::json!({"status_url": "u"})),
        ..Job::accepted(id.into(), tenant.into(), JobKind::Create, request, "prov".into())
    }
}

fn ids(jobs: Vec<Job>) -> Vec<String> {
    jobs.into_iter().map(|j| j.id).collect()
}

async fn round_trip_update_conflict_delete(p: &Pair) {
    let j = job("video_1", "t", None);
    assert!(matches!(p.a.insert_job(&j, None).await.unwrap(), Inserted::New));
    assert_eq!(
        p.b.get_job("video_1").await.unwrap().unwrap(),
        j,
        "written by a, read by b"
    );
    let mut changed = j.clone();
    changed.state = State::Running;
    changed.progress = 40;
    changed.backend_job_id = Some("prov-1".into());
    let stored = p.a.update_job(&changed).await.unwrap();
    assert_eq!(stored.version, 2);
    assert_eq!(p.b.get_job("video_1").await.unwrap().unwrap(), stored);
    // A write from the old version loses, on either replica.
    assert!(matches!(p.b.update_job(&changed).await, Err(StoreError::Conflict(_))));
    assert_eq!(p.a.unfinished_jobs().await.unwrap().len(), 1);
    assert!(matches!(
        p.b.delete_job("video_1", 1).await,
        Err(StoreError::Conflict(_))
    ));
    p.b.delete_job("video_1", 2).await.unwrap();
    assert!(p.a.get_job("video_1").await.unwrap().is_none());
    assert!(p.a.unfinished_jobs().await.unwrap().is_empty());
    assert!(matches!(p.a.update_job(&stored).await, Err(StoreError::Conflict(_))));
}

async fn idempotency_keys(p: &Pair) {
    p.a.insert_job(&job("video_1", "t", Some("k")), None).await.unwrap();
    match p.b.insert_job(&job("video_2", "t", Some("k")), None).await.unwrap() {
        Inserted::Existing(j) => assert_eq!(j.id, "video_1"),
        other => panic!("expected the existing job, got {other:?}"),
    }
    assert!(p.a.get_job("video_2").await.unwrap().is_none());
    // Another tenant may use the same key.
    assert!(matches!(
        p.b.insert_job(&job("video_3", "u", Some("k")), None).await.unwrap(),
        Inserted::New
    ));
    // A replay after delete names the deleted job instead of showing it.
    p.a.delete_job("video_1", 1).await.unwrap();
    match p.b.insert_job(&job("video_4", "t", Some("k")), None).await.unwrap() {
        Inserted::Deleted(id) => assert_eq!(id, "video_1"),
        other => panic!("expected Deleted, got {other:?}"),
    }
    // The same key on both replicas at the same instant: one video.
    for round in 0..10 {
        let key = format!("race-{round}");
        let (ja, jb) = (
            job(&format!("video_ra{round}"), "t", Some(&key)),
            job(&format!("video_rb{round}"), "t", Some(&key)),
        );
        let (x, y) = tokio::join!(p.a.insert_job(&ja, None), p.b.insert_job(&jb, None));
        let (x, y) = (x.unwrap(), y.unwrap());
        let news = [&x, &y].iter().filter(|i| matches!(i, Inserted::New)).count();
        assert_eq!(news, 1, "round {round}: {x:?} / {y:?}");
        let existing = [&x, &y].iter().filter(|i| matches!(i, Inserted::Existing(_))).count();
        assert_eq!(existing, 1, "round {round}: {x:?} / {y:?}");
    }
}

async fn listing_order(p: &Pair) {
    for i in 0..5 {
        let store = if i % 2 == 0 { &p.a } else { &p.b };
        store
            .insert_job(&job(&format!("video_{i}"), "t", None), None)
            .await
            .unwrap();
    }
    p.a.insert_job(&job("video_x", "other", None), None).await.unwrap();
    assert_eq!(
        ids(p.a.list_jobs("t", None, 2, Order::Asc).await.unwrap()),
        ["video_0", "video_1"]
    );
    assert_eq!(
        ids(p.b.list_jobs("t", Some("video_1"), 10, Order::Asc).await.unwrap()),
        ["video_2", "video_3", "video_4"]
    );
    assert_eq!(
        ids(p.a.list_jobs("t", Some("video_3"), 10, Order::Desc).await.unwrap()),
        ["video_2", "video_1", "video_0"]
    );
    assert_eq!(
        ids(p.a.list_jobs("t", None, 1, Order::Desc).await.unwrap()),
        ["video_4"]
    );
    assert!(
        p.a.list_jobs("t", Some("video_nope"), 10, Order::Asc)
            .await
            .unwrap()
            .is_empty()
    );
    // The ids alone (what the cache in front of a store lists by) come in the same pages.
    for (after, limit, order) in [
        (None, 2, Order::Asc),
        (Some("video_1"), 10, Order::Asc),
        (Some("video_3"), 10, Order::Desc),
        (None, 1, Order::Desc),
        (Some("video_nope"), 10, Order::Asc),
    ] {
        assert_eq!(
            p.b.list_job_ids("t", after, limit, order).await.unwrap(),
            ids(p.a.list_jobs("t", after, limit, order).await.unwrap()),
            "{after:?} {limit} {order:?}"
        );
    }
    p.a.delete_job("video_2", 1).await.unwrap();
    assert_eq!(
        ids(p.b.list_jobs("t", Some("video_1"), 10, Order::Asc).await.unwrap()),
        ["video_3", "video_4"]
    );
    assert_eq!(
        p.a.list_job_ids("t", Some("video_1"), 10, Order::Asc).await.unwrap(),
        ["video_3", "video_4"]
    );
    assert_eq!(p.a.count_unfinished("t").await.unwrap(), 4);
    let depth = p.b.queue_depth().await.unwrap();
    assert_eq!(depth, vec![("accepted".to_owned(), 5)]);
}

async fn tenant_cap(p: &Pair) {
    // Twelve creates at once, six through each replica, under a cap of 3: exactly three get in.
    let mut tasks = Vec::new();
    for i in 0..12 {
        let store = Arc::clone(if i % 2 == 0 { &p.a } else { &p.b });
        tasks.push(tokio::spawn(async move {
            store
                .insert_job(&job(&format!("video_c{i}"), "capped", None), Some(3))
                .await
                .unwrap()
        }));
    }
    let mut new = 0;
    for t in tasks {
        match t.await.unwrap() {
            Inserted::New => new += 1,
            Inserted::OverCap => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(new, 3);
    assert_eq!(p.a.count_unfinished("capped").await.unwrap(), 3);
    // A replay of a key already used is answered whatever the count.
    p.a.insert_job(&job("video_k", "keyed", Some("k1")), Some(1))
        .await
        .unwrap();
    assert!(matches!(
        p.b.insert_job(&job("video_k2", "keyed", Some("k1")), Some(1))
            .await
            .unwrap(),
        Inserted::Existing(_)
    ));
    assert!(matches!(
        p.b.insert_job(&job("video_k3", "keyed", Some("k2")), Some(1))
            .await
            .unwrap(),
        Inserted::OverCap
    ));
    // A finished job frees its place.
    let mut done = p.a.get_job("video_k").await.unwrap().unwrap();
    done.state = State::Completed;
    p.a.update_job(&done).await.unwrap();
    assert!(matches!(
        p.b.insert_job(&job("video_k3", "keyed", Some("k2")), Some(1))
            .await
            .unwrap(),
        Inserted::New
    ));
}

async fn leases(p: &Pair) {
    // The creating replica holds a new job.
    p.a.insert_job(&job("video_1", "t", None), None).await.unwrap();
    assert!(p.a.claim_job("video_1").await.unwrap());
    assert!(!p.b.claim_job("video_1").await.unwrap(), "a holds it");
    assert!(p.b.claim_unfinished().await.unwrap().is_empty());
    let held = p.a.claim_unfinished().await.unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(
        (held[0].id.as_str(), held[0].state, held[0].backend.as_str()),
        ("video_1", State::Accepted, "prov")
    );
    // Released (a graceful stop): b takes it at once.
    p.a.release_leases().await.unwrap();
    assert_eq!(p.b.claim_unfinished().await.unwrap().len(), 1);
    assert!(!p.a.claim_job("video_1").await.unwrap());
    // Imported records are nobody's: the first sweep takes them.
    let imported = ExportedJob {
        job: job("video_2", "t", None),
        deleted_at: None,
    };
    assert!(p.a.import_job(&imported).await.unwrap());
    let swept = p.a.claim_unfinished().await.unwrap();
    assert_eq!(ids_of(&swept), ["video_2"]);
    // Finished jobs are never claimed.
    let mut done = p.a.get_job("video_2").await.unwrap().unwrap();
    done.state = State::Completed;
    p.a.update_job(&done).await.unwrap();
    assert!(!p.a.claim_job("video_2").await.unwrap());
    assert!(p.a.claim_unfinished().await.unwrap().is_empty());
}

/// A sweep over more jobs than it claims per write (SQLite claims in chunks): every one is taken, oldest first,
/// and the other replica gets none of them.
async fn a_sweep_takes_every_lease(p: &Pair) {
    let n = 1_300;
    for i in 0..n {
        let imported = ExportedJob {
            job: job(&format!("video_{i:05}"), "t", None),
            deleted_at: None,
        };
        assert!(p.a.import_job(&imported).await.unwrap());
    }
    let swept = p.a.claim_unfinished().await.unwrap();
    let expected: Vec<String> = (0..n).map(|i| format!("video_{i:05}")).collect();
    assert_eq!(ids_of(&swept), expected, "all of them, oldest first");
    assert!(p.b.claim_unfinished().await.unwrap().is_empty(), "a holds them all");
    assert_eq!(p.a.claim_unfinished().await.unwrap().len(), n, "a still holds them all");
}

fn ids_of(u: &[sora_shim::store::Unfinished]) -> Vec<&str> {
    u.iter().map(|u| u.id.as_str()).collect()
}

/// With a one-second lease: a replica that stops renewing (killed) loses its jobs to the next sweep.
async fn leases_run_out(p: &Pair) {
    for i in 0..3 {
        p.a.insert_job(&job(&format!("video_{i}"), "t", None), None)
            .await
            .unwrap();
    }
    assert!(p.b.claim_unfinished().await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let taken = p.b.claim_unfinished().await.unwrap();
    assert_eq!(ids_of(&taken), ["video_0", "video_1", "video_2"], "oldest first");
    assert!(!p.a.claim_job("video_1").await.unwrap());
    // b renews at its next sweep: a still cannot take them.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(p.b.claim_unfinished().await.unwrap().len(), 3);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(p.a.claim_unfinished().await.unwrap().is_empty());
}

async fn backend_slots(p: &Pair) {
    for i in 0..6 {
        p.a.insert_job(&job(&format!("video_{i}"), "t", None), None)
            .await
            .unwrap();
    }
    // Six jobs try to go to a backend with max_concurrent = 2, three through each replica, at once.
    let mut tasks = Vec::new();
    for i in 0..6 {
        let store = Arc::clone(if i % 2 == 0 { &p.a } else { &p.b });
        tasks.push(tokio::spawn(async move {
            let mut j = store.get_job(&format!("video_{i}")).await.unwrap().unwrap();
            j.state = State::Submitting;
            store.start_submit(&j, Some(2)).await.unwrap()
        }));
    }
    let mut started = Vec::new();
    for t in tasks {
        if let Some(j) = t.await.unwrap() {
            assert_eq!(j.version, 2);
            started.push(j);
        }
    }
    assert_eq!(started.len(), 2);
    // One finishes: one more may go.
    let mut done = started.pop().unwrap();
    done.state = State::Completed;
    p.a.update_job(&done).await.unwrap();
    let waiting =
        p.a.unfinished_jobs()
            .await
            .unwrap()
            .into_iter()
            .find(|u| u.state == State::Accepted)
            .unwrap();
    let mut next = p.b.get_job(&waiting.id).await.unwrap().unwrap();
    next.state = State::Submitting;
    assert!(p.b.start_submit(&next, Some(2)).await.unwrap().is_some());
    let mut another =
        p.a.get_job(
            &p.a.unfinished_jobs()
                .await
                .unwrap()
                .into_iter()
                .find(|u| u.state == State::Accepted)
                .unwrap()
                .id,
        )
        .await
        .unwrap()
        .unwrap();
    another.state = State::Submitting;
    assert!(
        p.a.start_submit(&another, Some(2)).await.unwrap().is_none(),
        "full again"
    );
    // Without a limit, and version-checked like any write.
    let stale = another.clone();
    assert!(p.a.start_submit(&another, None).await.unwrap().is_some());
    assert!(matches!(
        p.b.start_submit(&stale, None).await,
        Err(StoreError::Conflict(_))
    ));
    // Counted per backend.
    let mut other = job("video_o", "t", None);
    other.backend = "elsewhere".into();
    p.a.insert_job(&other, None).await.unwrap();
    other.state = State::Submitting;
    assert!(p.b.start_submit(&other, Some(1)).await.unwrap().is_some());
}

fn delivery(id: &str, endpoint: &str, now: i64) -> Delivery {
    Delivery {
        id: id.into(),
        event: sora_shim::store::Event {
            id: String::new(),
            video_id: String::new(),
            tenant: String::new(),
            kind: String::new(),
            created_at: 0,
        },
        endpoint: endpoint.into(),
        url: format!("http://127.0.0.1:9/{endpoint}"),
        state: "pending".into(),
        attempts: 0,
        next_attempt_at_ms: now,
        created_at_ms: now,
        last_status: None,
        last_error: None,
        delivered_at_ms: None,
    }
}

async fn webhook_outbox(p: &Pair) {
    let j = job("video_1", "t", None);
    p.a.insert_job(&j, None).await.unwrap();
    assert!(
        p.a.pending_events(10).await.unwrap().is_empty(),
        "no event before it ends"
    );
    let mut done = j.clone();
    done.state = State::Completed;
    let done = p.b.update_job(&done).await.unwrap();
    // A failed job gets its own kind; a shadow job none.
    let mut failed = job("video_2", "t", None);
    failed.state = State::Failed;
    failed.error = Some(JobError {
        code: "moderation_blocked".into(),
        message: "no".into(),
    });
    p.a.insert_job(&failed, None).await.unwrap();
    let mut shadow = job("video_3", "t", None);
    shadow.shadow_of = Some("video_1".into());
    shadow.state = State::Failed;
    p.a.insert_job(&shadow, None).await.unwrap();
    // Writing the finished job again adds no second event.
    p.a.update_job(&done).await.unwrap();
    let events = p.a.pending_events(10).await.unwrap();
    let kinds: Vec<(&str, &str)> = events.iter().map(|e| (e.video_id.as_str(), e.kind.as_str())).collect();
    assert_eq!(kinds, [("video_1", "video.completed"), ("video_2", "video.failed")]);
    let now = sora_shim::video::now_unix_ms();
    let event = events[0].clone();
    let ds = [delivery("wh_a", "one", now), delivery("wh_b", "two", now)];
    // Fanned out twice (two replicas at once): the deliveries exist once.
    let (x, y) = tokio::join!(p.a.fan_out(&event, &ds), p.b.fan_out(&event, &ds));
    x.unwrap();
    y.unwrap();
    assert_eq!(p.b.pending_events(10).await.unwrap().len(), 1);
    // Claimed by one replica: the other finds nothing due until the hold ends.
    let hold = now + 60_000;
    let (x, y) = tokio::join!(
        p.a.claim_due_deliveries(now, hold, 10),
        p.b.claim_due_deliveries(now, hold, 10)
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x.len() + y.len(), 2, "each delivery claimed once: {x:?} {y:?}");
    let mut claimed: Vec<Delivery> = x.into_iter().chain(y).collect();
    claimed.sort_by(|l, r| l.id.cmp(&r.id));
    assert_eq!(claimed[0].event, event);
    assert_eq!(claimed[0].endpoint, "one");
    assert!(p.a.claim_due_deliveries(now + 1, now + 2, 10).await.unwrap().is_empty());
    // After the hold, due again, with the same id.
    let again = p.b.claim_due_deliveries(hold, hold + 60_000, 10).await.unwrap();
    assert_eq!(again.len(), 2);
    let mut d = claimed[0].clone();
    d.state = "delivered".into();
    d.attempts = 1;
    d.last_status = Some(204);
    d.delivered_at_ms = Some(now);
    p.a.update_delivery(&d).await.unwrap();
    let mut f = claimed[1].clone();
    f.state = "failed".into();
    f.attempts = 9;
    f.last_status = Some(500);
    f.last_error = Some("answered HTTP 500".into());
    p.b.update_delivery(&f).await.unwrap();
    let listed = p.b.list_deliveries(Some("video_1"), None, 10).await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&d) && listed.contains(&f), "{listed:?}");
    assert_eq!(
        p.a.list_deliveries(None, Some("failed"), 10).await.unwrap(),
        [f.clone()]
    );
    assert!(
        p.a.claim_due_deliveries(i64::MAX / 2, i64::MAX / 2, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        p.a.update_delivery(&delivery("wh_nope", "x", now)).await,
        Err(StoreError::Missing(_))
    ));
}

async fn export_import_and_characters(p: &Pair) {
    let c = Character {
        id: "char_1".into(),
        tenant: "t".into(),
        name: "Fox".into(),
        created_at: 5,
        video_key: "char_1/video.mp4".into(),
    };
    p.a.insert_character(&c).await.unwrap();
    assert_eq!(p.b.get_character("char_1").await.unwrap(), Some(c.clone()));
    assert!(p.b.get_character("char_2").await.unwrap().is_none());
    assert!(!p.b.import_character(&c).await.unwrap());
    let c2 = Character {
        id: "char_2".into(),
        tenant: "u".into(),
        ..c.clone()
    };
    assert!(p.b.import_character(&c2).await.unwrap());
    assert_eq!(p.a.list_characters(Some("u")).await.unwrap(), std::slice::from_ref(&c2));
    assert_eq!(p.a.list_characters(None).await.unwrap().len(), 2);

    let mut first = job("video_1", "t", Some("k"));
    first.created_at = 100;
    first.state = State::Completed;
    first.assets = vec![Asset {
        variant: Variant::Video,
        key: "video_1/video.mp4".into(),
        bytes: 10,
        sha256: "ab".into(),
    }];
    first.expires_at = Some(150);
    let mut second = job("video_2", "u", None);
    second.created_at = 200;
    p.a.insert_job(&first, None).await.unwrap();
    p.a.insert_job(&second, None).await.unwrap();
    p.a.delete_job("video_2", 1).await.unwrap();
    let page = p.b.export_jobs(None, None, 0, 10).await.unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(page[0].1.job, first);
    assert!(page[1].1.deleted_at.is_some(), "deleted records are exported too");
    assert!(page[0].0 < page[1].0);
    assert_eq!(p.b.export_jobs(Some("u"), None, 0, 10).await.unwrap().len(), 1);
    assert_eq!(p.b.export_jobs(None, Some(150), 0, 10).await.unwrap().len(), 1);
    assert_eq!(p.b.export_jobs(None, None, page[0].0, 10).await.unwrap().len(), 1);
    // Re-importing what is there changes nothing.
    assert!(!p.a.import_job(&page[0].1).await.unwrap());
    // Expired assets, soonest first; a deleted job never.
    assert_eq!(ids(p.a.expired_jobs(149, 10).await.unwrap()), Vec::<String>::new());
    assert_eq!(ids(p.b.expired_jobs(150, 10).await.unwrap()), ["video_1"]);
}

async fn shadow_pairs_and_health(p: &Pair) {
    p.a.insert_job(&job("video_p", "t", None), None).await.unwrap();
    let mut s = job("video_s", "t", None);
    s.shadow_of = Some("video_p".into());
    p.b.insert_job(&s, None).await.unwrap();
    let mut orphan = job("video_s2", "t", None);
    orphan.shadow_of = Some("video_gone".into());
    p.b.insert_job(&orphan, None).await.unwrap();
    let pairs = p.a.shadow_pairs().await.unwrap();
    assert_eq!(pairs.len(), 1);
    assert_eq!((pairs[0].0.id.as_str(), pairs[0].1.id.as_str()), ("video_p", "video_s"));
    p.a.ping().await.unwrap();
    p.b.ping().await.unwrap();
}

async fn run_all(kind: Kind<'_>) {
    let long = Duration::from_secs(60);
    round_trip_update_conflict_delete(&pair(&kind, long).await).await;
    idempotency_keys(&pair(&kind, long).await).await;
    listing_order(&pair(&kind, long).await).await;
    tenant_cap(&pair(&kind, long).await).await;
    leases(&pair(&kind, long).await).await;
    leases_run_out(&pair(&kind, Duration::from_secs(1)).await).await;
    a_sweep_takes_every_lease(&pair(&kind, long).await).await;
    backend_slots(&pair(&kind, long).await).await;
    webhook_outbox(&pair(&kind, long).await).await;
    export_import_and_characters(&pair(&kind, long).await).await;
    shadow_pairs_and_health(&pair(&kind, long).await).await;
    callbacks_wait_for_their_job(&pair(&kind, long).await).await;
    daily_counts_hold_across_replicas(&pair(&kind, long).await).await;
    running_totals_add_up_across_replicas(&pair(&kind, long).await).await;
    shared_request_rates(&pair(&kind, long).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_store_contract() {
    run_all(Kind::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store_contract() {
    let Some(pg) = common::postgres::Postgres::start() else {
        return;
    };
    run_all(Kind::Postgres(&pg)).await;
    // Two replicas registered (their heartbeats), each counting both.
    let p = pair(&Kind::Postgres(&pg), Duration::from_secs(60)).await;
    p.a.heartbeat().await.unwrap();
    assert_eq!(p.b.heartbeat().await.unwrap(), 2);
    p.a.release_leases().await.unwrap();
    assert_eq!(p.b.heartbeat().await.unwrap(), 1, "a replica that stopped drops out");
}

#[tokio::test]
async fn sqlite_reopening_keeps_data_and_a_single_process_takes_its_jobs_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let first = SqliteStore::open(&path).unwrap();
    first.insert_job(&job("video_1", "t", None), None).await.unwrap();
    drop(first);
    // Restarted (kill -9 included): the one process of a SQLite store is the same owner, no lease to wait out.
    let again = SqliteStore::open(&path).unwrap();
    assert!(again.get_job("video_1").await.unwrap().is_some());
    assert_eq!(again.claim_unfinished().await.unwrap().len(), 1);
    assert_eq!(again.heartbeat().await.unwrap(), 1);
}

/// A sweep writes only the leases that are due: one a third of a lease after the last rewrites none of them
/// (renewing every held lease at every sweep stalled every other write while tens of thousands were in flight).
#[tokio::test]
async fn sqlite_a_sweep_renews_only_the_leases_that_are_due() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let store = SqliteStore::open_as(&path, Replica::new(Duration::from_secs(3))).unwrap();
    for i in 0..600 {
        store
            .insert_job(&job(&format!("video_{i:04}"), "t", None), None)
            .await
            .unwrap();
    }
    let leases = || {
        let conn = rusqlite::Connection::open(&path).unwrap();
        let mut stmt = conn.prepare("SELECT lease_until_ms FROM jobs ORDER BY seq").unwrap();
        stmt.query_map([], |r| r.get::<_, i64>(0))
            .unwrap()
            .collect::<Result<Vec<_>, _>>()
            .unwrap()
    };
    let inserted = leases();
    assert_eq!(store.claim_unfinished().await.unwrap().len(), 600);
    assert_eq!(leases(), inserted, "a fresh lease is not due: nothing rewritten");
    // Past a third of the lease every one is due, and every one is renewed by the next sweep.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(store.claim_unfinished().await.unwrap().len(), 600);
    let renewed = leases();
    assert!(renewed.iter().zip(&inserted).all(|(r, i)| r > i), "every lease renewed");
}

#[tokio::test]
async fn postgres_refuses_a_schema_newer_than_it_knows_and_names_no_password() {
    let Some(pg) = common::postgres::Postgres::start() else {
        return;
    };
    let url = pg.database();
    let db = url.rsplit('/').next().unwrap().split('?').next().unwrap().to_owned();
    let options = PgOptions {
        url: sora_shim::http::Secret::new(url),
        pool_size: 2,
        ca_file: None,
    };
    PgStore::connect(&options, Replica::new(Duration::from_secs(30)))
        .await
        .unwrap();
    pg.psql(&db, "UPDATE sora_shim_schema SET version = 99").unwrap();
    let Err(e) = PgStore::connect(&options, Replica::new(Duration::from_secs(30))).await else {
        panic!("a newer schema was accepted");
    };
    assert!(e.to_string().contains("newer than this binary knows"), "{e}");
    // A wrong password: the error says so, and never repeats it.
    pg.psql("postgres", "ALTER USER postgres PASSWORD 'pw'").unwrap();
    let wrong = PgOptions {
        url: sora_shim::http::Secret::new(format!(
            "postgres://nobody_here:hunter2@127.0.0.1:{}/{db}?sslmode=disable",
            pg.port
        )),
        ..options
    };
    let Err(e) = PgStore::connect(&wrong, Replica::new(Duration::from_secs(30))).await else {
        panic!("connected as a role that does not exist");
    };
    assert!(!e.to_string().contains("hunter2"), "{e}");
}

async fn callbacks_wait_for_their_job(p: &Pair) {
    let mut wakeups = p.b.callback_wakeups();
    assert!(p.b.take_callback("video_1").await.unwrap().is_none());
    p.a.record_callback("video_1", &serde_json::json!({"body": {"n": 1}}))
        .await
        .unwrap();
    p.a.record_callback("video_1", &serde_json::json!({"body": {"n": 2}}))
        .await
        .unwrap();
    if let Some(w) = &mut wakeups {
        // PostgreSQL tells the other replicas at once, once their LISTEN connection is up (it is opened in the
        // background: what is recorded before that waits for the owner's next poll, so record again).
        let mut heard = None;
        for _ in 0..20 {
            if let Ok(id) = tokio::time::timeout(Duration::from_millis(500), w.recv()).await {
                heard = id;
                break;
            }
            p.a.record_callback("video_1", &serde_json::json!({"body": {"n": 2}}))
                .await
                .unwrap();
        }
        assert_eq!(heard.as_deref(), Some("video_1"));
    }
    assert_eq!(
        p.b.take_callback("video_1").await.unwrap(),
        Some(serde_json::json!({"body": {"n": 2}})),
        "the latest one"
    );
    assert!(p.a.take_callback("video_1").await.unwrap().is_none(), "taken once");
}

async fn daily_counts_hold_across_replicas(p: &Pair) {
    // Twenty racing copies against a cap of 5, from two replicas: exactly 5 counted.
    let tries = (0..20).map(|i| {
        let s = if i % 2 == 0 { Arc::clone(&p.a) } else { Arc::clone(&p.b) };
        async move { s.count_toward("shadow:sora-2", 20_000, 5).await.unwrap() }
    });
    let counted = futures_util::future::join_all(tries).await;
    assert_eq!(counted.iter().filter(|c| **c).count(), 5);
    // Another key and the next day start from zero; a cap of 0 counts nothing.
    assert!(p.b.count_toward("shadow:sora-2-pro", 20_000, 5).await.unwrap());
    assert!(p.a.count_toward("shadow:sora-2", 20_001, 5).await.unwrap());
    assert!(!p.a.count_toward("shadow:other", 20_001, 0).await.unwrap());
}

async fn running_totals_add_up_across_replicas(p: &Pair) {
    // Forty racing additions from two replicas; another key and a key that only shares a prefix stay apart.
    let adds = (0..40).map(|i| {
        let s = if i % 2 == 0 { Arc::clone(&p.a) } else { Arc::clone(&p.b) };
        async move { s.add_to_total("[\"missed\",\"a\"]", 1 + i % 3).await.unwrap() }
    });
    futures_util::future::join_all(adds).await;
    p.b.add_to_total("[\"missed\",\"b\"]", 7).await.unwrap();
    p.a.add_to_total("[\"missed\",\"b\"]", 0).await.unwrap();
    p.a.add_to_total("[\"other\"]", 1).await.unwrap();
    let expected_a: u64 = (0..40).map(|i| 1 + i % 3).sum();
    let want = vec![
        ("[\"missed\",\"a\"]".to_owned(), expected_a),
        ("[\"missed\",\"b\"]".to_owned(), 7),
    ];
    assert_eq!(p.a.totals("[\"missed\",").await.unwrap(), want);
    assert_eq!(p.b.totals("[\"missed\",").await.unwrap(), want);
    assert_eq!(p.a.totals("[\"nothing").await.unwrap(), vec![]);
}

async fn shared_request_rates(p: &Pair) {
    let interval = 60_000_000 / 5; // 5 a minute
    let first = p.a.take_rate("tenant:acme", interval, 5).await.unwrap();
    let Some(first) = first else {
        // One process (SQLite): the caller counts in memory.
        assert!(p.b.take_rate("tenant:acme", interval, 5).await.unwrap().is_none());
        return;
    };
    assert!(first.allowed);
    assert!((first.tat_us - first.now_us - interval).abs() < 1_000_000, "{first:?}");
    // Twelve at once from both replicas: the four left in the bucket pass, exactly.
    let tries = (0..12).map(|i| {
        let s = if i % 2 == 0 { Arc::clone(&p.a) } else { Arc::clone(&p.b) };
        async move { s.take_rate("tenant:acme", interval, 5).await.unwrap().unwrap() }
    });
    let taken = futures_util::future::join_all(tries).await;
    assert_eq!(taken.iter().filter(|t| t.allowed).count(), 4, "{taken:?}");
    let refused = taken.iter().find(|t| !t.allowed).unwrap();
    assert!(
        refused.tat_us - refused.now_us > 4 * interval,
        "a full bucket: {refused:?}"
    );
    // Other tenants have their own bucket.
    assert!(
        p.b.take_rate("tenant:globex", interval, 5)
            .await
            .unwrap()
            .unwrap()
            .allowed
    );
}
