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

use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::ModelConfig;
use crate::live::LiveHandle;
use crate::store::{JobStore, StoreError};
use crate::video::{Job, JobError, JobKind, NormalizedRequest, State, Variant, new_id, now_unix_ms};
use crate::worker::WorkerHandle;

use crate::auth::SHADOW_TENANT;

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

// ---- the report ------------------------------------------------------------------------------------------------

/// One primary → candidate comparison (per model).
#[derive(Debug, Serialize, PartialEq)]
pub struct PairStats {
    pub model: String,
    pub primary: String,
    pub shadow: String,
    pub pairs: usize,
    /// Creates the sample called for: the pairs, plus the copies that were not made.
    pub sampled: u64,
    /// Copies the sample called for that were not made, by reason: `dropped` (the queue of copies waiting was
    /// full), `capped` (`shadow_daily_cap`), `failed` (the store refused it). Empty when every copy was made.
    pub missed: BTreeMap<String, u64>,
    /// The sample configured now for this candidate; `None` once it is no longer configured.
    pub sample: Option<f64>,
    /// The share of the primary's creates really compared: `sample` × pairs ÷ sampled. Below `sample` whenever
    /// copies were missed.
    pub effective_sample: Option<f64>,
    /// Pairs where both sides have finished.
    pub finished: usize,
    pub primary_completed: usize,
    pub shadow_completed: usize,
    pub shadow_refused: usize,
    /// Exactly one side ended `moderation_blocked`.
    pub moderation_disagreements: usize,
    pub primary_submit_ms_p50: Option<i64>,
    pub shadow_submit_ms_p50: Option<i64>,
    pub primary_seconds_to_complete_p50: Option<i64>,
    pub primary_seconds_to_complete_p95: Option<i64>,
    pub shadow_seconds_to_complete_p50: Option<i64>,
    pub shadow_seconds_to_complete_p95: Option<i64>,
    /// Mean length (s), resolution and bytes of the completed videos.
    pub primary_video: Option<VideoFacts>,
    pub shadow_video: Option<VideoFacts>,
    /// Estimated from `price_per_second` and the produced length; `None` without a price.
    pub primary_cost_per_video: Option<f64>,
    pub shadow_cost_per_video: Option<f64>,
    /// The candidate's error codes and how often.
    pub shadow_errors: BTreeMap<String, usize>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct VideoFacts {
    pub mean_seconds: f64,
    pub mean_bytes: u64,
    /// The most frequent `WxH`.
    pub resolution: String,
}

fn percentile(mut values: Vec<i64>, p: f64) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let rank = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

fn facts(jobs: &[&Job]) -> Option<VideoFacts> {
    let done: Vec<&&Job> = jobs.iter().filter(|j| j.state == State::Completed).collect();
    let produced: Vec<_> = done.iter().filter_map(|j| j.produced).collect();
    if produced.is_empty() {
        return None;
    }
    let n = produced.len();
    let mut resolutions: BTreeMap<String, usize> = BTreeMap::new();
    for p in &produced {
        *resolutions.entry(format!("{}x{}", p.width, p.height)).or_default() += 1;
    }
    let bytes: u64 = done
        .iter()
        .filter_map(|j| j.assets.iter().find(|a| a.variant == Variant::Video).map(|a| a.bytes))
        .sum();
    Some(VideoFacts {
        mean_seconds: produced.iter().map(|p| p.duration_ms as f64 / 1000.0).sum::<f64>() / n as f64,
        mean_bytes: bytes / done.len().max(1) as u64,
        resolution: resolutions
            .into_iter()
            .max_by_key(|(_, count)| *count)
            .map(|(r, _)| r)
            .unwrap_or_default(),
    })
}

fn cost(jobs: &[&Job], price: Option<f64>) -> Option<f64> {
    let price = price?;
    let done: Vec<f64> = jobs
        .iter()
        .filter(|j| j.state == State::Completed)
        .filter_map(|j| j.produced.map(|p| p.duration_ms as f64 / 1000.0 * price))
        .collect();
    (!done.is_empty()).then(|| done.iter().sum::<f64>() / done.len() as f64)
}

fn seconds_to_complete(jobs: &[&Job]) -> Vec<i64> {
    jobs.iter()
        .filter(|j| j.state == State::Completed)
        .filter_map(|j| j.completed_at.map(|c| c - j.created_at))
        .collect()
}

fn submit_ms(jobs: &[&Job]) -> Vec<i64> {
    jobs.iter()
        .filter_map(|j| j.submitted_at_ms.map(|s| s - j.created_at_ms))
        .collect()
}

fn moderated(j: &Job) -> bool {
    j.error.as_ref().is_some_and(|e| e.code == "moderation_blocked")
}

/// (model, primary backend, candidate backend).
pub type Comparison = (String, String, String);

/// The comparison per (model, primary backend, candidate) from (primary, shadow) pairs and the copies not made
/// ([`missed`]), with the prices and the shadow samples configured now.
pub fn report(
    pairs: &[(Job, Job)],
    missed: &BTreeMap<Comparison, BTreeMap<String, u64>>,
    prices: &BTreeMap<String, f64>,
    models: &BTreeMap<String, ModelConfig>,
) -> Vec<PairStats> {
    let mut groups: BTreeMap<Comparison, Vec<(&Job, &Job)>> = BTreeMap::new();
    for (p, s) in pairs {
        groups
            .entry((p.request.model.clone(), p.backend.clone(), s.backend.clone()))
            .or_default()
            .push((p, s));
    }
    for comparison in missed.keys() {
        groups.entry(comparison.clone()).or_default();
    }
    groups
        .into_iter()
        .map(|((model, primary, shadow), pairs)| {
            let missed = missed
                .get(&(model.clone(), primary.clone(), shadow.clone()))
                .cloned()
                .unwrap_or_default();
            let sampled = pairs.len() as u64 + missed.values().sum::<u64>();
            let sample = models
                .get(&model)
                .and_then(|m| m.shadow.iter().find(|t| t.backend == shadow))
                .map(|t| t.sample);
            let effective_sample = sample
                .filter(|_| sampled > 0)
                .map(|s| s * pairs.len() as f64 / sampled as f64);
            let ps: Vec<&Job> = pairs.iter().map(|(p, _)| *p).collect();
            let ss: Vec<&Job> = pairs.iter().map(|(_, s)| *s).collect();
            let finished: Vec<&(&Job, &Job)> = pairs
                .iter()
                .filter(|(p, s)| p.state.is_terminal() && s.state.is_terminal())
                .collect();
            let mut shadow_errors = BTreeMap::new();
            for s in &ss {
                if let Some(e) = &s.error {
                    *shadow_errors.entry(e.code.clone()).or_default() += 1;
                }
            }
            PairStats {
                pairs: pairs.len(),
                sampled,
                missed,
                sample,
                effective_sample,
                finished: finished.len(),
                primary_completed: ps.iter().filter(|j| j.state == State::Completed).count(),
                shadow_completed: ss.iter().filter(|j| j.state == State::Completed).count(),
                shadow_refused: ss
                    .iter()
                    .filter(|j| j.error.as_ref().is_some_and(|e| e.code == "shadow_refused"))
                    .count(),
                moderation_disagreements: finished.iter().filter(|(p, s)| moderated(p) != moderated(s)).count(),
                primary_submit_ms_p50: percentile(submit_ms(&ps), 0.5),
                shadow_submit_ms_p50: percentile(submit_ms(&ss), 0.5),
                primary_seconds_to_complete_p50: percentile(seconds_to_complete(&ps), 0.5),
                primary_seconds_to_complete_p95: percentile(seconds_to_complete(&ps), 0.95),
                shadow_seconds_to_complete_p50: percentile(seconds_to_complete(&ss), 0.5),
                shadow_seconds_to_complete_p95: percentile(seconds_to_complete(&ss), 0.95),
                primary_video: facts(&ps),
                shadow_video: facts(&ss),
                primary_cost_per_video: cost(&ps, prices.get(&primary).copied()),
                shadow_cost_per_video: cost(&ss, prices.get(&shadow).copied()),
                shadow_errors,
                model,
                primary,
                shadow,
            }
        })
        .collect()
}

fn pct(part: usize, whole: usize) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.0}%", part as f64 * 100.0 / whole as f64)
    }
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref().map_or("-".into(), ToString::to_string)
}

