//! Shadow mode: a sampled share of new videos is also submitted to candidate backends, off the client's path,
//! so an operator can compare a backend before it serves anyone — and `sora-shim shadow report` does.
//!
//! The client path only *offers* a finished admission to a bounded queue (`try_send`: never waits); when the queue
//! is full the shadow work is dropped and counted. A dispatcher task turns each offer into a shadow job: the same
//! normalized request, on the candidate backend, under a tenant no API key can have (`shadow`), so it is never
//! listed or readable through the API. The worker drives it like any job; its record keeps `shadow_of`, the
//! primary's id. The report pairs them up.
//!
//! A copy the sample called for but that was not made (the queue was full, the daily cap was reached, or it
//! could not be stored) is counted in memory on the spot and added to a running total in the store within a
//! second, so that the report can say how many of the sampled creates it really compares — its effective
//! sample rate — instead of reading as if the configured sample had been met.

use std::collections::BTreeMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::live::LiveHandle;
use crate::store::{JobStore, StoreError};
use crate::video::{Job, JobError, JobKind, NormalizedRequest, State, new_id, now_unix_ms};
use crate::worker::WorkerHandle;

use crate::auth::SHADOW_TENANT;

mod report;

pub use report::{Comparison, PairStats, VideoFacts, render, report};

/// The most copies the dispatcher makes at once.
const COPIES_AT_ONCE: usize = 64;

/// How often copies not made are added to the store's totals (when there are any).
const MISSES_FLUSH_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// The prefix of the store's running totals of copies not made.
const MISSED: &str = "[\"shadow-missed\",";

pub struct Shadow {
    live: LiveHandle,
    tx: mpsc::Sender<(Job, String)>,
    misses: Arc<Misses>,
}

/// Why a copy the sample called for was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Miss {
    /// The queue of copies waiting was full.
    Dropped,
    /// `shadow_daily_cap` was reached.
    Capped,
    /// The store refused it (or could not count it toward the cap).
    Failed,
}

impl Miss {
    fn as_str(self) -> &'static str {
        match self {
            Miss::Dropped => "dropped",
            Miss::Capped => "capped",
            Miss::Failed => "failed",
        }
    }
}

/// Copies not made since the last flush to the store, per (model, primary backend, candidate, reason).
#[derive(Default)]
struct Misses(std::sync::Mutex<BTreeMap<(String, String, String, Miss), u64>>);

impl Misses {
    fn add(&self, primary: &Job, candidate: &str, why: Miss) {
        count(&primary.request.model, candidate, why.as_str());
        let key = (
            primary.request.model.clone(),
            primary.backend.clone(),
            candidate.to_owned(),
            why,
        );
        // A poisoned lock only means another thread panicked mid-increment: the counts are still counts.
        let mut counts = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *counts.entry(key).or_default() += 1;
    }

