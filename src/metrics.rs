//! Prometheus metrics, served at `GET /metrics` (text exposition format, no key: scrape it on a private network).
//! No label carries a secret, a key, a prompt or an id; the only tenant label is a configured tenant's name (in
//! open development mode, `dev-` and the first 8 hex digits of its key's digest) on rate-limit rejections.
//!
//! One process-wide set, as Prometheus client libraries are used: events are counted where they happen (the
//! API, admission, the worker, shadow mode) without threading a handle through every layer; gauges that
//! describe state (circuits) are filled in at scrape time.

use std::sync::LazyLock;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// HTTP requests by route, method and status.
    pub requests: IntCounterVec,
    /// Request latency by route and method.
    pub request_seconds: HistogramVec,
    /// Job state transitions (internal states) by model and backend.
    pub transitions: IntCounterVec,
    /// From create to completed or failed, by model, backend and outcome.
    pub job_seconds: HistogramVec,
    /// Calls to providers by backend, operation (upload, create, poll, result, download) and outcome.
    pub backend_calls: IntCounterVec,
    pub backend_call_seconds: HistogramVec,
    /// Unfinished jobs by internal state (read at scrape time).
    pub queue_depth: IntGaugeVec,
    /// Jobs held in the shim by a backend's concurrency limit (read at scrape time).
    pub backend_waiting: IntGaugeVec,
    /// Bytes written to asset storage (finished videos, previews, uploads) and served to clients.
    pub asset_bytes_stored: IntCounter,
    pub asset_bytes_served: IntCounter,
    /// 429s by tenant name and limit (`requests`, `concurrent_jobs`).
    pub rate_limited: IntCounterVec,
    /// Writes refused because the data dir's disk is full, by where (`create` answered 507, `finalize` waits).
    pub storage_full: IntCounterVec,
    /// Moderation verdicts by source (`policy`, `backend`) and verdict.
    pub moderation: IntCounterVec,
    /// Outbound webhook deliveries by outcome.
    pub webhooks: IntCounterVec,
    /// Provider callbacks by backend and outcome (`accepted`, `refused`: bad or missing signature, `unknown_job`).
    pub callbacks: IntCounterVec,
    /// Jobs accepted, by Sora model and the backend the route picked.
    pub accepted: IntCounterVec,
    /// Jobs finished, by model, backend, role (primary or shadow) and outcome (`completed` or the error code).
    pub finished: IntCounterVec,
    /// Jobs moved to a fallback backend.
    pub failovers: IntCounterVec,
    /// Shadow copies by result: queued, dropped (queue full), capped (daily cap), failed (store error).
    pub shadow: IntCounterVec,
    /// 1 while a backend's circuit is open (0 closed, 0.5 is not possible: half-open counts as open).
    pub circuit_open: IntGaugeVec,
    /// Replicas sharing the job store, as this one's last heartbeat counted them (1 with SQLite).
    pub live_replicas: IntGauge,
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> prometheus::Result<IntGaugeVec> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

fn histogram(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> prometheus::Result<HistogramVec> {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels)?;
    registry.register(Box::new(h.clone()))?;
    Ok(h)
}

fn total(registry: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    let c = IntCounter::new(name, help)?;
    registry.register(Box::new(c.clone()))?;
    Ok(c)
}

/// Request and provider-call latencies: milliseconds (reads) to a minute (uploads, downloads).
const LATENCY: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Whole jobs: seconds (the local renderer) to hours (a busy provider).
const JOB: &[f64] = &[
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 21600.0,
];

impl Metrics {
    fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let r = &registry;
        Ok(Metrics {
            requests: counter(
                r,
                "sora_shim_http_requests_total",
                "HTTP requests",
                &["route", "method", "status"],
            )?,
            request_seconds: histogram(
                r,
                "sora_shim_http_request_duration_seconds",
                "Time to answer a request (to the response head; content streams after)",
                &["route", "method"],
                LATENCY,
            )?,
            transitions: counter(
                r,
                "sora_shim_job_transitions_total",
                "Job state transitions (internal states)",
                &["model", "backend", "from", "to"],
            )?,
            job_seconds: histogram(
                r,
                "sora_shim_job_duration_seconds",
                "From create to completed or failed",
                &["model", "backend", "outcome"],
                JOB,
            )?,
            backend_calls: counter(
                r,
                "sora_shim_backend_calls_total",
                "Calls to providers, by operation and outcome (ok, retryable, rejected, error)",
                &["backend", "operation", "outcome"],
            )?,
            backend_call_seconds: histogram(
                r,
                "sora_shim_backend_call_duration_seconds",
                "Provider call latency",
                &["backend", "operation"],
                LATENCY,
            )?,
            queue_depth: gauge(
                r,
                "sora_shim_queue_depth",
                "Unfinished jobs by internal state",
                &["state"],
            )?,
            backend_waiting: gauge(
                r,
                "sora_shim_backend_waiting_jobs",
                "Jobs held in the shim by the backend's concurrency limit",
                &["backend"],
            )?,
            asset_bytes_stored: total(
                r,
                "sora_shim_asset_bytes_stored_total",
                "Bytes written to asset storage",
            )?,
            asset_bytes_served: total(
                r,
                "sora_shim_asset_bytes_served_total",
                "Bytes of assets sent to clients",
            )?,
            rate_limited: counter(
                r,
                "sora_shim_rate_limited_total",
                "Requests refused with 429, by tenant and limit",
                &["tenant", "limit"],
            )?,
            storage_full: counter(
                r,
                "sora_shim_storage_full_total",
                "Writes refused because storage is full, by where (create: answered 507; finalize: retried later)",
                &["at"],
            )?,
            moderation: counter(
                r,
                "sora_shim_moderation_verdicts_total",
                "Moderation verdicts by source (policy, backend) and verdict (allowed, blocked)",
                &["source", "verdict"],
            )?,
            webhooks: counter(
                r,
                "sora_shim_webhook_deliveries_total",
                "Outbound webhook deliveries by outcome",
                &["outcome"],
            )?,
            callbacks: counter(
                r,
                "sora_shim_provider_callbacks_total",
                "Provider callbacks by backend and outcome (accepted, refused, unknown_job)",
                &["backend", "outcome"],
            )?,
            circuit_open: gauge(
                r,
                "sora_shim_circuit_open",
                "1 while the backend's circuit breaker is open or half-open",
                &["backend"],
            )?,
            live_replicas: {
                let g = IntGauge::new(
                    "sora_shim_live_replicas",
                    "Replicas sharing the job store, as this replica's last heartbeat counted them",
                )?;
                r.register(Box::new(g.clone()))?;
                g
            },
            accepted: counter(
                r,
                "sora_shim_jobs_accepted_total",
                "Jobs accepted",
                &["model", "backend"],
            )?,
            finished: counter(
                r,
                "sora_shim_jobs_finished_total",
                "Jobs finished, by outcome (completed or the error code)",
                &["model", "backend", "role", "outcome"],
            )?,
            failovers: counter(
                r,
                "sora_shim_failovers_total",
                "Jobs moved to a fallback backend",
                &["model", "from", "to"],
            )?,
            shadow: counter(
                r,
                "sora_shim_shadow_copies_total",
                "Shadow copies: queued (a shadow job was stored), dropped (queue full), capped (daily cap) or failed (the store refused)",
                &["model", "backend", "result"],
            )?,
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
