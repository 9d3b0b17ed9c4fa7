//! Prometheus metrics, served at `GET /metrics` (text exposition format, no key: scrape it on a private network;
//! no label carries a secret, a prompt or a tenant).
//!
//! One process-wide set, as Prometheus client libraries are used: events are counted where they happen (the
//! API, admission, the worker, shadow mode) without threading a handle through every layer; gauges that
//! describe state (circuits) are filled in at scrape time.

use std::sync::LazyLock;

use prometheus::{Encoder, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

pub struct Metrics {
    registry: Registry,
    /// HTTP requests by route and status.
    pub requests: IntCounterVec,
    /// Jobs accepted, by Sora model and the backend the route picked.
    pub accepted: IntCounterVec,
    /// Jobs finished, by model, backend, role (primary or shadow) and outcome (`completed` or the error code).
    pub finished: IntCounterVec,
    /// Jobs moved to a fallback backend.
    pub failovers: IntCounterVec,
    /// Shadow copies by result: queued, dropped (queue full), capped (daily cap).
    pub shadow: IntCounterVec,
    /// 1 while a backend's circuit is open (0 closed, 0.5 is not possible: half-open counts as open).
    pub circuit_open: IntGaugeVec,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let circuit_open = IntGaugeVec::new(
            Opts::new(
                "sora_shim_circuit_open",
                "1 while the backend's circuit breaker is open or half-open",
            ),
            &["backend"],
        )?;
        registry.register(Box::new(circuit_open.clone()))?;
        Ok(Metrics {
            requests: counter(
                &registry,
                "sora_shim_http_requests_total",
                "HTTP requests",
                &["route", "status"],
            )?,
            accepted: counter(
                &registry,
                "sora_shim_jobs_accepted_total",
                "Jobs accepted",
                &["model", "backend"],
            )?,
            finished: counter(
                &registry,
                "sora_shim_jobs_finished_total",
                "Jobs finished, by outcome (completed or the error code)",
                &["model", "backend", "role", "outcome"],
            )?,
            failovers: counter(
                &registry,
                "sora_shim_failovers_total",
                "Jobs moved to a fallback backend",
                &["model", "from", "to"],
            )?,
            shadow: counter(
                &registry,
                "sora_shim_shadow_copies_total",
                "Shadow copies: queued, dropped (queue full) or capped (daily cap)",
                &["model", "backend", "result"],
            )?,
            circuit_open,
            registry,
        })
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

static METRICS: LazyLock<Option<Metrics>> = LazyLock::new(|| match Metrics::new() {
    Ok(m) => Some(m),
    Err(e) => {
        // Only a malformed definition above can fail; the shim runs on without metrics rather than not at all.
        tracing::error!(error = %e, "metrics disabled");
        None
    }
});

pub fn get() -> Option<&'static Metrics> {
    METRICS.as_ref()
}
