//! A `dashmap` in front of a [`JobStore`]: polls (`GET /v1/videos/{id}`, about once a second per client) are
//! answered from memory. Every write goes through here, so within one process the cache is never stale — and so
//! every job state transition is seen here: logged (job id, backend, backend job id) and counted.
//!
//! A store that other replicas write too ([`CachedStore::shared`]) is never answered from memory: a GET on
//! one replica right after a change on another must not show the older state. There the map only remembers
//! each job's last state seen, so that transitions are still logged with where they came from.

use std::sync::Arc;

use async_trait::async_trait;
use dashmap::DashMap;

use super::{Delivery, Event, ExportedJob, Inserted, JobStore, Order, RateTaken, StoreError, Unfinished};
use crate::video::{Character, Job};

pub struct CachedStore {
    inner: Arc<dyn JobStore>,
    /// Shared, so that a read hands out the record without copying it (a job holds a dozen strings and more).
    jobs: DashMap<String, Arc<Job>>,
    capacity: usize,
    /// Whether reads may be answered from memory (only when this process is the store's one writer).
    serve_reads: bool,
}

impl CachedStore {
    pub fn new(inner: Arc<dyn JobStore>, capacity: usize) -> CachedStore {
        CachedStore {
            inner,
            jobs: DashMap::new(),
            capacity,
            serve_reads: true,
        }
    }

    /// In front of a store other processes write too: every read goes to the store.
    pub fn shared(inner: Arc<dyn JobStore>, capacity: usize) -> CachedStore {
        CachedStore {
            serve_reads: false,
            ..CachedStore::new(inner, capacity)
        }
    }

    /// Remembers a write's result and logs the transition from the copy it replaced (`before`).
    fn written(&self, before: Option<crate::video::State>, stored: &Job) {
        self.remember(stored);
        match before {
            Some(state) if state == stored.state => {}
            Some(state) => transition(state.as_str(), stored),
            None => transition("unknown", stored),
        }
    }

    /// The state of the copy a write of `job` replaces (same version), if this process has it.
    fn before(&self, job: &Job) -> Option<crate::video::State> {
        self.jobs
            .get(&job.id)
            .filter(|j| j.version == job.version)
            .map(|j| j.state)
    }

    fn remember(&self, job: &Job) {
        if self.jobs.len() >= self.capacity {
            // Finished jobs are re-read cheaply and rarely; drop them first to make room.
            self.jobs.retain(|_, j| !j.state.is_terminal());
            if self.jobs.len() >= self.capacity {
                self.jobs.clear();
            }
        }
        self.jobs.insert(job.id.clone(), Arc::new(job.clone()));
    }
}

/// Logs and counts a job's move to its current state (and its whole duration once it has finished).
fn transition(from: &str, job: &Job) {
    let to = job.state.as_str();
    tracing::info!(
        job = %job.id,
        from,
        to,
        backend = %job.backend,
        backend_job_id = job.backend_job_id.as_deref().unwrap_or("-"),
        "job transition"
    );
    let Some(m) = crate::metrics::get() else { return };
    let (model, backend) = (job.request.model.as_str(), job.backend.as_str());
    m.transitions.with_label_values(&[model, backend, from, to]).inc();
    if job.state.is_terminal() {
        let outcome = job.error.as_ref().map_or("completed", |e| e.code.as_str());
        let seconds = (crate::video::now_unix_ms() - job.created_at_ms).max(0) as f64 / 1000.0;
        m.job_seconds
            .with_label_values(&[model, backend, outcome])
            .observe(seconds);
    }
}

#[async_trait]
impl JobStore for CachedStore {
    async fn insert_job(&self, job: &Job, max_unfinished: Option<u64>) -> Result<Inserted, StoreError> {
        let outcome = self.inner.insert_job(job, max_unfinished).await?;
        if let Inserted::New = outcome {
            self.remember(job);
            transition("new", job);
        }
        Ok(outcome)
    }

