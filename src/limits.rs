//! Per-tenant limits: requests per minute (a GCRA bucket per tenant, burst = the per-minute limit: `governor` in
//! memory for one process, one row in the store that every replica shares otherwise) and unfinished jobs at
//! once (checked and admitted under one per-tenant lock, so two racing creates cannot both take the last slot).
//! Over a limit: 429 `rate_limit_exceeded` with the `x-ratelimit-*` headers and `retry-after`, which the SDKs
//! honour. And a backend's calls per second, shared out among the live replicas ([`SharedRate`]).

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::auth::Tenant;
use crate::store::{JobStore, RateTaken};

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// How long a client over its unfinished-jobs cap is asked to wait: jobs take seconds to minutes.
const CONCURRENT_RETRY_AFTER: Duration = Duration::from_secs(5);

/// A request over one of its tenant's limits: a 429 `rate_limit_exceeded` (rendered in `api/error.rs`).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct LimitError {
    pub message: String,
    /// For the `x-ratelimit-*-requests` headers (requests-per-minute limits only).
    pub state: Option<RateState>,
    pub retry_after: Duration,
}

/// What the `x-ratelimit-*-requests` headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateState {
    pub limit: u32,
    pub remaining: u32,
    /// Until the bucket is full again.
    pub reset: Duration,
}

struct TenantRate {
    per_minute: NonZeroU32,
    limiter: Limiter,
}

#[derive(Default)]
pub struct Limits {
    rates: DashMap<String, Arc<TenantRate>>,
    admitting: DashMap<String, Arc<tokio::sync::Mutex<()>>>,
}

impl Limits {
    /// Counts one request against the tenant's per-minute limit. `Ok(None)`: the tenant has no limit. Where
    /// the store is shared by several replicas the bucket is the store's (exact across replicas: one statement
    /// per request); if the store cannot be reached the request is counted on this replica only, never refused
    /// for that.
    pub async fn check_request(&self, tenant: &Tenant, store: &dyn JobStore) -> Result<Option<RateState>, LimitError> {
        let Some(per_minute) = tenant.requests_per_minute else {
            return Ok(None);
        };
        let limit = per_minute.get();
        let interval_us = (60_000_000 / i64::from(limit)).max(1);
        match store
            .take_rate(&format!("tenant:{}", tenant.id), interval_us, limit)
            .await
        {
            Ok(Some(taken)) => return shared_outcome(tenant, limit, interval_us, taken),
            Ok(None) => {}
            Err(e) => tracing::warn!(
                tenant = %tenant.name, error = %e,
                "cannot count a request in the shared rate limit; counting it on this replica only"
            ),
        }
        self.check_in_memory(tenant, per_minute)
    }

    fn check_in_memory(&self, tenant: &Tenant, per_minute: NonZeroU32) -> Result<Option<RateState>, LimitError> {
        let limit = per_minute.get();
        let rate = self.rate(&tenant.id, per_minute);
        let refill = Duration::from_secs(60) / limit;
        match rate.limiter.check() {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                Ok(Some(RateState {
                    limit,
                    remaining,
                    reset: refill * (limit - remaining.min(limit)),
                }))
            }
            Err(not_until) => Err(over_rate(
                tenant,
                limit,
                not_until.wait_time_from(rate.limiter.clock().now()),
                refill * limit,
            )),
        }
    }

    fn rate(&self, tenant: &str, per_minute: NonZeroU32) -> Arc<TenantRate> {
        if let Some(r) = self.rates.get(tenant)
            && r.per_minute == per_minute
        {
            return Arc::clone(&r);
        }
        // New tenant, or its limit changed in a reload: a fresh, full bucket.
        let fresh = Arc::new(TenantRate {
            per_minute,
            limiter: RateLimiter::direct(Quota::per_minute(per_minute)).with_middleware::<StateInformationMiddleware>(),
        });
        self.rates.insert(tenant.to_owned(), Arc::clone(&fresh));
        fresh
    }

    /// Held while a tenant's unfinished jobs are counted and a new one is persisted.
    pub async fn admitting(&self, tenant: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = Arc::clone(self.admitting.entry(tenant.to_owned()).or_default().value());
        lock.lock_owned().await
    }

    /// The 429 for a tenant at its unfinished-jobs cap.
    pub fn too_many_unfinished(tenant: &Tenant, limit: u32) -> LimitError {
        count_rejection(&tenant.name, "concurrent_jobs");
        LimitError {
            message: format!(
                "Too many unfinished videos: the limit is {limit} queued or in progress at once. Try again when one \
                 has completed or failed."
            ),
            state: None,
            retry_after: CONCURRENT_RETRY_AFTER,
        }
    }
}

