//! The worker: drives every unfinished job through dispatch → poll → finalize (DESIGN.md "Job states").
//! Each state change is persisted before the step that depends on it, so a crash at any point is resumed from
//! the store on the next start, and a submission is never silently sent twice (see [`AfterLostSubmit`]).

mod finalize;
mod handle;
mod submit;

use self::handle::Inbox;
pub use self::handle::WorkerHandle;

use std::sync::Arc;
use std::time::Duration;

use dashmap::{DashMap, DashSet};
use rand::Rng;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::assets::AssetStore;
use crate::backends::{AfterLostSubmit, Backend, BackendError, BackendErrorKind, Output, Progress};
use crate::breakers::Breakers;
use crate::config::WorkerConfig;
use crate::live::LiveHandle;
use crate::store::{JobStore, StoreError};
use crate::video::{Asset, Job, JobError, Produced, State, Variant, now_unix, now_unix_ms};

/// Failed copies of a finished video (each after a fresh poll) before the job fails.
const MAX_FINALIZE_ATTEMPTS: u32 = 12;

pub struct Worker {
    store: Arc<dyn JobStore>,
    assets: AssetStore,
    /// Backends and routes (for the fallback order), as last reloaded.
    live: LiveHandle,
    config: WorkerConfig,
    breakers: Arc<Breakers>,
    active: Arc<DashSet<String>>,
    /// Driven jobs the last sweep did not find leased to this replica (another replica's now, or a row busy
    /// at that instant): each asks for its lease again before its next step, and stops if it is gone.
    recheck: DashSet<String>,
    /// Turns per backend (`config.max_active_steps` each): a job holds one while it takes a step, not while it
    /// sleeps.
    steps: DashMap<String, Arc<tokio::sync::Semaphore>>,
    inbox: Arc<Inbox>,
    /// Turns at CPU-bound media work (probes, preview decoding): one per core.
    media: Arc<tokio::sync::Semaphore>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

/// What a step decided: come back after a pause, or stop driving the job.
enum Next {
    After(Duration),
    Stop,
}

impl Worker {
    pub fn new(
        store: Arc<dyn JobStore>,
        assets: AssetStore,
        live: LiveHandle,
        config: WorkerConfig,
        breakers: Arc<Breakers>,
        tracker: TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Worker> {
        Arc::new(Worker {
            store,
            assets,
            live,
            config,
            breakers,
            active: Arc::new(DashSet::new()),
            recheck: DashSet::new(),
            steps: DashMap::new(),
            inbox: Arc::default(),
            media: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(1, |n| n.get()),
            )),
            tracker,
            shutdown,
        })
    }

