//! The job store: the system of record. [`JobStore`] is what every stage talks to; [`sqlite`] is the default
//! implementation, [`postgres`] the one several replicas share, and [`cache`] puts a `dashmap` in front of
//! either (hot reads for SQLite; transition logs and metrics for both).
//! The trait speaks only in domain terms (no SQL): both stores pass one contract suite (`tests/store.rs`).
//!
//! Several processes can drive one store. Each unfinished job is leased to one [`Replica`] at a time: the
//! replica that created it, or the one whose sweep claimed it after its owner's lease ran out. Writes stay
//! version-checked, so a replica that lost its lease without knowing only ever gets a [`StoreError::Conflict`].

pub mod cache;
pub mod outbox;
pub mod postgres;
pub(crate) mod row;
pub mod sqlite;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::video::{Character, Job};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store backend error: {0}")]
    Backend(String),
    #[error("stored record {id} is corrupt: {reason}")]
    Corrupt { id: String, reason: String },
    #[error("job {0} was changed by someone else")]
    Conflict(String),
    #[error("job {0} does not exist")]
    Missing(String),
    /// The disk under the database is full; nothing was written (the transaction rolled back).
    #[error("the store's disk is full: {0}")]
    Full(String),
}

/// Who this process is among those sharing a store, and how long a job stays its own without renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replica {
    /// Unique among the replicas of one store: host, process id and a random part.
    pub id: String,
    pub lease: Duration,
}

impl Replica {
    /// A fresh identity for this process.
    pub fn new(lease: Duration) -> Replica {
        let host = crate::datadir::hostname();
        let suffix: u32 = rand::random();
        Replica {
            id: format!("{host}-{}-{suffix:08x}", std::process::id()),
            lease,
        }
    }

    /// The one process a SQLite store allows (the data directory's lock): the same identity across restarts,
    /// so a restarted process takes its jobs back at once.
    pub fn single(lease: Duration) -> Replica {
        Replica {
            id: "single".into(),
            lease,
        }
    }

    pub(crate) fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX)
    }
}

/// A job not yet completed or failed, as the worker's sweep sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unfinished {
    pub id: String,
    pub state: crate::video::State,
    pub backend: String,
}

/// A finished video's webhook event (`video.completed` or `video.failed`), written with the state change.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Event {
    pub id: String,
    pub video_id: String,
    pub tenant: String,
    pub kind: String,
    pub created_at: i64,
}

/// One event on its way to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Delivery {
    /// `wh_…`: the `webhook-id` header, stable across attempts.
    pub id: String,
    pub event: Event,
    pub endpoint: String,
    pub url: String,
    /// `pending`, `delivered` or `failed` (gave up).
    pub state: String,
    pub attempts: u32,
    pub next_attempt_at_ms: i64,
    pub created_at_ms: i64,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub delivered_at_ms: Option<i64>,
}

/// A job record as exported: the record, and when it was deleted through the API (if it was).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ExportedJob {
    #[serde(flatten)]
    pub job: Job,
    pub deleted_at: Option<i64>,
}

/// Sort order of a listing, by creation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Asc,
    Desc,
}

/// Result of inserting a job that carries an idempotency key.
#[derive(Debug)]
pub enum Inserted {
    New,
    /// A job with the same tenant and idempotency key already exists.
    Existing(Box<Job>),
    /// The job the tenant created with this idempotency key was deleted (its id): a replay must not show it.
    Deleted(String),
    /// The tenant already has `max_unfinished` unfinished jobs; nothing was written.
    OverCap,
}