/// The headers or the 429 for a request counted in the store's bucket (see [`RateTaken`]).
fn shared_outcome(
    tenant: &Tenant,
    limit: u32,
    interval_us: i64,
    taken: RateTaken,
) -> Result<Option<RateState>, LimitError> {
    let ahead = u64::try_from(taken.tat_us.saturating_sub(taken.now_us)).unwrap_or(0);
    let interval = interval_us.unsigned_abs().max(1);
    if taken.allowed {
        let used = ahead.div_ceil(interval).min(u64::from(limit));
        Ok(Some(RateState {
            limit,
            remaining: limit - u32::try_from(used).unwrap_or(limit),
            reset: Duration::from_micros(ahead),
        }))
    } else {
        // The next request fits once the bucket has drained by one interval below its window.
        let window = interval.saturating_mul(u64::from(limit));
        let wait = (ahead + interval).saturating_sub(window);
        Err(over_rate(
            tenant,
            limit,
            Duration::from_micros(wait.max(1)),
            Duration::from_micros(ahead),
        ))
    }
}

fn over_rate(tenant: &Tenant, limit: u32, wait: Duration, reset: Duration) -> LimitError {
    count_rejection(&tenant.name, "requests");
    LimitError {
        message: format!(
            "Rate limit reached for requests per min (RPM): Limit {limit}, Used {limit}, Requested 1. Please try \
             again in {}.",
            format_duration(wait)
        ),
        state: Some(RateState {
            limit,
            remaining: 0,
            reset,
        }),
        retry_after: wait,
    }
}

/// How many replicas are alive (this one included), as the last heartbeat in the store counted them: the
/// divisor of limits shared out among replicas. 1 until the first heartbeat, and always with SQLite.
#[derive(Debug, Clone)]
pub struct LiveReplicas(Arc<AtomicU32>);

impl Default for LiveReplicas {
    fn default() -> Self {
        LiveReplicas(Arc::new(AtomicU32::new(1)))
    }
}

impl LiveReplicas {
    pub fn get(&self) -> u32 {
        self.0.load(Ordering::Relaxed).max(1)
    }

    pub fn set(&self, n: u32) {
        self.0.store(n.max(1), Ordering::Relaxed);
    }
}