    /// Starts the dispatcher: resumes every unfinished job now, then drives new ones as they are notified.
    pub fn start(self: &Arc<Self>) -> WorkerHandle {
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        // Callbacks another replica received for jobs this one drives: their next step runs now.
        if let Some(mut wakeups) = self.store.callback_wakeups() {
            let (inbox, shutdown) = (Arc::clone(&self.inbox), self.shutdown.clone());
            self.tracker.spawn(async move {
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        id = wakeups.recv() => match id {
                            Some(id) => {
                                if let Some(waker) = inbox.wakers.get(&id) {
                                    waker.notify_one();
                                }
                            }
                            None => break,
                        },
                    }
                }
            });
        }
        let me = Arc::clone(self);
        self.tracker.spawn(async move {
            // Also renews this replica's leases: at most a third of a lease apart.
            let mut sweep = tokio::time::interval(me.config.sweep_interval);
            loop {
                tokio::select! {
                    _ = me.shutdown.cancelled() => break,
                    Some(id) = rx.recv() => me.drive(id, false),
                    _ = sweep.tick() => me.sweep().await,
                }
            }
            tracing::debug!("worker dispatcher stopped");
        });
        WorkerHandle {
            wake: tx,
            inbox: Arc::clone(&self.inbox),
            store: Arc::clone(&self.store),
        }
    }

    /// Claims (and renews) the leases on every unfinished job this replica may drive, and drives them.
    async fn sweep(self: &Arc<Self>) {
        match self.store.claim_unfinished().await {
            Ok(jobs) => {
                let held: std::collections::HashSet<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
                for id in self.active.iter() {
                    if !held.contains(id.as_str()) {
                        self.recheck.insert(id.clone());
                    }
                }
                // Jobs already at a backend hold their slots before any waiting job is driven: right after a
                // restart a queued job must not be submitted past `max_concurrent` while the backend's count
                // is still empty.
                let live = self.live.load();
                for job in &jobs {
                    if matches!(
                        job.state,
                        State::Submitting | State::Submitted | State::Running | State::Finalizing
                    ) && let Some(backend) = live.backends.get(&job.backend)
                    {
                        backend.claim(&job.id);
                    }
                }
                jobs.into_iter().for_each(|j| self.drive(j.id, true));
            }
            Err(e) => tracing::error!(error = %e, "worker sweep could not claim unfinished jobs"),
        }
    }

    /// Drives one job to a terminal state in its own task, unless a task already does; a job not `claimed` by
    /// a sweep just now is leased first (another replica may own it: then this one leaves it alone).
    fn drive(self: &Arc<Self>, job_id: String, claimed: bool) {
        if !self.active.insert(job_id.clone()) {
            return;
        }
        if !claimed {
            self.recheck.insert(job_id.clone());
        }
        let me = Arc::clone(self);
        let waker = Arc::clone(
            self.inbox
                .wakers
                .entry(job_id.clone())
                .or_insert_with(|| Arc::new(tokio::sync::Notify::new()))
                .value(),
        );
        let fut = async move {
            loop {
                // Boxed, so that a task sleeping between polls holds only this loop's small state.
                let next = Box::pin(me.turn(&job_id)).await;
                let Next::After(pause) = next else { break };
                tokio::select! {
                    _ = me.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(pause) => {}
                    // A provider callback arrived: act on it now rather than at the next poll.
                    _ = waker.notified() => {}
                }
            }
            let finished = Box::pin(me.release_if_finished(&job_id)).await;
            me.inbox.wakers.remove(&job_id);
            // A callback that came in while this task was stopping (its lease went to another replica, or
            // shutdown) goes through the store to whoever drives the job now.
            if let Some((_, payload)) = me.inbox.callbacks.remove(&job_id)
                && !finished
                && let Err(e) = me.store.record_callback(&job_id, &payload).await
            {
                tracing::warn!(job = %job_id, error = %e, "cannot pass a provider callback on; the next poll makes up for it");
            }
            me.active.remove(&job_id);
        };
        self.tracker.spawn(fut);
    }

    /// One step of a job, when its backend has a turn free (`max_active_steps`). Waiting for its turn, a job
    /// holds neither its record nor a step's state; a shutdown stops the wait.
    async fn turn(&self, job_id: &str) -> Next {
        if self.recheck.remove(job_id).is_some() && !self.holds(job_id).await {
            return Next::Stop;
        }
        let backend = match self.store.get_job(job_id).await {
            Ok(Some(job)) if job.state.is_terminal() => return Next::Stop,
            Ok(Some(job)) => job.backend,
            Ok(None) => return Next::Stop,
            Err(e) => return self.unreadable(job_id, &e),
        };
        let turns = self.steps_for(&backend);
        let permit = tokio::select! {
            _ = self.shutdown.cancelled() => return Next::Stop,
            permit = turns.acquire_owned() => permit,
        };
        let Ok(_permit) = permit else { return Next::Stop };
        match self.store.get_job(job_id).await {
            // Boxed: a step's future (HTTP calls, asset copies) is large, and a job waiting for its turn must
            // not hold that much.
            Ok(Some(job)) if !job.state.is_terminal() => Box::pin(self.step(job)).await,
            Ok(_) => Next::Stop,
            Err(e) => self.unreadable(job_id, &e),
        }
    }

    /// Whether this replica holds (or has just taken) the lease on a job.
    async fn holds(&self, job_id: &str) -> bool {
        match self.store.claim_job(job_id).await {
            Ok(true) => true,
            Ok(false) => {
                tracing::debug!(job = %job_id, "job is finished or driven by another replica");
                false
            }
            Err(e) => {
                // The sweep tries again; meanwhile nothing is sent for a job this replica may not own.
                tracing::warn!(job = %job_id, error = %e, "cannot lease job");
                false
            }
        }
    }

    /// The turns (`max_active_steps`) for the jobs of one backend: a backend that is slow or rate-limited holds
    /// only its own turns, never another backend's.
    fn steps_for(&self, backend: &str) -> Arc<tokio::sync::Semaphore> {
        if let Some(turns) = self.steps.get(backend) {
            return Arc::clone(turns.value());
        }
        let turns = self
            .steps
            .entry(backend.to_owned())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(self.config.max_active_steps.max(1))));
        Arc::clone(turns.value())
    }

    fn unreadable(&self, job_id: &str, e: &StoreError) -> Next {
        tracing::error!(job = %job_id, error = %e, "cannot read job");
        Next::After(self.config.retry_max)
    }

    /// Whatever way a job ended (completed, failed, rejected, lost), its backend frees what it kept for it.
    /// Lets the backend free what it held for a finished job, and drops a callback still waiting for it in the
    /// store. True if the job is finished.
    async fn release_if_finished(&self, job_id: &str) -> bool {
        let Ok(Some(job)) = self.store.get_job(job_id).await else {
            return false;
        };
        if !job.state.is_terminal() {
            return false;
        }
        if let Some(backend) = self.live.load().backends.get(&job.backend).cloned() {
            if backend.takes_callbacks()
                && let Err(e) = self.store.take_callback(job_id).await
            {
                tracing::debug!(job = %job_id, error = %e, "cannot drop a finished job's waiting callback");
            }
            backend.release(&job).await;
        }
        true
    }

    async fn step(&self, job: Job) -> Next {
        let wait_ms = job.next_attempt_at_ms - now_unix_ms();
        if wait_ms > 0 {
            return Next::After(Duration::from_millis(wait_ms as u64));
        }
        let Some(backend) = self.live.load().backends.get(&job.backend).cloned() else {
            let error = JobError {
                code: "internal_error".into(),
                message: format!(
                    "The backend {:?} that this video was queued on is no longer configured.",
                    job.backend
                ),
            };
            return self.fail(job, error).await;
        };
        if let Some(error) = self.past_deadline(&job) {
            tracing::warn!(job = %job.id, backend = %job.backend, code = %error.code, "job past its deadline");
            return self.fail(job, error).await;
        }
        let result = match job.state {
            State::Accepted => self.submit(job, backend.as_ref()).await,
            State::Submitting => self.lost_submit(job, backend.as_ref()).await,
            State::Submitted | State::Running | State::Finalizing => self.poll(job, backend.as_ref()).await,
            State::Completed | State::Failed => Ok(Next::Stop),
        };
        result.unwrap_or_else(|e| match e {
            // Changed under us (deleted, or written by another worker): re-read and decide again.
            StoreError::Conflict(_) => Next::After(Duration::ZERO),
            e => {
                tracing::error!(error = %e, "job store write failed");
                Next::After(self.config.retry_max)
            }
        })
    }

    /// Persists `job` with a fresh `updated_at` and returns the stored copy.
    async fn save(&self, mut job: Job) -> Result<Job, StoreError> {
        job.updated_at = now_unix();
        self.store.update_job(&job).await
    }

    /// Persists a job the provider has just accepted. Its provider id exists only in memory until this write
    /// succeeds, so a store that cannot write now (disk full, I/O error) is retried here rather than the job
    /// dropped back to `submitting`, whose recovery would resubmit or fail it. Only a shutdown (or a crash)
    /// gives up, leaving the documented `submitting` ambiguity.
    async fn save_accepted(&self, job: Job) -> Result<Job, StoreError> {
        let mut pause = self.config.retry_base;
        loop {
            match self.save(job.clone()).await {
                Err(e @ (StoreError::Full(_) | StoreError::Backend(_))) => {
                    tracing::error!(job = %job.id, error = %e, "cannot record the provider's job id yet; retrying");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => return Err(e),
                        _ = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(self.config.retry_max);
                }
                saved => return saved,
            }
        }
    }

    /// A job no backend would take, or one a backend has kept unfinished, for too long: it fails with a clear
    /// error rather than staying `queued` or `in_progress` forever.
    fn past_deadline(&self, job: &Job) -> Option<JobError> {
        let age = Duration::from_secs(u64::try_from(now_unix() - job.created_at).unwrap_or(0));
        match job.state {
            State::Accepted if age > self.config.queue_deadline => Some(JobError {
                code: "backend_unavailable".into(),
                message: format!(
                    "No video backend could accept this video within {} s; nothing was generated. Try again later.",
                    self.config.queue_deadline.as_secs()
                ),
            }),
            State::Submitted | State::Running if age > self.config.job_deadline => Some(JobError {
                code: "backend_timeout".into(),
                message: format!(
                    "The video backend did not finish this video within {} s.",
                    self.config.job_deadline.as_secs()
                ),
            }),
            _ => None,
        }
    }

    async fn poll(&self, job: Job, backend: &dyn Backend) -> Result<Next, StoreError> {
        let mut callback = self.inbox.callbacks.remove(&job.id).map(|(_, payload)| payload);
        if callback.is_none() && backend.takes_callbacks() {
            // One another replica (or this one, before it drove the job) received and recorded.
            callback = self.store.take_callback(&job.id).await.unwrap_or_else(|e| {
                tracing::warn!(job = %job.id, error = %e, "cannot read a recorded callback; polling instead");
                None
            });
        }
        let polled = match callback {
            Some(payload) => backend.on_callback(&job, &payload).await,
            None => backend.poll(&job).await,
        };
        match &polled {
            Err(BackendError {
                kind: BackendErrorKind::Unavailable | BackendErrorKind::Ambiguous,
                ..
            }) => self.breakers.record(backend.name(), false),
            _ => self.breakers.record(backend.name(), true),
        }
        let progress = match polled {
            Ok(p) => p,
            Err(BackendError {
                kind: BackendErrorKind::Rejected(error),
                message,
                ..
            }) => {
                // Asking again would get the same answer (the backend says so, or the answer is unreadable).
                tracing::warn!(job = %job.id, error = %message, "poll failed for good");
                return Ok(self.fail(job, error).await);
            }
            Err(e) => {
                tracing::warn!(job = %job.id, error = %e, "poll failed; will retry");
                let pause = self.backoff(job.attempts.max(1), e.retry_after);
                return Ok(Next::After(Duration::from_millis(pause as u64)));
            }
        };
        let mut job = job;
        match progress {
            Progress::Queued => {
                tracing::debug!(job = %job.id, backend = backend.name(), "polled: still queued at the backend");
                Ok(Next::After(self.poll_interval(backend)))
            }
            Progress::Running(p) => {
                // At least 1 once running: the client-visible status is derived from it and must not go back.
                let p = p.clamp(1, 99).max(job.progress);
                tracing::debug!(job = %job.id, backend = backend.name(), progress = p, "polled: generating");
                if job.state != State::Running || p != job.progress {
                    job.state = State::Running;
                    job.progress = p;
                    self.save(job).await?;
                }
                Ok(Next::After(self.poll_interval(backend)))
            }
            Progress::Done(outputs) => {
                if job.state != State::Finalizing {
                    job.state = State::Finalizing;
                    job.progress = job.progress.max(99);
                    job = self.save(job).await?;
                }
                self.finalize(job, outputs, backend).await
            }
            Progress::Failed(error) => Ok(self.fail(job, error).await),
            Progress::Lost => {
                // Not an unknown outcome: the backend says it has no such job (a local render stopped by a restart).
                if backend.after_lost_submit() == AfterLostSubmit::Resubmit {
                    tracing::info!(job = %job.id, backend = backend.name(), "the backend no longer has this job (stopped by a restart); submitting it again");
                }
                self.lost_submit(job, backend).await
            }
        }
    }

    async fn fail(&self, mut job: Job, error: JobError) -> Next {
        tracing::info!(job = %job.id, code = %error.code, "video failed");
        if error.code == "moderation_blocked" {
            // The provider's verdict lands where a prompt policy's does.
            let verdict = crate::video::Verdict::from_backend(&job.backend, &error.message);
            crate::moderation::count_verdict(&verdict);
            job.moderation = Some(verdict);
        }
        job.state = State::Failed;
        job.error = Some(error);
        match self.save(job).await {
            Ok(job) => {
                if let Some(e) = &job.error {
                    count_finished(&job, &e.code);
                }
                Next::Stop
            }
            Err(StoreError::Conflict(_)) => Next::After(Duration::ZERO),
            Err(e) => {
                tracing::error!(error = %e, "cannot persist a failed job");
                Next::After(self.config.retry_max)
            }
        }
    }

    /// Exponential backoff with full jitter, at least what the backend asked for.
    fn backoff(&self, attempt: u32, asked: Option<Duration>) -> i64 {
        let base = self.config.retry_base.as_millis() as u64;
        let cap = self.config.retry_max.as_millis() as u64;
        let exp = base.saturating_mul(1u64 << attempt.min(16)).min(cap);
        let jittered = rand::rng().random_range(exp / 2..=exp.max(1));
        let asked = asked.map(|d| d.as_millis() as u64).unwrap_or(0);
        jittered.max(asked) as i64
    }
}

/// `sora_shim_jobs_finished_total` for a job that just ended.
fn count_finished(job: &Job, outcome: &str) {
    if let Some(m) = crate::metrics::get() {
        let role = if job.shadow_of.is_some() { "shadow" } else { "primary" };
        m.finished
            .with_label_values(&[job.request.model.as_str(), job.backend.as_str(), role, outcome])
            .inc();
    }
}