#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Persists a new job, leased to this replica. With an idempotency key already used by the tenant, returns
    /// the existing job; with `max_unfinished`, refuses a tenant that has that many unfinished jobs (counted
    /// and inserted at once, so racing creates on any replica cannot both take the last slot).
    async fn insert_job(&self, job: &Job, max_unfinished: Option<u64>) -> Result<Inserted, StoreError>;
    /// A job by id, deleted ones excluded.
    async fn get_job(&self, id: &str) -> Result<Option<Job>, StoreError>;
    /// A job to look at, not to change (a poll, a download): shared rather than copied where a cache holds it.
    async fn read_job(&self, id: &str) -> Result<Option<Arc<Job>>, StoreError> {
        Ok(self.get_job(id).await?.map(Arc::new))
    }
    /// Writes `job` if its `version` is still the stored one, and returns it with the version bumped.
    async fn update_job(&self, job: &Job) -> Result<Job, StoreError>;
    /// Marks a job deleted (its record stays for audit; reads no longer see it).
    async fn delete_job(&self, id: &str, version: i64) -> Result<(), StoreError>;
    /// Up to `limit` of a tenant's jobs after `after` (an id) in `order`.
    async fn list_jobs(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
        order: Order,
    ) -> Result<Vec<Job>, StoreError>;
    /// The page [`JobStore::list_jobs`] returns, to look at: shared rather than copied where a cache holds it.
    async fn read_jobs(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
        order: Order,
    ) -> Result<Vec<Arc<Job>>, StoreError> {
        let jobs = self.list_jobs(tenant, after, limit, order).await?;
        Ok(jobs.into_iter().map(Arc::new).collect())
    }
    /// The ids of the page [`JobStore::list_jobs`] returns, in its order (for a cache that has the records).
    async fn list_job_ids(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
        order: Order,
    ) -> Result<Vec<String>, StoreError> {
        let jobs = self.list_jobs(tenant, after, limit, order).await?;
        Ok(jobs.into_iter().map(|j| j.id).collect())
    }
    /// Job records in creation order after position `after` (0: from the start), deleted ones included, of one
    /// tenant or all, created at or after `since` (unix seconds). Returns each with its position.
    async fn export_jobs(
        &self,
        tenant: Option<&str>,
        since: Option<i64>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, ExportedJob)>, StoreError>;
    /// Inserts an exported record as it was (no webhook event); false if a job with its id (or its tenant's
    /// idempotency key) is already there.
    async fn import_job(&self, job: &ExportedJob) -> Result<bool, StoreError>;
    /// Every character, of one tenant or all.
    async fn list_characters(&self, tenant: Option<&str>) -> Result<Vec<Character>, StoreError>;
    /// Inserts an exported character; false if its id is already there.
    async fn import_character(&self, character: &Character) -> Result<bool, StoreError>;
    /// Jobs whose `expires_at` has passed and whose assets are still stored, soonest first.
    async fn expired_jobs(&self, now: i64, limit: usize) -> Result<Vec<Job>, StoreError>;
    /// Every job not yet completed or failed, oldest first (for the worker, at start and on its sweeps): only
    /// what a sweep needs, so that sweeping many thousands of waiting jobs stays cheap.
    async fn unfinished_jobs(&self) -> Result<Vec<Unfinished>, StoreError>;
    /// Every shadow job with the primary job it mirrors (a pair whose primary was deleted drops out).
    async fn shadow_pairs(&self) -> Result<Vec<(Job, Job)>, StoreError>;
    async fn insert_character(&self, character: &Character) -> Result<(), StoreError>;
    async fn get_character(&self, id: &str) -> Result<Option<Character>, StoreError>;
    /// Cheap liveness check for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
    /// A tenant's jobs not yet completed or failed (for the per-tenant cap).
    async fn count_unfinished(&self, tenant: &str) -> Result<u64, StoreError>;
    /// Unfinished jobs by internal state (for `sora_shim_queue_depth`).
    async fn queue_depth(&self) -> Result<Vec<(String, u64)>, StoreError>;
    /// Events not yet fanned out to endpoints, oldest first.
    async fn pending_events(&self, limit: usize) -> Result<Vec<Event>, StoreError>;
    /// Records an event's deliveries (one per endpoint, idempotent) and marks the event fanned out, at once.
    async fn fan_out(&self, event: &Event, deliveries: &[Delivery]) -> Result<(), StoreError>;
    /// Pending deliveries whose next attempt is due at `now_ms`, soonest first, claimed: none of them is due
    /// again (for any replica) before `hold_until_ms`, by which time the attempt has written its outcome.
    async fn claim_due_deliveries(
        &self,
        now_ms: i64,
        hold_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError>;
    /// Writes a delivery's outcome after an attempt (state, attempts, next attempt, last status and error).
    async fn update_delivery(&self, delivery: &Delivery) -> Result<(), StoreError>;
    /// Deliveries for the admin API, newest first: of one video, or all; optionally in one state.
    async fn list_deliveries(
        &self,
        video_id: Option<&str>,
        state: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError>;

    /// Leases to this replica every unfinished job that it holds already or that no replica holds (never held,
    /// released, or its lease ran out), renewing the ones it holds; returns them all, oldest first.
    async fn claim_unfinished(&self) -> Result<Vec<Unfinished>, StoreError>;
    /// Leases one unfinished job to this replica unless another replica's lease on it is still running.
    async fn claim_job(&self, id: &str) -> Result<bool, StoreError>;
    /// Gives up this replica's leases (a graceful shutdown): another replica takes the jobs at its next sweep.
    async fn release_leases(&self) -> Result<(), StoreError>;
    /// Writes `job`, moved to `submitting`, if its version is still the stored one and, with `max_at_backend`,
    /// fewer than that many other jobs are at its backend (submitting, submitted, running or finalizing):
    /// counted and written at once across replicas. `None` when the backend is full (nothing was written).
    async fn start_submit(&self, job: &Job, max_at_backend: Option<u32>) -> Result<Option<Job>, StoreError>;
    /// Records this replica as alive now; returns how many replicas are alive (this one included).
    async fn heartbeat(&self) -> Result<u32, StoreError>;
    /// Keeps a verified provider callback for whichever process drives its job (replacing an older one), and
    /// tells the other processes (see [`JobStore::callback_wakeups`]).
    async fn record_callback(&self, job_id: &str, payload: &serde_json::Value) -> Result<(), StoreError>;
    /// Takes the callback waiting for a job, if any (it is gone from the store afterwards).
    async fn take_callback(&self, job_id: &str) -> Result<Option<serde_json::Value>, StoreError>;
    /// Job ids whose callback another process has just recorded, as they arrive; `None` where one process is
    /// all there is (SQLite).
    fn callback_wakeups(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<String>> {
        None
    }
    /// Takes one request from the GCRA bucket `key` that every replica shares (one request per `interval_us`
    /// on average, at most `burst` at once), timed by the store's clock. `None` where one process is all there
    /// is (SQLite): the caller counts in its own memory, which is exact there and costs no write.
    async fn take_rate(&self, _key: &str, _interval_us: i64, _burst: u32) -> Result<Option<RateTaken>, StoreError> {
        Ok(None)
    }
    /// Adds one to the count `key` of `day` (days since the epoch, UTC) unless it has reached `cap`: true when
    /// counted, false at the cap. Exact across replicas and kept across restarts; earlier days are dropped.
    async fn count_toward(&self, key: &str, day: i64, cap: u64) -> Result<bool, StoreError>;
    /// Adds `n` to the running total `key`, which starts at zero and is never reset. Exact across replicas and
    /// kept across restarts.
    async fn add_to_total(&self, key: &str, n: u64) -> Result<(), StoreError>;
    /// Every running total whose key starts with `prefix`, by key.
    async fn totals(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError>;
}

/// The outcome of [`JobStore::take_rate`], in the store's clock (microseconds since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateTaken {
    pub allowed: bool,
    /// The bucket's theoretical arrival time after this request (GCRA): empty again at this instant.
    pub tat_us: i64,
    pub now_us: i64,
}
