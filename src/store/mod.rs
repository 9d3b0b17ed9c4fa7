//! The job store: the system of record. [`JobStore`] is what every stage talks to; [`sqlite`] is the default
//! implementation and [`cache`] puts a `dashmap` in front of any store for hot reads.
//! The trait speaks only in domain terms (no SQL, no SQLite-only semantics), so a PostgreSQL store can follow.

pub mod cache;
pub mod sqlite;

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
}

#[async_trait]
pub trait JobStore: Send + Sync + 'static {
    /// Persists a new job. With an idempotency key already used by the tenant, returns the existing job.
    async fn insert_job(&self, job: &Job) -> Result<Inserted, StoreError>;
    /// A job by id, deleted ones excluded.
    async fn get_job(&self, id: &str) -> Result<Option<Job>, StoreError>;
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
    /// Every job not yet completed or failed (for the worker, at start and on its sweeps).
    async fn unfinished_jobs(&self) -> Result<Vec<Job>, StoreError>;
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
}
