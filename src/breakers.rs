//! A circuit breaker per backend, so a provider that is down stops receiving creates and its jobs fail over.
//!
//! Closed: every outcome of a call to the backend is recorded; when at least `min_requests` calls in the last
//! `window` include `failure_rate` or more failures, the circuit opens. Open: no create is sent for `open_for`;
//! then one probe is let through (half-open). The probe's outcome closes the circuit (success) or opens it again.
//! A failure is an answer that says the backend is unwell (connection refused, timeout, reset, 5xx, 429/503);
//! a job the provider refuses for its own reasons (4xx) says nothing about the backend's health.
//!
//! Hand-written rather than a crate: the breaker crates (`failsafe`, `recloser`) wrap the call itself, and here
//! a call's outcome is known only after the job state is persisted, several awaits later.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::config::HealthConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug)]
struct Breaker {
    /// (when, succeeded), oldest first, within the window.
    outcomes: VecDeque<(Instant, bool)>,
    state: CircuitState,
    opened_at: Option<Instant>,
    /// Half-open: a probe is out and its outcome not yet known.
    probing: bool,
}

impl Breaker {
    fn new() -> Breaker {
        Breaker {
            outcomes: VecDeque::new(),
            state: CircuitState::Closed,
            opened_at: None,
            probing: false,
        }
    }
}

pub struct Breakers {
    config: HealthConfig,
    map: DashMap<String, Breaker>,
}

impl Breakers {
    pub fn new(config: HealthConfig) -> Breakers {
        Breakers {
            config,
            map: DashMap::new(),
        }
    }

    /// Whether a create may be sent to `backend` now. In half-open state the first caller gets the probe.
    pub fn allow(&self, backend: &str) -> bool {
        self.allow_at(backend, Instant::now())
    }

    fn allow_at(&self, backend: &str, now: Instant) -> bool {
        let mut b = self.map.entry(backend.to_owned()).or_insert_with(Breaker::new);
        match b.state {
            CircuitState::Closed => true,
            CircuitState::Open => {
                if b.opened_at
                    .is_some_and(|t| now.duration_since(t) >= self.config.open_for)
                {
                    tracing::info!(backend, "circuit half-open: sending one probe");
                    b.state = CircuitState::HalfOpen;
                    b.probing = true;
                    true
                } else {
                    false
                }
            }
            CircuitState::HalfOpen if b.probing => false,
            CircuitState::HalfOpen => {
                b.probing = true;
                true
            }
        }
    }

    /// How long until an open circuit lets a probe through (zero when closed).
    pub fn retry_in(&self, backend: &str) -> Duration {
        match self.map.get(backend) {
            Some(b) if b.state == CircuitState::Open => b
                .opened_at
                .map(|t| self.config.open_for.saturating_sub(t.elapsed()))
                .unwrap_or_default(),
            _ => Duration::ZERO,
        }
    }

    /// Every backend seen so far and its circuit state.
    pub fn states(&self) -> Vec<(String, CircuitState)> {
        self.map.iter().map(|e| (e.key().clone(), e.value().state)).collect()
    }

    pub fn state(&self, backend: &str) -> CircuitState {
        self.map.get(backend).map_or(CircuitState::Closed, |b| b.state)
    }

    /// A half-open probe that made no call (the backend was at its concurrency limit): the next caller probes.
    pub fn abandon_probe(&self, backend: &str) {
        if let Some(mut b) = self.map.get_mut(backend) {
            b.probing = false;
        }
    }

    pub fn record(&self, backend: &str, succeeded: bool) {
        self.record_at(backend, succeeded, Instant::now());
    }

    fn record_at(&self, backend: &str, succeeded: bool, now: Instant) {
        let mut b = self.map.entry(backend.to_owned()).or_insert_with(Breaker::new);
        match b.state {
            CircuitState::HalfOpen => {
                b.probing = false;
                if succeeded {
                    tracing::info!(backend, "circuit closed: the probe succeeded");
                    *b = Breaker::new();
                } else {
                    tracing::warn!(backend, "circuit open again: the probe failed");
                    b.state = CircuitState::Open;
                    b.opened_at = Some(now);
                }
            }
            // Outcomes of calls sent before the circuit opened (polls of jobs already there) change nothing.
            CircuitState::Open => {}
            CircuitState::Closed => {
                b.outcomes.push_back((now, succeeded));
                while b
                    .outcomes
                    .front()
                    .is_some_and(|(t, _)| now.duration_since(*t) > self.config.window)
                {
                    b.outcomes.pop_front();
                }
                let total = b.outcomes.len();
                let failed = b.outcomes.iter().filter(|(_, ok)| !ok).count();
                if total >= self.config.min_requests as usize
                    && failed as f64 >= self.config.failure_rate * total as f64
                {
                    tracing::warn!(backend, failed, total, "circuit open: the backend is failing");
                    b.state = CircuitState::Open;
                    b.opened_at = Some(now);
                    b.outcomes.clear();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breakers() -> Breakers {
        Breakers::new(HealthConfig {
            window: Duration::from_secs(60),
            min_requests: 4,
            failure_rate: 0.5,
            open_for: Duration::from_secs(10),
        })
    }

    #[test]
    fn opens_on_failures_then_probes_and_closes() {
        let b = breakers();
        let t0 = Instant::now();
        for ok in [true, false, false] {
            b.record_at("p", ok, t0);
        }
        assert_eq!(b.state("p"), CircuitState::Closed, "3 calls are below min_requests");
        b.record_at("p", false, t0);
        assert_eq!(b.state("p"), CircuitState::Open);
        assert!(!b.allow_at("p", t0 + Duration::from_secs(5)));
        assert!(b.allow_at("p", t0 + Duration::from_secs(11)), "the probe");
        assert!(
            !b.allow_at("p", t0 + Duration::from_secs(11)),
            "only one probe at a time"
        );
        b.record_at("p", false, t0 + Duration::from_secs(12));
        assert_eq!(b.state("p"), CircuitState::Open, "a failed probe opens it again");
        assert!(b.allow_at("p", t0 + Duration::from_secs(23)));
        b.record_at("p", true, t0 + Duration::from_secs(23));
        assert_eq!(b.state("p"), CircuitState::Closed);
        assert!(b.allow_at("p", t0 + Duration::from_secs(23)));
    }

    #[test]
    fn old_failures_leave_the_window() {
        let b = breakers();
        let t0 = Instant::now();
        b.record_at("p", false, t0);
        b.record_at("p", false, t0);
        for i in 0..4 {
            b.record_at("p", true, t0 + Duration::from_secs(120 + i));
        }
        assert_eq!(b.state("p"), CircuitState::Closed);
    }
}