    /// Adds what was counted to the store's totals; keeps it for the next flush if the store refuses.
    async fn flush(&self, store: &dyn JobStore) {
        let counts = std::mem::take(&mut *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        for ((model, primary, candidate, why), n) in counts {
            let key = missed_key(&model, &primary, &candidate, why.as_str());
            if let Err(e) = store.add_to_total(&key, n).await {
                tracing::warn!(error = %e, "cannot record shadow copies not made; retried in a second");
                let mut counts = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                *counts.entry((model, primary, candidate, why)).or_default() += n;
            }
        }
    }
}

/// The store key of a running total of copies not made: a JSON array, so no name can run into the next.
fn missed_key(model: &str, primary: &str, candidate: &str, why: &str) -> String {
    serde_json::json!(["shadow-missed", model, primary, candidate, why]).to_string()
}

/// Copies not made, per comparison and reason, as the store holds them (keys it cannot read are skipped).
pub async fn missed(store: &dyn JobStore) -> Result<BTreeMap<Comparison, BTreeMap<String, u64>>, StoreError> {
    let mut out: BTreeMap<Comparison, BTreeMap<String, u64>> = BTreeMap::new();
    for (key, n) in store.totals(MISSED).await? {
        if let Ok((_, model, primary, candidate, why)) =
            serde_json::from_str::<(String, String, String, String, String)>(&key)
        {
            *out.entry((model, primary, candidate))
                .or_default()
                .entry(why)
                .or_default() += n;
        }
    }
    Ok(out)
}

impl Shadow {
    pub fn start(
        live: LiveHandle,
        store: Arc<dyn JobStore>,
        worker: WorkerHandle,
        queue: usize,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Shadow> {
        let (tx, mut rx) = mpsc::channel::<(Job, String)>(queue.max(1));
        let misses = Arc::new(Misses::default());
        let shadow = Arc::new(Shadow {
            live: Arc::clone(&live),
            tx,
            misses: Arc::clone(&misses),
        });
        tracker.spawn(async move {
            let mut offers = Vec::with_capacity(COPIES_AT_ONCE);
            let mut flush = tokio::time::interval(MISSES_FLUSH_EVERY);
            flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = flush.tick() => misses.flush(store.as_ref()).await,
                    n = rx.recv_many(&mut offers, COPIES_AT_ONCE) => {
                        if n == 0 {
                            break;
                        }
                        // Every copy waiting is made at once: their inserts share the store's commits instead of
                        // paying one each, so the copies keep up with the creates they mirror.
                        let copies = offers
                            .drain(..)
                            .map(|(primary, backend)| {
                                let (live, store, worker, misses) = (&live, store.as_ref(), &worker, &misses);
                                async move { create_shadow_job(live, store, worker, misses, &primary, &backend).await }
                            });
                        futures_util::future::join_all(copies).await;
                    }
                }
            }
            // What was missed up to the end still counts.
            misses.flush(store.as_ref()).await;
        });
        shadow
    }

    /// Offers a just-admitted video for shadowing. Never waits, never fails the caller.
    pub fn offer(&self, primary: &Job) {
        if primary.kind != JobKind::Create || primary.shadow_of.is_some() {
            return;
        }
        let live = self.live.load();
        let Some(model) = live.models.get(&primary.request.model) else {
            return;
        };
        for target in &model.shadow {
            if target.backend == primary.backend || sample_point(&primary.id, &target.backend) >= target.sample {
                continue;
            }
            // The daily cap is counted in the store, off this path, when the copy is made.
            match self.tx.try_send((primary.clone(), target.backend.clone())) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::debug!(job = %primary.id, backend = %target.backend, "shadow queue full: dropped");
                    self.misses.add(primary, &target.backend, Miss::Dropped);
                }
                // Shutting down: the dispatcher is gone, and so is the comparison this copy would have joined.
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    count(&primary.request.model, &target.backend, "closed");
                }
            }
        }
    }
}

fn count(model: &str, backend: &str, result: &str) {
    if let Some(m) = crate::metrics::get() {
        m.shadow.with_label_values(&[model, backend, result]).inc();
    }
}

/// A point in [0, 1) fixed by the job and the candidate: the same job is always in or out of the sample.
fn sample_point(job_id: &str, backend: &str) -> f64 {
    let digest = Sha256::new()
        .chain_update(job_id)
        .chain_update([0])
        .chain_update(backend)
        .finalize();
    let mut eight = [0u8; 8];
    eight.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(eight) >> 11) as f64 / (1u64 << 53) as f64
}

