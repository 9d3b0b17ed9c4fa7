//! A `dashmap` in front of a [`JobStore`]: polls (`GET /v1/videos/{id}`, about once a second per client) are
//! answered from memory. Every write goes through here, so within one process the cache is never stale — and so
//! every job state transition is seen here: logged (job id, backend, backend job id) and counted.

use std::sync::Arc;

use async_trait::async_trait;
use dashmap::DashMap;

use super::{Delivery, Event, ExportedJob, Inserted, JobStore, Order, StoreError, Unfinished};
use crate::video::{Character, Job};

pub struct CachedStore {
    inner: Arc<dyn JobStore>,
    jobs: DashMap<String, Job>,
    capacity: usize,
}

impl CachedStore {
    pub fn new(inner: Arc<dyn JobStore>, capacity: usize) -> CachedStore {
        CachedStore {
            inner,
            jobs: DashMap::new(),
            capacity,
        }
    }

    fn remember(&self, job: &Job) {
        if self.jobs.len() >= self.capacity {
            // Finished jobs are re-read cheaply and rarely; drop them first to make room.
            self.jobs.retain(|_, j| !j.state.is_terminal());
            if self.jobs.len() >= self.capacity {
                self.jobs.clear();
            }
        }
        self.jobs.insert(job.id.clone(), job.clone());
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
    async fn insert_job(&self, job: &Job) -> Result<Inserted, StoreError> {
        let outcome = self.inner.insert_job(job).await?;
        if let Inserted::New = outcome {
            self.remember(job);
            transition("new", job);
        }
        Ok(outcome)
    }

    async fn get_job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        if let Some(job) = self.jobs.get(id) {
            return Ok(Some(job.clone()));
        }
        let found = self.inner.get_job(id).await?;
        if let Some(job) = &found {
            self.remember(job);
        }
        Ok(found)
    }

    async fn update_job(&self, job: &Job) -> Result<Job, StoreError> {
        // The copy this write replaces (same version), if this process has it.
        let before = self
            .jobs
            .get(&job.id)
            .filter(|j| j.version == job.version)
            .map(|j| j.state);
        match self.inner.update_job(job).await {
            Ok(stored) => {
                self.remember(&stored);
                match before {
                    Some(state) if state == stored.state => {}
                    Some(state) => transition(state.as_str(), &stored),
                    None => transition("unknown", &stored),
                }
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
        self.inner.list_jobs(tenant, after, limit, order).await
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

    async fn due_deliveries(&self, now_ms: i64, limit: usize) -> Result<Vec<Delivery>, StoreError> {
        self.inner.due_deliveries(now_ms, limit).await
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
}
