//! sora-shim: a drop-in HTTP proxy that speaks the OpenAI Sora Videos API (`/v1/videos…`) and runs the jobs on
//! configurable video backends. The modules, in the order a request meets them:
//!
//! - [`config`]   — the typed configuration, validated once; the embedded default.
//! - [`server`]   — listener, HTTP/1.1 + h2, TLS ([`tls`]), server limits, graceful shutdown.
//! - [`api`]      — the Sora surface: routes, bodies (JSON and multipart), schemas, the error envelope.
//! - [`auth`]     — bearer key → tenant (only a hash of the key is kept); admin keys.
//! - [`limits`]   — per-tenant request rate and unfinished-job caps (429 with `x-ratelimit-*`).
//! - [`moderation`] — prompt policies checked before dispatch; the verdict recorded on the job.
//! - [`routing`]  — which backend a new job goes to: weighted sticky targets, the fallback order.
//! - [`jobs`]     — admission: persist the normalized request before dispatch; idempotency.
//! - [`store`]    — the job store (SQLite) and the read cache in front of it.
//! - [`worker`]   — drives every job: dispatch → poll → finalize, resumable after a crash; failover.
//! - [`health`]   — a circuit breaker per backend.
//! - [`live`]     — models, routes and backends that a config reload swaps in (SIGHUP or file change).
//! - [`shadow`]   — sampled copies of new videos on candidate backends, and the comparison report.
//! - [`metrics`]  — Prometheus counters and gauges, served at `/metrics`.
//! - [`webhooks`] — `video.completed` / `video.failed` to configured endpoints, signed, from a persistent outbox.
//! - [`backends`] — where generations run: the `Backend` trait and the built-in local renderer.
//! - [`assets`]   — storage for finished videos, thumbnails, spritesheets and uploaded inputs (local or S3).
//! - [`retention`] — deletes the assets of videos past their `expires_at`; the record stays.
//! - [`media`]    — looks inside uploads (image and MP4 dimensions, durations).
//! - [`video`]    — domain types: jobs, states, sizes, durations, variants.
//! - [`datadir`]  — one process per data directory: the exclusive lock `serve` takes at start.
//! - [`app`]      — the runtime that holds all of the above.
//! - [`export`]   — `sora-shim export` / `import`: job records and asset files in a versioned layout.
//! - [`fuzzing`]  — entry points for the fuzz targets (`tests/fuzz/`) and their regression tests.
//! - [`conformance`] — `sora-shim conformance`: the Sora-contract scenarios, run against any endpoint over HTTP.

#![forbid(unsafe_code)]

pub mod api;
pub mod app;
pub mod assets;
pub mod auth;
pub mod backends;
pub mod config;
pub mod conformance;
pub mod datadir;
pub mod export;
pub mod fuzzing;
pub mod health;
pub mod jobs;
pub mod limits;
pub mod live;
pub mod mapping;
pub mod media;
pub mod metrics;
pub mod moderation;
pub mod previews;
pub mod retention;
pub mod routing;
pub mod server;
pub mod shadow;
pub mod store;
pub mod tls;
pub mod video;
pub mod webhooks;
pub mod worker;
