//! What the rest of the shim holds of the worker: a handle that wakes it for new jobs and hands it provider
//! callbacks, and the inbox those wait in.

use std::sync::Arc;

use dashmap::DashMap;
use tokio::sync::mpsc;

use crate::store::{JobStore, StoreError};

/// Handle the API uses to hand new jobs to the worker.
#[derive(Clone)]
pub struct WorkerHandle {
    pub(super) wake: mpsc::UnboundedSender<String>,
    pub(super) inbox: Arc<Inbox>,
    pub(super) store: Arc<dyn JobStore>,
}

/// Verified provider callbacks waiting for their job's next step, and a way to cut that job's pause short.
#[derive(Default)]
pub(super) struct Inbox {
    pub(super) callbacks: DashMap<String, serde_json::Value>,
    pub(super) wakers: DashMap<String, Arc<tokio::sync::Notify>>,
}

impl WorkerHandle {
    /// A verified callback for `job_id`: its next step reads it instead of polling, and that step runs now.
    /// A job this process drives gets it in memory (a callback lost to a crash is made up by the next poll);
    /// any other goes through the store to whichever replica drives it, or to this one if none does.
    pub async fn callback(&self, job_id: &str, payload: serde_json::Value) -> Result<(), StoreError> {
        if let Some(waker) = self.inbox.wakers.get(job_id) {
            self.inbox.callbacks.insert(job_id.to_owned(), payload);
            waker.notify_one();
            return Ok(());
        }
        self.store.record_callback(job_id, &payload).await?;
        self.notify(job_id);
        Ok(())
    }

    pub fn notify(&self, job_id: &str) {
        // A closed channel means shutdown; the job is persisted and resumes on the next start.
        let _ = self.wake.send(job_id.to_owned());
    }

    /// False once the dispatcher has stopped.
    pub fn is_running(&self) -> bool {
        !self.wake.is_closed()
    }
}