/// The report as text, one block per comparison.
pub fn render(stats: &[PairStats]) -> String {
    if stats.is_empty() {
        return "no shadow jobs yet (set `shadow = [{ backend = \"…\", sample = 0.1 }]` on a model)\n".into();
    }
    let mut out = String::new();
    for s in stats {
        out.push_str(&format!(
            "{} : {} (primary) vs {} (shadow), {} pairs, {} finished\n",
            s.model, s.primary, s.shadow, s.pairs, s.finished
        ));
        let video = |v: &Option<VideoFacts>| {
            v.as_ref().map_or("-".into(), |v| {
                format!("{} {:.1} s {} KiB", v.resolution, v.mean_seconds, v.mean_bytes / 1024)
            })
        };
        let money = |c: &Option<f64>| c.map_or("-".into(), |c| format!("{c:.2}"));
        let rows = [
            (
                "completed",
                pct(s.primary_completed, s.pairs),
                pct(s.shadow_completed, s.pairs),
            ),
            (
                "submit ms p50",
                opt(&s.primary_submit_ms_p50),
                opt(&s.shadow_submit_ms_p50),
            ),
            (
                "complete s p50/p95",
                format!(
                    "{}/{}",
                    opt(&s.primary_seconds_to_complete_p50),
                    opt(&s.primary_seconds_to_complete_p95)
                ),
                format!(
                    "{}/{}",
                    opt(&s.shadow_seconds_to_complete_p50),
                    opt(&s.shadow_seconds_to_complete_p95)
                ),
            ),
            ("video", video(&s.primary_video), video(&s.shadow_video)),
            (
                "cost per video",
                money(&s.primary_cost_per_video),
                money(&s.shadow_cost_per_video),
            ),
        ];
        out.push_str(&format!("  {:<20} {:<28} {:<28}\n", "", "primary", "shadow"));
        for (name, p, sh) in rows {
            out.push_str(&format!("  {name:<20} {p:<28} {sh:<28}\n"));
        }
        out.push_str(&format!(
            "  moderation disagreements: {} of {} finished pairs; refused by the candidate: {}\n",
            s.moderation_disagreements, s.finished, s.shadow_refused
        ));
        if !s.missed.is_empty() {
            let missed: Vec<String> = s.missed.iter().map(|(why, n)| format!("{why} ×{n}")).collect();
            let effective = match (s.sample, s.effective_sample) {
                (Some(sample), Some(effective)) => {
                    format!("; effective sample {effective:.3} of the configured {sample}")
                }
                _ => String::new(),
            };
            out.push_str(&format!(
                "  copies not made: {} of {} sampled ({}){effective}\n",
                s.sampled - s.pairs as u64,
                s.sampled,
                missed.join(", ")
            ));
        }
        if !s.shadow_errors.is_empty() {
            let errors: Vec<String> = s.shadow_errors.iter().map(|(c, n)| format!("{c} ×{n}")).collect();
            out.push_str(&format!("  shadow errors: {}\n", errors.join(", ")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_sampling() {
        assert_eq!(percentile(vec![], 0.5), None);
        assert_eq!(percentile(vec![5, 1, 3], 0.5), Some(3));
        assert_eq!(percentile((1..=100).collect(), 0.95), Some(95));
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

    #[test]
    fn render_says_when_there_is_nothing_yet() {
        assert!(render(&[]).starts_with("no shadow jobs yet"));
    }
}
