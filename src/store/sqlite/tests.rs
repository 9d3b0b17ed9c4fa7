use super::*;
use crate::video::{JobKind, NormalizedRequest, Seconds, Segment, Size};

pub(crate) fn job(id: &str, tenant: &str, key: Option<&str>) -> Job {
    Job {
        id: id.into(),
        tenant: tenant.into(),
        kind: JobKind::Create,
        request: NormalizedRequest {
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
        },
        remixed_from: None,
        backend: "local".into(),
        backend_version: "1".into(),
        backend_job_id: None,
        backend_data: Some(serde_json::json!({"status_url": "u"})),
        state: State::Accepted,
        progress: 0,
        created_at: 1,
        updated_at: 1,
        completed_at: None,
        expires_at: None,
        error: None,
        assets: vec![],
        produced: None,
        submitted_at_ms: None,
        shadow_of: None,
        created_at_ms: 0,
        moderation: None,
        idempotency_key: key.map(Into::into),
        request_hash: "h".into(),
        attempts: 0,
        next_attempt_at_ms: 0,
        version: 1,
    }
}

#[tokio::test]
async fn round_trip_update_and_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
    let j = job("video_1", "t", None);
    assert!(matches!(store.insert_job(&j).await.unwrap(), Inserted::New));
    assert_eq!(store.get_job("video_1").await.unwrap().unwrap(), j);
    let mut changed = j.clone();
    changed.state = State::Running;
    changed.progress = 40;
    let stored = store.update_job(&changed).await.unwrap();
    assert_eq!(stored.version, 2);
    // A write based on the old version loses.
    assert!(matches!(store.update_job(&changed).await, Err(StoreError::Conflict(_))));
    assert_eq!(store.unfinished_jobs().await.unwrap().len(), 1);
    store.delete_job("video_1", 2).await.unwrap();
    assert!(store.get_job("video_1").await.unwrap().is_none());
    assert!(store.unfinished_jobs().await.unwrap().is_empty());
}

#[tokio::test]
async fn idempotency_key_returns_the_existing_job_per_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
    store.insert_job(&job("video_1", "t", Some("k"))).await.unwrap();
    match store.insert_job(&job("video_2", "t", Some("k"))).await.unwrap() {
        Inserted::Existing(j) => assert_eq!(j.id, "video_1"),
        other => panic!("expected the existing job, got {other:?}"),
    }
    // Another tenant may use the same key.
    assert!(matches!(
        store.insert_job(&job("video_3", "u", Some("k"))).await.unwrap(),
        Inserted::New
    ));
}

#[tokio::test]
async fn a_replay_after_delete_names_the_deleted_job_instead_of_showing_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
    store.insert_job(&job("video_1", "t", Some("k"))).await.unwrap();
    store.delete_job("video_1", 1).await.unwrap();
    match store.insert_job(&job("video_2", "t", Some("k"))).await.unwrap() {
        Inserted::Deleted(id) => assert_eq!(id, "video_1"),
        other => panic!("expected Deleted, got {other:?}"),
    }
    assert!(
        store.get_job("video_2").await.unwrap().is_none(),
        "nothing new was stored"
    );
}

#[tokio::test]
async fn list_pages_by_creation_order_within_a_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("s.db")).unwrap();
    for i in 0..5 {
        store.insert_job(&job(&format!("video_{i}"), "t", None)).await.unwrap();
    }
    store.insert_job(&job("video_x", "other", None)).await.unwrap();
    let ids = |v: Vec<Job>| v.into_iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.list_jobs("t", None, 2, Order::Asc).await.unwrap()),
        ["video_0", "video_1"]
    );
    assert_eq!(
        ids(store.list_jobs("t", Some("video_1"), 10, Order::Asc).await.unwrap()),
        ["video_2", "video_3", "video_4"]
    );
    assert_eq!(
        ids(store.list_jobs("t", Some("video_3"), 10, Order::Desc).await.unwrap()),
        ["video_2", "video_1", "video_0"]
    );
}

#[tokio::test]
async fn reopening_keeps_data_and_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    SqliteStore::open(&path)
        .unwrap()
        .insert_job(&job("video_1", "t", None))
        .await
        .unwrap();
    let again = SqliteStore::open(&path).unwrap();
    assert!(again.get_job("video_1").await.unwrap().is_some());
}
