//! Sending a job to its backend: the submit step, falling over to another target when a backend refuses or is
//! down, and what happens to a job whose submission's outcome a crash left unknown.

use std::time::Duration;

use super::{Next, Worker};
use crate::backends::{AfterLostSubmit, Backend, BackendError, BackendErrorKind};
use crate::store::StoreError;
use crate::video::{Job, JobError, JobKind, State, now_unix, now_unix_ms};

impl Worker {
    pub(super) async fn submit(&self, job: Job, backend: &dyn Backend) -> Result<Next, StoreError> {
        if !self.breakers.allow(backend.name()) {
            let wait = self.breakers.retry_in(backend.name());
            return self.fail_over_or_wait(job, "its circuit is open", Some(wait)).await;
        }
        let mut job = job;
        job.state = State::Submitting;
        job.attempts += 1;
        job.backend_version = backend.version().to_owned();
        job.updated_at = now_unix();
        // The backend's `max_concurrent` is counted in the store, across every replica, with this write.
        let Some(job) = self.store.start_submit(&job, backend.max_concurrent()).await? else {
            tracing::debug!(job = %job.id, backend = backend.name(), "backend at max_concurrent; the job waits");
            return Ok(Next::After(self.poll_interval(backend)));
        };
        let outcome = backend.submit(&job).await;
        match &outcome {
            Ok(_)
            | Err(BackendError {
                kind: BackendErrorKind::Rejected(_),
                ..
            }) => {
                self.breakers.record(backend.name(), true);
            }
            Err(BackendError {
                kind: BackendErrorKind::Busy,
                ..
            }) => self.breakers.abandon_probe(backend.name()),
            Err(_) => self.breakers.record(backend.name(), false),
        }
        match outcome {
            Ok(submitted) => {
                let mut job = job;
                job.state = State::Submitted;
                job.submitted_at_ms = Some(now_unix_ms());
                job.backend_job_id = Some(submitted.backend_job_id);
                job.backend_data = submitted.data;
                self.save_accepted(job).await?;
                Ok(Next::After(self.poll_interval(backend)))
            }
            Err(e) => match e.kind {
                // A submit stores nothing of ours, so `StorageFull` is only a backend's own disk (the local one):
                // nothing was accepted.
                BackendErrorKind::Unavailable | BackendErrorKind::StorageFull => {
                    tracing::warn!(job = %job.id, error = %e, "submit failed before anything was accepted");
                    let mut job = job;
                    job.state = State::Accepted;
                    let job = self.save(job).await?;
                    self.fail_over_or_wait(job, "it could not take the job now", e.retry_after)
                        .await
                }
                BackendErrorKind::Ambiguous => {
                    tracing::warn!(job = %job.id, error = %e, "submit outcome unknown");
                    self.lost_submit(job, backend).await
                }
                BackendErrorKind::Rejected(error) => Ok(self.fail(job, error).await),
                BackendErrorKind::Busy => {
                    // Not an attempt: the job waits its turn in `queued`.
                    let mut job = job;
                    job.state = State::Accepted;
                    job.attempts -= 1;
                    job.next_attempt_at_ms = now_unix_ms() + self.poll_interval(backend).as_millis() as i64;
                    self.save(job).await?;
                    Ok(Next::After(Duration::ZERO))
                }
            },
        }
    }

    /// A job its backend cannot take now (nothing was accepted there): it moves to the next backend in its
    /// route's fallback order that is up and accepts the request, or waits and tries again. Only new videos move:
    /// a remix, edit or extension of one of our videos stays with the backend that holds its source.
    pub(super) async fn fail_over_or_wait(
        &self,
        mut job: Job,
        why: &str,
        retry_after: Option<Duration>,
    ) -> Result<Next, StoreError> {
        if let Some(next) = self.fallback_for(&job) {
            tracing::warn!(job = %job.id, from = %job.backend, to = %next, "failing over: {why}");
            if let Some(m) = crate::metrics::get() {
                m.failovers
                    .with_label_values(&[job.request.model.as_str(), job.backend.as_str(), next.as_str()])
                    .inc();
            }
            job.backend = next;
            // The target's provider model and options were for the backend it leaves.
            job.request.target = None;
            job.state = State::Accepted;
            job.next_attempt_at_ms = 0;
            self.save(job).await?;
            return Ok(Next::After(Duration::ZERO));
        }
        job.state = State::Accepted;
        job.next_attempt_at_ms = now_unix_ms() + self.backoff(job.attempts.max(1), retry_after);
        self.save(job).await?;
        Ok(Next::After(Duration::ZERO))
    }

    fn fallback_for(&self, job: &Job) -> Option<String> {
        if job.kind != JobKind::Create && job.request.source_backend_job_id.is_some() {
            return None;
        }
        let live = self.live.load();
        let route = live.routes.get(&job.request.model)?;
        let mut current = job.backend.as_str();
        while let Some(next) = route.next_after(current) {
            let usable = live.backends.get(next).is_some_and(|b| {
                self.breakers.state(next) != crate::breakers::CircuitState::Open
                    && b.check(job.kind, &job.request).is_ok()
            });
            if usable {
                return Some(next.to_owned());
            }
            current = next;
        }
        None
    }

    pub(super) fn poll_interval(&self, backend: &dyn Backend) -> Duration {
        backend.poll_interval().unwrap_or(self.config.poll_interval)
    }

    /// A submission whose outcome is unknown (crash mid-submit, timeout, or a backend that forgot the job).
    pub(super) async fn lost_submit(&self, mut job: Job, backend: &dyn Backend) -> Result<Next, StoreError> {
        match backend.after_lost_submit() {
            AfterLostSubmit::Resubmit => {
                if job.state == State::Submitting {
                    tracing::info!(job = %job.id, backend = backend.name(), "resubmitting a job whose submission was interrupted (this backend may take it twice)");
                }
                job.state = State::Accepted;
                job.backend_job_id = None;
                self.save(job).await?;
                Ok(Next::After(Duration::ZERO))
            }
            AfterLostSubmit::Fail => {
                let error = JobError {
                    code: "submission_outcome_unknown".into(),
                    message: "The video backend may or may not have accepted this job, and it was not resubmitted \
                              to avoid paying for a second generation. Create the video again."
                        .into(),
                };
                Ok(self.fail(job, error).await)
            }
        }
    }
}