    async fn get_job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        Ok(self.read_job(id).await?.map(Arc::unwrap_or_clone))
    }

    async fn read_job(&self, id: &str) -> Result<Option<Arc<Job>>, StoreError> {
        if self.serve_reads
            && let Some(job) = self.jobs.get(id)
        {
            return Ok(Some(Arc::clone(&job)));
        }
        let found = self.inner.get_job(id).await?;
        if let Some(job) = &found {
            self.remember(job);
        }
        Ok(found.map(Arc::new))
    }

    async fn update_job(&self, job: &Job) -> Result<Job, StoreError> {
        let before = self.before(job);
        match self.inner.update_job(job).await {
            Ok(stored) => {
                self.written(before, &stored);
                Ok(stored)
            }
            Err(e) => {
                // Someone else wrote it: our copy may be old.
                self.jobs.remove(&job.id);
                Err(e)
            }
        }
    }

    async fn delete_job(&self, id: &str, version: i64) -> Result<(), StoreError> {
        let result = self.inner.delete_job(id, version).await;
        self.jobs.remove(id);
        result
    }

    async fn list_jobs(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
        order: Order,
    ) -> Result<Vec<Job>, StoreError> {
        let page = self.read_jobs(tenant, after, limit, order).await?;
        Ok(page.into_iter().map(Arc::unwrap_or_clone).collect())
    }

    async fn read_jobs(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
        order: Order,
    ) -> Result<Vec<Arc<Job>>, StoreError> {
        if self.serve_reads {
            // The page's ids from the index, the records from memory: no row to decode when every one is here
            // (the usual case: a client lists what it recently made). One missing (evicted, or deleted since)
            // and the page is read whole from the store instead.
            let ids = self.inner.list_job_ids(tenant, after, limit, order).await?;
            let cached: Option<Vec<Arc<Job>>> =
                ids.iter().map(|id| self.jobs.get(id).map(|j| Arc::clone(&j))).collect();
            if let Some(jobs) = cached {
                return Ok(jobs);
            }
        }
        let jobs = self.inner.list_jobs(tenant, after, limit, order).await?;
        Ok(jobs.into_iter().map(Arc::new).collect())
    }

    async fn unfinished_jobs(&self) -> Result<Vec<Unfinished>, StoreError> {
        self.inner.unfinished_jobs().await
    }

    async fn shadow_pairs(&self) -> Result<Vec<(Job, Job)>, StoreError> {
        self.inner.shadow_pairs().await
    }

    async fn insert_character(&self, character: &Character) -> Result<(), StoreError> {
        self.inner.insert_character(character).await
    }

    async fn get_character(&self, id: &str) -> Result<Option<Character>, StoreError> {
        self.inner.get_character(id).await
    }

    async fn count_unfinished(&self, tenant: &str) -> Result<u64, StoreError> {
        self.inner.count_unfinished(tenant).await
    }

    async fn export_jobs(
        &self,
        tenant: Option<&str>,
        since: Option<i64>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, ExportedJob)>, StoreError> {
        self.inner.export_jobs(tenant, since, after, limit).await
    }

    async fn import_job(&self, job: &ExportedJob) -> Result<bool, StoreError> {
        self.inner.import_job(job).await
    }

    async fn list_characters(&self, tenant: Option<&str>) -> Result<Vec<Character>, StoreError> {
        self.inner.list_characters(tenant).await
    }

    async fn import_character(&self, character: &Character) -> Result<bool, StoreError> {
        self.inner.import_character(character).await
    }

    async fn expired_jobs(&self, now: i64, limit: usize) -> Result<Vec<Job>, StoreError> {
        self.inner.expired_jobs(now, limit).await
    }

    async fn queue_depth(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.inner.queue_depth().await
    }

    async fn pending_events(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.inner.pending_events(limit).await
    }

    async fn fan_out(&self, event: &Event, deliveries: &[Delivery]) -> Result<(), StoreError> {
        self.inner.fan_out(event, deliveries).await
    }

    async fn claim_due_deliveries(
        &self,
        now_ms: i64,
        hold_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.inner.claim_due_deliveries(now_ms, hold_until_ms, limit).await
    }

    async fn update_delivery(&self, delivery: &Delivery) -> Result<(), StoreError> {
        self.inner.update_delivery(delivery).await
    }

    async fn list_deliveries(
        &self,
        video_id: Option<&str>,
        state: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.inner.list_deliveries(video_id, state, limit).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }

    async fn claim_unfinished(&self) -> Result<Vec<Unfinished>, StoreError> {
        self.inner.claim_unfinished().await
    }

    async fn claim_job(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.claim_job(id).await
    }

    async fn release_leases(&self) -> Result<(), StoreError> {
        self.inner.release_leases().await
    }

    async fn start_submit(&self, job: &Job, max_at_backend: Option<u32>) -> Result<Option<Job>, StoreError> {
        let before = self.before(job);
        match self.inner.start_submit(job, max_at_backend).await {
            Ok(Some(stored)) => {
                self.written(before, &stored);
                Ok(Some(stored))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                self.jobs.remove(&job.id);
                Err(e)
            }
        }
    }

    async fn heartbeat(&self) -> Result<u32, StoreError> {
        self.inner.heartbeat().await
    }

    async fn record_callback(&self, job_id: &str, payload: &serde_json::Value) -> Result<(), StoreError> {
        self.inner.record_callback(job_id, payload).await
    }

    async fn take_callback(&self, job_id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.inner.take_callback(job_id).await
    }

    fn callback_wakeups(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<String>> {
        self.inner.callback_wakeups()
    }

    async fn take_rate(&self, key: &str, interval_us: i64, burst: u32) -> Result<Option<RateTaken>, StoreError> {
        self.inner.take_rate(key, interval_us, burst).await
    }

    async fn count_toward(&self, key: &str, day: i64, cap: u64) -> Result<bool, StoreError> {
        self.inner.count_toward(key, day, cap).await
    }

    async fn add_to_total(&self, key: &str, n: u64) -> Result<(), StoreError> {
        self.inner.add_to_total(key, n).await
    }

    async fn totals(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        self.inner.totals(prefix).await
    }
}
