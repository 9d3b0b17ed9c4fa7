//! Per-tenant limits: requests per minute (a `governor` GCRA bucket per tenant, burst = the per-minute limit)
//! and unfinished jobs at once (checked and admitted under one per-tenant lock, so two racing creates cannot both
//! take the last slot). Over a limit: 429 `rate_limit_exceeded` with the `x-ratelimit-*` headers and
//! `retry-after`, which the SDKs honour.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::auth::Tenant;

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
    /// Counts one request against the tenant's per-minute limit. `Ok(None)`: the tenant has no limit.
    pub fn check_request(&self, tenant: &Tenant) -> Result<Option<RateState>, LimitError> {
        let Some(per_minute) = tenant.requests_per_minute else {
            return Ok(None);
        };
        let rate = self.rate(&tenant.id, per_minute);
        let limit = per_minute.get();
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
            Err(not_until) => {
                let wait = not_until.wait_time_from(rate.limiter.clock().now());
                count_rejection(&tenant.name, "requests");
                Err(LimitError {
                    message: format!(
                        "Rate limit reached for requests per min (RPM): Limit {limit}, Used {limit}, Requested 1. \
                         Please try again in {}.",
                        format_duration(wait)
                    ),
                    state: Some(RateState {
                        limit,
                        remaining: 0,
                        reset: refill * limit,
                    }),
                    retry_after: wait,
                })
            }
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

    #[test]
    fn a_tenant_gets_its_limit_then_429_with_a_wait() {
        let limits = Limits::default();
        let t = tenant(3);
        let states: Vec<RateState> = (0..3).map(|_| limits.check_request(&t).unwrap().unwrap()).collect();
        assert_eq!(states.iter().map(|s| s.remaining).collect::<Vec<_>>(), vec![2, 1, 0]);
        assert_eq!(states[0].limit, 3);
        assert_eq!(states[0].reset, Duration::from_secs(20));
        match limits.check_request(&t) {
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
        assert!(limits.check_request(&other).is_ok());
        assert_eq!(limits.check_request(&tenant(0)).unwrap(), None);
    }

    #[test]
    fn a_changed_limit_takes_effect() {
        let limits = Limits::default();
        assert!(limits.check_request(&tenant(1)).is_ok());
        assert!(limits.check_request(&tenant(1)).is_err());
        assert_eq!(limits.check_request(&tenant(5)).unwrap().unwrap().remaining, 4);
    }

    #[test]
    fn durations_read_like_openai() {
        assert_eq!(format_duration(Duration::from_millis(12)), "12ms");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_secs(1)), "1s");
        assert_eq!(format_duration(Duration::from_secs(360)), "6m0s");
    }
}