/// A backend's `requests_per_second`, shared out among the live replicas: with `n` alive, each sends one call
/// every `n / requests_per_second` seconds, evenly spaced with no burst, so a provider metering calls per second
/// sees about its limit from all replicas together.
///
/// Each caller reserves the next free instant (one queue, first come first served) and sleeps until it; the
/// spacing is read at each reservation, so a change in the count applies from the next call on, with no second
/// queue released at the old pace. (By hand rather than `governor`, whose quota is fixed when the limiter is
/// built: rebuilding it on a change would leave the callers already waiting on the old one.) A caller that
/// gives up while waiting leaves its instant unused.
pub struct SharedRate {
    per_second: NonZeroU32,
    replicas: LiveReplicas,
    next: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl SharedRate {
    pub fn new(per_second: NonZeroU32, replicas: LiveReplicas) -> SharedRate {
        SharedRate {
            per_second,
            replicas,
            next: std::sync::Mutex::new(None),
        }
    }

    /// Waits until this replica may send the next call.
    pub async fn until_ready(&self) {
        let spacing = Duration::from_secs_f64(f64::from(self.replicas.get()) / f64::from(self.per_second.get()));
        let at = {
            // Nothing is left half-written under this lock: a poisoned one is as good as any.
            let mut next = self.next.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = tokio::time::Instant::now();
            let at = next.map_or(now, |n| n.max(now));
            *next = Some(at + spacing);
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

fn count_rejection(tenant: &str, limit: &str) {
    if let Some(m) = crate::metrics::get() {
        m.rate_limited.with_label_values(&[tenant, limit]).inc();
    }
}

/// OpenAI's duration style for `x-ratelimit-reset-*`: `12ms`, `1.5s`, `6m0s`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        let s = format!("{:.3}", d.as_secs_f64());
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    } else {
        format!("{}m{}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(per_minute: u32) -> Tenant {
        Tenant {
            id: "acme".into(),
            name: "acme".into(),
            requests_per_minute: NonZeroU32::new(per_minute),
            max_unfinished_jobs: None,
        }
    }

    /// The one-process path (the shared path's statement is tested against PostgreSQL in tests/store.rs).
    fn check(limits: &Limits, t: &Tenant) -> Result<Option<RateState>, LimitError> {
        match t.requests_per_minute {
            Some(n) => limits.check_in_memory(t, n),
            None => Ok(None),
        }
    }

    #[test]
    fn a_shared_bucket_reads_like_the_memory_one() {
        let t = tenant(3);
        let interval = 20_000_000; // 60 s / 3
        let now = 1_000_000_000;
        // First request of an empty bucket: the same headers as governor's (2 left, full again in 20 s).
        let first = shared_outcome(
            &t,
            3,
            interval,
            RateTaken {
                allowed: true,
                tat_us: now + interval,
                now_us: now,
            },
        );
        assert_eq!(
            first.unwrap(),
            Some(RateState {
                limit: 3,
                remaining: 2,
                reset: Duration::from_secs(20)
            })
        );
        let third = shared_outcome(
            &t,
            3,
            interval,
            RateTaken {
                allowed: true,
                tat_us: now + 3 * interval,
                now_us: now,
            },
        );
        assert_eq!(third.unwrap().unwrap().remaining, 0);
        // Refused 5 s later: the next request fits when one interval has drained, 15 s from then.
        let later = now + 5_000_000;
        match shared_outcome(
            &t,
            3,
            interval,
            RateTaken {
                allowed: false,
                tat_us: now + 3 * interval,
                now_us: later,
            },
        ) {
            Err(LimitError {
                retry_after,
                state: Some(state),
                ..
            }) => {
                assert_eq!(retry_after, Duration::from_secs(15));
                assert_eq!(state.remaining, 0);
                assert_eq!(state.reset, Duration::from_secs(55));
            }
            other => panic!("expected a 429, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_backends_rate_is_shared_out_among_live_replicas() {
        // 20 calls per second: one every 50 ms from a lone replica, one every 200 ms from each of four.
        let replicas = LiveReplicas::default();
        let rate = SharedRate::new(NonZeroU32::new(20).unwrap(), replicas.clone());
        let start = tokio::time::Instant::now();
        let mut at = Vec::new();
        for i in 0..6 {
            if i == 3 {
                replicas.set(4);
            }
            rate.until_ready().await;
            at.push(start.elapsed().as_millis());
        }
        // The fourth call was booked at the old pace; from then on, four replicas share the rate.
        assert_eq!(at, vec![0, 50, 100, 150, 350, 550]);
        replicas.set(0);
        assert_eq!(replicas.get(), 1, "this replica always counts itself");
    }

    #[tokio::test(start_paused = true)]
    async fn a_change_in_the_count_never_releases_two_queues_at_once() {
        // Ten callers, the count going from 1 to 2 while five of them wait: one queue, every release at least
        // one spacing (50 ms at the faster pace) after the one before.
        let replicas = LiveReplicas::default();
        let rate = Arc::new(SharedRate::new(NonZeroU32::new(20).unwrap(), replicas.clone()));
        let start = tokio::time::Instant::now();
        let wait = |rate: Arc<SharedRate>| {
            tokio::spawn(async move {
                rate.until_ready().await;
                start.elapsed()
            })
        };
        let mut waiting: Vec<_> = (0..5).map(|_| wait(Arc::clone(&rate))).collect();
        tokio::time::sleep(Duration::from_millis(10)).await;
        replicas.set(2);
        waiting.extend((0..5).map(|_| wait(Arc::clone(&rate))));
        let mut released = Vec::new();
        for w in waiting {
            released.push(w.await.unwrap());
        }
        released.sort();
        for pair in released.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_millis(50), "{released:?}");
        }
    }

    #[test]
    fn a_tenant_gets_its_limit_then_429_with_a_wait() {
        let limits = Limits::default();
        let t = tenant(3);
        let states: Vec<RateState> = (0..3).map(|_| check(&limits, &t).unwrap().unwrap()).collect();
        assert_eq!(states.iter().map(|s| s.remaining).collect::<Vec<_>>(), vec![2, 1, 0]);
        assert_eq!(states[0].limit, 3);
        assert_eq!(states[0].reset, Duration::from_secs(20));
        match check(&limits, &t) {
            Err(LimitError {
                retry_after, message, ..
            }) => {
                assert!(retry_after > Duration::from_secs(15) && retry_after <= Duration::from_secs(20));
                assert!(message.contains("Limit 3"), "{message}");
            }
            other => panic!("expected a 429, got {other:?}"),
        }
        // Another tenant is not affected; a tenant without a limit is never counted.
        let mut other = tenant(3);
        other.id = "globex".into();
        assert!(check(&limits, &other).is_ok());
        assert_eq!(check(&limits, &tenant(0)).unwrap(), None);
    }

    #[test]
    fn a_changed_limit_takes_effect() {
        let limits = Limits::default();
        assert!(check(&limits, &tenant(1)).is_ok());
        assert!(check(&limits, &tenant(1)).is_err());
        assert_eq!(check(&limits, &tenant(5)).unwrap().unwrap().remaining, 4);
    }

    #[test]
    fn durations_read_like_openai() {
        assert_eq!(format_duration(Duration::from_millis(12)), "12ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_secs(1)), "1s");
        assert_eq!(format_duration(Duration::from_secs(360)), "6m0s");
    }
}