async fn create_shadow_job(
    live: &LiveHandle,
    store: &dyn JobStore,
    worker: &WorkerHandle,
    misses: &Misses,
    primary: &Job,
    backend: &str,
) {
    // The same request as the primary, as a new job of the candidate's: with the candidate's own provider model
    // and options, under the shadow tenant (no key reaches it), pointing at the primary.
    let request = NormalizedRequest {
        target: None,
        ..primary.request.clone()
    };
    let mut job = Job {
        remixed_from: primary.remixed_from.clone(),
        moderation: primary.moderation.clone(),
        request_hash: primary.request_hash.clone(),
        shadow_of: Some(primary.id.clone()),
        ..Job::accepted(
            new_id("shadow"),
            SHADOW_TENANT.to_owned(),
            primary.kind,
            request,
            backend.to_owned(),
        )
    };
    // A candidate that cannot take the request is part of the comparison: record its refusal.
    let refusal = live
        .load()
        .backends
        .get(backend)
        .map(|b| b.check(job.kind, &job.request));
    match refusal {
        Some(Ok(())) => {}
        Some(Err(r)) => {
            job.state = State::Failed;
            job.error = Some(JobError {
                code: "shadow_refused".into(),
                message: r
                    .message
                    .unwrap_or_else(|| format!("{} {} not offered", r.param, r.value)),
            });
        }
        None => return,
    }
    let model = &primary.request.model;
    // At most `shadow_daily_cap` copies per model and UTC day, counted in the store: across replicas and
    // restarts.
    if let Some(cap) = live.load().models.get(model).and_then(|m| m.shadow_daily_cap) {
        let day = now_unix_ms() / 86_400_000;
        match store.count_toward(&format!("shadow:{model}"), day, cap).await {
            Ok(true) => {}
            Ok(false) => return misses.add(primary, backend, Miss::Capped),
            Err(e) => {
                tracing::warn!(primary = %primary.id, error = %e, "cannot count a shadow copy toward the daily cap");
                return misses.add(primary, backend, Miss::Failed);
            }
        }
    }
    match store.insert_job(&job, None).await {
        Ok(_) => {
            count(model, backend, "queued");
            if job.state == State::Accepted {
                worker.notify(&job.id);
            }
        }
        Err(e) => {
            tracing::warn!(primary = %primary.id, error = %e, "cannot store a shadow job");
            misses.add(primary, backend, Miss::Failed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling() {
        let hits = (0..10_000)
            .filter(|i| sample_point(&format!("video_{i}"), "veo") < 0.1)
            .count();
        assert!((800..=1200).contains(&hits), "{hits}");
        assert_eq!(sample_point("video_1", "veo"), sample_point("video_1", "veo"));
    }

    /// A comparison whose copies were all missed still shows, and names that look like the key's own syntax
    /// cannot run into each other.
    #[tokio::test]
    async fn copies_not_made_are_totalled_per_comparison() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::sqlite::SqliteStore::open(&dir.path().join("s.db")).unwrap();
        let misses = Misses::default();
        let mut primary = Job::accepted(
            "video_1".into(),
            "t".into(),
            JobKind::Create,
            NormalizedRequest {
                prompt: "a fox".into(),
                model: "sora-2".into(),
                size: "1280x720".parse().unwrap(),
                seconds: "4".parse().unwrap(),
                input_reference: None,
                source_video: None,
                characters: Vec::new(),
                extension_seconds: None,
                segments: Vec::new(),
                source_backend_job_id: None,
                target: None,
            },
            "p\",\"q".into(),
        );
        misses.add(&primary, "c", Miss::Dropped);
        misses.add(&primary, "c", Miss::Dropped);
        misses.flush(&store).await;
        misses.add(&primary, "c", Miss::Dropped);
        misses.add(&primary, "c", Miss::Capped);
        primary.backend = "p".into();
        misses.add(&primary, "\",\"q\",\"c", Miss::Failed);
        misses.flush(&store).await;

        let missed = missed(&store).await.unwrap();
        let key = |p: &str, c: &str| ("sora-2".to_owned(), p.to_owned(), c.to_owned());
        assert_eq!(
            missed[&key("p\",\"q", "c")],
            BTreeMap::from([("capped".to_owned(), 1), ("dropped".to_owned(), 3)])
        );
        assert_eq!(
            missed[&key("p", "\",\"q\",\"c")],
            BTreeMap::from([("failed".to_owned(), 1)])
        );

        let stats = report(&[], &missed, &BTreeMap::new(), &BTreeMap::new());
        assert_eq!(stats.len(), 2);
        let s = stats.iter().find(|s| s.shadow == "c").unwrap();
        assert_eq!((s.pairs, s.sampled, s.sample, s.effective_sample), (0, 4, None, None));
    }
}
