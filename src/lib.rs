//! sora-shim: a drop-in HTTP proxy that speaks the OpenAI Sora Videos API (`/v1/videos…`) and runs the jobs on
//! configurable video backends. The modules in layers, bottom to top: a module imports only from its own layer
//! or below, and no modules import each other in a cycle (`src/layers.rs` checks both on every `cargo test`).
//! A request meets them top down: server → api → auth, limits → admission → store → worker → backends.
//!
//! 1. Domain and leaves
//!    - [`video`]    — jobs, states, sizes, durations, variants, moderation verdicts, retention periods.
//!    - [`metrics`]  — Prometheus counters and gauges, served at `/metrics`.
//!    - [`media`]    — looks inside uploads and outputs (image and MP4 dimensions, durations).
//!    - [`tls`]      — rustls both ways: the listener's certificates, the outbound roots.
//!    - [`http`]     — the outbound HTTP client (providers, moderation endpoints, webhooks) and [`http::Secret`].
//!    - [`schemas`]  — the JSON Schemas of `schemas/sora/`, embedded once.
//!    - [`datadir`]  — one process per data directory: the exclusive lock `serve` takes at start.
//!    - [`mapping`]  — providers as data: the mapping file format and jq ([`mapping::compile`] is layer 2).
//! 2. Parts
//!    - [`store`]    — the job store (SQLite), the read cache in front of it, the webhook outbox.
//!    - [`assets`]   — finished videos, thumbnails, spritesheets and uploaded inputs (local or S3).
//!    - [`previews`] — thumbnails and spritesheets derived from a video.
//!    - [`routing`]  — which backend a new job goes to: weighted sticky targets, the fallback order.
//!    - [`auth`]     — bearer key → tenant (only a hash of the key is kept); admin keys.
//!    - [`limits`]   — per-tenant request rate and unfinished-job caps (429 with `x-ratelimit-*`).
//!    - [`moderation`] — prompt policies checked before dispatch.
//!    - [`webhooks`] — endpoints and Standard Webhooks signing ([`webhooks::dispatcher`] is layer 4).
//! 3. Settings
//!    - [`config`]   — the typed configuration, parsed and validated once; the embedded default.
//! 4. Runtime pieces
//!    - [`breakers`] — a circuit breaker per backend.
//!    - [`backends`] — where generations run: the `Backend` trait, the local renderer, mapped HTTP providers.
//!    - [`live`]     — models, routes and backends that a config reload swaps in (SIGHUP or file change).
//!    - [`retention`] — deletes the assets of videos past their `expires_at`; the record stays.
//!    - [`export`]   — `sora-shim export` / `import`: job records and asset files in a versioned layout.
//! 5. Orchestration
//!    - [`admission`] — persist the normalized request before dispatch; idempotency; prompt policies.
//!    - [`worker`]   — drives every job: dispatch → poll → finalize, resumable after a crash; failover.
//!    - [`shadow`]   — sampled copies of new videos on candidate backends, and the comparison report.
//! 6. [`app`] — the runtime that holds all of the above.
//! 7. The surface
//!    - [`server`]   — listener, HTTP/1.1 + h2, TLS, server limits, graceful shutdown.
//!    - [`api`]      — the Sora surface: the router, bodies (JSON and multipart), schemas, the error envelope; the
//!      operator endpoints (`/metrics`, `/admin/…`) and provider callbacks in their own files.
//! 8. Entry points: `main` (the command line), [`conformance`] (`sora-shim conformance`), [`fuzzing`] (the fuzz
//!    targets' bodies).

#![forbid(unsafe_code)]

pub mod admission;
pub mod api;
pub mod app;
pub mod assets;
pub mod auth;
pub mod backends;
pub mod breakers;
pub mod config;
pub mod conformance;
pub mod datadir;
pub mod export;
pub mod fuzzing;
pub mod http;
pub mod limits;
pub mod live;
pub mod mapping;
pub mod media;
pub mod metrics;
pub mod moderation;
pub mod previews;
pub mod retention;
pub mod routing;
pub mod schemas;
pub mod server;
pub mod shadow;
pub mod store;
pub mod tls;
pub mod video;
pub mod webhooks;
pub mod worker;

#[cfg(test)]
mod layers;
