//! Configuration, parsed once in two stages: loose serde structs (`Raw*`, unknown keys rejected) merged over the
//! embedded default, then validated into [`Config`], whose fields cannot hold a bad value. Every problem is
//! collected and reported as `file: key.path: message`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::video::{Seconds, Size};

mod parse;

/// The embedded default: what `sora-shim serve` runs with no config file.
pub const DEFAULT_CONFIG: &str = include_str!("default_config.toml");

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{file}: cannot read: {source}")]
    Read { file: String, source: std::io::Error },
    #[error("{file}: {message}")]
    Parse { file: String, message: String },
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
}

// ---- stage 1: raw, as written ------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    server: Option<RawServer>,
    api: Option<RawApi>,
    store: Option<RawStore>,
    assets: Option<RawAssets>,
    worker: Option<RawWorker>,
    health: Option<RawHealth>,
    backends: Option<BTreeMap<String, RawBackend>>,
    models: Option<BTreeMap<String, RawModel>>,
    tenants: Option<BTreeMap<String, crate::auth::RawTenant>>,
    admin: Option<crate::auth::RawAdmin>,
    moderation: Option<BTreeMap<String, crate::moderation::RawPolicy>>,
    webhooks: Option<BTreeMap<String, crate::webhooks::RawEndpoint>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    max_body_bytes: Option<u64>,
    poll_after_ms: Option<u64>,
    shutdown_grace_secs: Option<u64>,
    header_read_timeout_secs: Option<u64>,
    max_upload_bytes: Option<u64>,
    max_header_bytes: Option<u64>,
    request_timeout_secs: Option<u64>,
    idle_timeout_secs: Option<u64>,
    max_connections: Option<u64>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApi {
    default_model: Option<String>,
    default_size: Option<String>,
    default_seconds: Option<String>,
    max_total_seconds: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    kind: Option<String>,
    path: Option<PathBuf>,
    /// Where the database and local assets live; below `--data-dir` and `SORA_SHIM_DATA_DIR`, relative to the file.
    data_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAssets {
    kind: Option<String>,
    dir: Option<PathBuf>,
    // kind = "s3"
    bucket: Option<String>,
    prefix: Option<String>,
    region: Option<String>,
    endpoint: Option<String>,
    /// How long finished videos' assets are kept after completion (`"1h"`, `"30d"`, `"never"`).
    retention: Option<String>,
    sweep_interval_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorker {
    poll_interval_ms: Option<u64>,
    retry_base_ms: Option<u64>,
    retry_max_ms: Option<u64>,
    queue_deadline_secs: Option<u64>,
    job_deadline_secs: Option<u64>,
    shadow_queue: Option<u64>,
    max_active_steps: Option<u64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    window_secs: Option<u64>,
    min_requests: Option<u32>,
    failure_rate: Option<f64>,
    open_secs: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    kind: String,
    // kind = "local"
    fps: Option<u32>,
    concurrent_renders: Option<u32>,
    // kind = "mapping"
    mapping: Option<String>,
    base_url: Option<String>,
    /// Secret name (as the mapping calls it) → environment variable that holds it.
    #[serde(default)]
    secrets: BTreeMap<String, String>,
    model: Option<String>,
    options: Option<toml::Table>,
    /// Name → JSON file (relative to the config file), loaded at start-up and seen as `.target.files.NAME`
    /// (a ComfyUI workflow, say).
    #[serde(default)]
    files: BTreeMap<String, PathBuf>,
    timeout_secs: Option<u64>,
    /// Fewer operations than the mapping offers (a server behind the `openai` mapping may lack remix, say).
    operations: Option<Vec<String>>,
    max_concurrent: Option<u32>,
    requests_per_second: Option<u32>,
    poll_interval_ms: Option<u64>,
    max_response_mib: Option<u64>,
    /// PEM file of extra CA certificates to trust for this backend (a self-hosted provider), besides the
    /// platform's roots; relative to the config file.
    ca_file: Option<PathBuf>,
    /// The shim's public URL as the provider can reach it: turns on provider callbacks where the mapping has a
    /// `[callback]` (the provider calls `{callback_base_url}/callbacks/{backend}/{job}`).
    callback_base_url: Option<String>,
    /// With callbacks on, polling is the safety net: this slower pace (default 30 s).
    callback_poll_interval_ms: Option<u64>,
    /// Overrides the mapping's `callback.jwks_url` (a provider's staging keys, a test server).
    callback_jwks_url: Option<String>,
    /// Estimated price per second of video produced (any currency), for the shadow report's cost figures.
    price_per_second: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    /// One target: every job of the model goes here (shorthand for `targets = [{backend = …}]`).
    backend: Option<String>,
    /// Weighted targets, for moving traffic in stages.
    targets: Option<Vec<RawTarget>>,
    /// Backends to try, in order, when a job's target is down (its circuit open, or a create refused for now).
    #[serde(default)]
    fallback: Vec<String>,
    /// What keeps a client on one target while weights are unchanged: `tenant` (default), `idempotency_key`, `job`.
    sticky: Option<String>,
    /// Candidate backends that get a sampled copy of new videos, never seen by clients.
    #[serde(default)]
    shadow: Vec<RawShadow>,
    /// At most this many shadow jobs per UTC day for this model.
    shadow_daily_cap: Option<u64>,
    /// The prompt policy (a name under `[moderation]`) checked before a job of this model is dispatched.
    moderation: Option<String>,
    sizes: Vec<String>,
    seconds: Vec<String>,
    /// Refuse (400) a size or length the backend would round, instead of serving the nearest it makes.
    #[serde(default)]
    strict: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShadow {
    backend: String,
    /// Share of new videos mirrored, 0 to 1.
    sample: f64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTarget {
    backend: String,
    weight: u32,
    /// This target's provider model and options, over the backend's own (mapping backends only).
    model: Option<String>,
    options: Option<toml::Table>,
}

impl RawConfig {
    fn parse(file: &str, text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            file: file.to_owned(),
            message: parse::every_problem::<RawConfig>(text, &e).join(&format!("\n{file}: ")),
        })
    }

    /// Sections (and for tables of backends and models, whole entries) named in `over` replace ours; keys
    /// inside a named `server`/`api`/`store`/`assets`/`worker` section replace ours one by one.
    fn merge(self, over: RawConfig) -> RawConfig {
        fn pick<T>(over: Option<T>, base: Option<T>) -> Option<T> {
            over.or(base)
        }
        let server = match (self.server, over.server) {
            (Some(b), Some(o)) => Some(RawServer {
                listen: pick(o.listen, b.listen),
                max_body_bytes: pick(o.max_body_bytes, b.max_body_bytes),
                poll_after_ms: pick(o.poll_after_ms, b.poll_after_ms),
                shutdown_grace_secs: pick(o.shutdown_grace_secs, b.shutdown_grace_secs),
                header_read_timeout_secs: pick(o.header_read_timeout_secs, b.header_read_timeout_secs),
                max_upload_bytes: pick(o.max_upload_bytes, b.max_upload_bytes),
                max_header_bytes: pick(o.max_header_bytes, b.max_header_bytes),
                request_timeout_secs: pick(o.request_timeout_secs, b.request_timeout_secs),
                idle_timeout_secs: pick(o.idle_timeout_secs, b.idle_timeout_secs),
                max_connections: pick(o.max_connections, b.max_connections),
                tls_cert: pick(o.tls_cert, b.tls_cert),
                tls_key: pick(o.tls_key, b.tls_key),
            }),
            (b, o) => o.or(b),
        };
        let api = match (self.api, over.api) {
            (Some(b), Some(o)) => Some(RawApi {
                default_model: pick(o.default_model, b.default_model),
                default_size: pick(o.default_size, b.default_size),
                default_seconds: pick(o.default_seconds, b.default_seconds),
                max_total_seconds: pick(o.max_total_seconds, b.max_total_seconds),
            }),
            (b, o) => o.or(b),
        };
        let store = match (self.store, over.store) {
            (Some(b), Some(o)) => Some(RawStore {
                kind: pick(o.kind, b.kind),
                path: pick(o.path, b.path),
                data_dir: pick(o.data_dir, b.data_dir),
            }),
            (b, o) => o.or(b),
        };
        let assets = match (self.assets, over.assets) {
            (Some(b), Some(o)) => Some(RawAssets {
                kind: pick(o.kind, b.kind),
                dir: pick(o.dir, b.dir),
                bucket: pick(o.bucket, b.bucket),
                prefix: pick(o.prefix, b.prefix),
                region: pick(o.region, b.region),
                endpoint: pick(o.endpoint, b.endpoint),
                retention: pick(o.retention, b.retention),
                sweep_interval_secs: pick(o.sweep_interval_secs, b.sweep_interval_secs),
            }),
            (b, o) => o.or(b),
        };
        let worker = match (self.worker, over.worker) {
            (Some(b), Some(o)) => Some(RawWorker {
                poll_interval_ms: pick(o.poll_interval_ms, b.poll_interval_ms),
                retry_base_ms: pick(o.retry_base_ms, b.retry_base_ms),
                retry_max_ms: pick(o.retry_max_ms, b.retry_max_ms),
                queue_deadline_secs: pick(o.queue_deadline_secs, b.queue_deadline_secs),
                job_deadline_secs: pick(o.job_deadline_secs, b.job_deadline_secs),
                shadow_queue: pick(o.shadow_queue, b.shadow_queue),
                max_active_steps: pick(o.max_active_steps, b.max_active_steps),
            }),
            (b, o) => o.or(b),
        };
        let health = match (self.health, over.health) {
            (Some(b), Some(o)) => Some(RawHealth {
                window_secs: pick(o.window_secs, b.window_secs),
                min_requests: pick(o.min_requests, b.min_requests),
                failure_rate: pick(o.failure_rate, b.failure_rate),
                open_secs: pick(o.open_secs, b.open_secs),
            }),
            (b, o) => o.or(b),
        };
        let backends = match (self.backends, over.backends) {
            (Some(mut b), Some(o)) => {
                b.extend(o);
                Some(b)
            }
            (b, o) => o.or(b),
        };
        RawConfig {
            server,
            api,
            store,
            assets,
            worker,
            health,
            backends,
            // Models are one catalogue: a file that lists models lists all of them. So are tenants and policies.
            models: over.models.or(self.models),
            tenants: over.tenants.or(self.tenants),
            admin: over.admin.or(self.admin),
            moderation: over.moderation.or(self.moderation),
            webhooks: over.webhooks.or(self.webhooks),
        }
    }
}

// ---- stage 2: validated --------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Config {
    pub source: String,
    /// Valid but probably not meant (weights that do not sum to 100, sizes or lengths a backend rounds).
    pub warnings: Vec<String>,
    pub data_dir: PathBuf,
    pub server: ServerConfig,
    pub api: ApiConfig,
    pub store: StoreConfig,
    pub assets: AssetsConfig,
    pub worker: WorkerConfig,
    pub health: HealthConfig,
    /// Backend → estimated price per second of video (only those that set one).
    pub prices: BTreeMap<String, f64>,
    /// Shadow jobs waiting to be created; more are dropped (and counted), never delaying a client.
    pub shadow_queue: usize,
    /// Tenants and their keys (none: open development mode), and the admin keys.
    pub access: crate::auth::Access,
    /// Named prompt policies that models refer to (`moderation = "NAME"`).
    pub moderation: BTreeMap<String, std::sync::Arc<crate::moderation::Policy>>,
    /// Outbound webhook endpoints by name.
    pub webhooks: BTreeMap<String, std::sync::Arc<crate::webhooks::Endpoint>>,
    pub backends: BTreeMap<String, BackendConfig>,
    pub models: BTreeMap<String, ModelConfig>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub max_body_bytes: u64,
    pub poll_after_ms: u64,
    pub shutdown_grace: Duration,
    /// A client must send a request's headers within this long.
    pub header_read_timeout: Duration,
    /// The largest uploaded file (input reference, source video, character video).
    pub max_upload_bytes: u64,
    /// The largest request head (HTTP/1.1) or header list (h2); more gets 431.
    pub max_header_bytes: u32,
    /// A request body must arrive within this long (else 408).
    pub request_timeout: Duration,
    /// A connection with no request in flight for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// HTTPS: a PEM certificate chain and key, re-read when they change.
    pub tls: Option<TlsFiles>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ApiConfig {
    pub default_model: String,
    pub default_size: Size,
    pub default_seconds: Seconds,
    pub max_total_seconds: u32,
}

#[derive(Debug, Clone)]
pub enum StoreConfig {
    Sqlite { path: PathBuf },
}

impl Config {
    /// What `serve` locks so that one process at a time uses these files: the data directory, and the SQLite
    /// file and local asset directory where the config puts them elsewhere.
    pub fn lock_targets(&self) -> Vec<crate::datadir::LockTarget> {
        use crate::datadir::LockTarget;
        let mut targets = vec![LockTarget {
            what: "data directory",
            path: self.data_dir.clone(),
            is_dir: true,
        }];
        let StoreConfig::Sqlite { path } = &self.store;
        targets.push(LockTarget {
            what: "SQLite database",
            path: path.clone(),
            is_dir: false,
        });
        if let AssetStorage::Local { dir } = &self.assets.storage {
            targets.push(LockTarget {
                what: "asset directory",
                path: dir.clone(),
                is_dir: true,
            });
        }
        targets
    }
}

#[derive(Debug, Clone)]
pub struct AssetsConfig {
    pub storage: AssetStorage,
    /// How long a finished video's assets are kept after completion (`expires_at`); `None`: kept until deleted.
    pub retention: Option<Duration>,
    /// How often expired assets are looked for.
    pub sweep_interval: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssetStorage {
    Local {
        dir: PathBuf,
    },
    S3 {
        settings: crate::assets::object::S3Settings,
        /// Local space for temporary copies and work files.
        scratch: PathBuf,
    },
}

/// `"never"`, or a number with a unit: `90s`, `30m`, `1h`, `7d`. `None` is never.
pub fn parse_retention(text: &str) -> Result<Option<Duration>, String> {
    let text = text.trim();
    if text == "never" {
        return Ok(None);
    }
    let bad = || format!("{text:?} is not a retention: use \"never\" or a number with s, m, h or d (\"1h\", \"30d\")");
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?);
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(bad()),
    };
    if secs == 0 {
        return Err(bad());
    }
    Ok(Some(Duration::from_secs(secs)))
}

fn validate_assets(a: RawAssets, data_dir: &Path, p: &mut Problems) -> AssetsConfig {
    let retention = match a.retention.as_deref().map(parse_retention) {
        None => Some(Duration::from_secs(3600)),
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            p.add("assets.retention", e);
            None
        }
    };
    let sweep_interval = Duration::from_secs(positive(p, "assets.sweep_interval_secs", a.sweep_interval_secs, 60));
    let storage = match a.kind.as_deref().unwrap_or("local") {
        "local" => AssetStorage::Local {
            dir: resolve(data_dir, a.dir.unwrap_or_else(|| "assets".into())),
        },
        "s3" => {
            let bucket = a.bucket.unwrap_or_default();
            if bucket.is_empty() {
                p.add("assets.bucket", "missing: the bucket to store assets in");
            }
            if let Some(e) = &a.endpoint
                && !(e.starts_with("https://") || e.starts_with("http://"))
            {
                p.add("assets.endpoint", format!("{e:?} is not an http(s) URL"));
            }
            AssetStorage::S3 {
                settings: crate::assets::object::S3Settings {
                    bucket,
                    prefix: a.prefix.unwrap_or_default(),
                    region: a.region,
                    endpoint: a.endpoint,
                },
                scratch: data_dir.join("scratch"),
            }
        }
        other => {
            p.add(
                "assets.kind",
                format!("unknown asset storage {other:?}; supported: \"local\", \"s3\""),
            );
            AssetStorage::Local { dir: PathBuf::new() }
        }
    };
    AssetsConfig {
        storage,
        retention,
        sweep_interval,
    }
}

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub poll_interval: Duration,
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// A job no backend has accepted within this long fails (`backend_unavailable`) instead of waiting forever.
    pub queue_deadline: Duration,
    /// A job a backend accepted but has not finished within this long fails (`backend_timeout`).
    pub job_deadline: Duration,
    /// How many jobs take a step (a submit, poll or asset copy) at once; the others wait their turn holding
    /// almost no memory. Bounds the worker's memory and its pressure on the store when thousands of jobs wake
    /// together (after a restart, or when an unreachable backend's retries line up).
    pub max_active_steps: usize,
}

/// Circuit breakers per backend (see `health`).
#[derive(Debug, Clone)]
pub struct HealthConfig {
    pub window: Duration,
    pub min_requests: u32,
    pub failure_rate: f64,
    pub open_for: Duration,
}

#[derive(Debug, Clone)]
pub enum BackendConfig {
    Local {
        fps: NonZeroU32,
        concurrent_renders: NonZeroU32,
    },
    Mapped(Box<MappedConfig>),
}

/// A backend driven by a mapping file over HTTP.
#[derive(Debug, Clone)]
pub struct MappedConfig {
    pub mapping: std::sync::Arc<crate::mapping::compile::Mapping>,
    /// Without a trailing slash.
    pub base_url: String,
    pub secrets: BTreeMap<String, Secret>,
    pub model: Option<String>,
    pub options: serde_json::Value,
    pub files: serde_json::Value,
    pub timeout: Duration,
    /// Jobs in flight at the provider at once; more wait in `queued`.
    pub max_concurrent: Option<NonZeroU32>,
    pub requests_per_second: Option<NonZeroU32>,
    pub poll_interval: Option<Duration>,
    /// The largest provider answer read into memory (JSON; or a poll carrying the video inline).
    pub max_response_bytes: usize,
    /// Extra CA certificates to trust (checked to load at validation).
    pub ca_file: Option<PathBuf>,
    /// Provider callbacks, when on: the shim's public base URL, and the slower poll pace that goes with it.
    pub callbacks: Option<CallbackSettings>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackSettings {
    /// Without a trailing slash.
    pub base_url: String,
    pub poll_interval: Duration,
    pub jwks_url: Option<String>,
}

/// A credential read from the environment at start-up. Prints as `*****`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*****")
    }
}

#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub route: crate::routing::Route,
    pub shadow: Vec<ShadowTarget>,
    pub shadow_daily_cap: Option<u64>,
    pub moderation: Option<String>,
    pub sizes: Vec<Size>,
    pub seconds: Vec<Seconds>,
    /// Refuse what the backend would round (else it is served as the nearest it makes, with a header saying so).
    pub strict: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ShadowTarget {
    pub backend: String,
    pub sample: f64,
}

/// Where the pieces of a config come from, before validation.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub file: Option<PathBuf>,
    pub listen: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub secrets: SecretSource,
}

/// Where validation reads secret values: the environment (every command), or nowhere (`check
/// --without-secrets`, for CI that validates a config without holding production secrets: each secret's
/// variable must still be named, its value is not read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SecretSource {
    #[default]
    Environment,
    Unread,
}

impl SecretSource {
    /// `Ok(Some(value))` when set, `Ok(None)` when values are not read, `Err(message)` when unset or blank.
    pub fn read(self, var: &str) -> Result<Option<String>, String> {
        match self {
            SecretSource::Unread => Ok(None),
            SecretSource::Environment => match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Ok(Some(v)),
                _ => Err(format!("environment variable {var} is not set")),
            },
        }
    }
}

impl Config {
    /// The embedded default with `overrides` applied: the file (if any), then `--listen`/`--data-dir`.
    pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut raw = RawConfig::parse("<embedded default>", DEFAULT_CONFIG)?;
        let mut source = "<embedded default>".to_owned();
        if let Some(file) = &overrides.file {
            source = file.display().to_string();
            let text = std::fs::read_to_string(file).map_err(|e| ConfigError::Read {
                file: source.clone(),
                source: e,
            })?;
            raw = raw.merge(RawConfig::parse(&source, &text)?);
        }
        if let Some(listen) = &overrides.listen {
            raw.server.get_or_insert_with(RawServer::default).listen = Some(listen.clone());
        }
        let data_dir = data_dir(overrides, raw.store.as_ref().and_then(|s| s.data_dir.clone()));
        validate(raw, source, data_dir, overrides.secrets)
    }

    /// Whether the job store the config names already exists (the offline commands never create one).
    pub fn store_exists(&self) -> bool {
        let StoreConfig::Sqlite { path } = &self.store;
        path.is_file()
    }

    pub fn is_default(&self) -> bool {
        self.source == "<embedded default>"
    }
}

/// The data directory, in one order of precedence for every command: `--data-dir`, then `SORA_SHIM_DATA_DIR`
/// (clap fills `overrides.data_dir` from either), then `[store] data_dir` (relative to the config file's
/// directory, so a command run from elsewhere finds the same files), then `./data`.
fn data_dir(overrides: &Overrides, from_file: Option<PathBuf>) -> PathBuf {
    if let Some(dir) = &overrides.data_dir {
        return dir.clone();
    }
    match from_file {
        Some(dir) if dir.is_relative() => overrides
            .file
            .as_deref()
            .and_then(Path::parent)
            .map_or_else(|| dir.clone(), |base| base.join(&dir)),
        Some(dir) => dir,
        None => PathBuf::from("data"),
    }
}

/// Collects problems as `file: key: message` lines.
struct Problems {
    file: String,
    lines: Vec<String>,
    /// What is valid but probably not meant; `check` prints these and the server logs them at start.
    warnings: Vec<String>,
}

impl Problems {
    fn add(&mut self, key: &str, message: impl fmt::Display) {
        self.lines.push(format!("{}: {key}: {message}", self.file));
    }

    fn warn(&mut self, key: &str, message: impl fmt::Display) {
        self.warnings.push(format!("{}: {key}: {message}", self.file));
    }
}

fn validate(raw: RawConfig, source: String, data_dir: PathBuf, secrets: SecretSource) -> Result<Config, ConfigError> {
    let mut p = Problems {
        file: source.clone(),
        lines: Vec::new(),
        warnings: Vec::new(),
    };
    let base_dir = Path::new(&source)
        .parent()
        .filter(|_| source != "<embedded default>")
        .map(Path::to_owned)
        .unwrap_or_default();
    let server = validate_server(raw.server.unwrap_or_default(), &base_dir, &mut p);
    let prices: BTreeMap<String, f64> = raw
        .backends
        .iter()
        .flatten()
        .filter_map(|(name, b)| b.price_per_second.map(|price| (name.clone(), price)))
        .collect();
    for (name, price) in &prices {
        if !(price.is_finite() && *price >= 0.0) {
            p.add(
                &format!("backends.{name}.price_per_second"),
                "must be a number, 0 or more",
            );
        }
    }
    let backends = validate_backends(raw.backends.unwrap_or_default(), &base_dir, secrets, &mut p);
    let models = validate_models(raw.models.unwrap_or_default(), &backends, &mut p);
    let api = validate_api(raw.api.unwrap_or_default(), &models, &mut p);
    let store = match raw.store.unwrap_or_default() {
        RawStore { kind, path, .. } if kind.as_deref().unwrap_or("sqlite") == "sqlite" => StoreConfig::Sqlite {
            path: resolve(&data_dir, path.unwrap_or_else(|| "sora-shim.db".into())),
        },
        RawStore { kind, .. } => {
            p.add("store.kind", format!("unknown store {kind:?}; supported: \"sqlite\""));
            StoreConfig::Sqlite { path: PathBuf::new() }
        }
    };
    let assets = validate_assets(raw.assets.unwrap_or_default(), &data_dir, &mut p);
    let w = raw.worker.unwrap_or_default();
    let worker = WorkerConfig {
        poll_interval: Duration::from_millis(positive(&mut p, "worker.poll_interval_ms", w.poll_interval_ms, 500)),
        retry_base: Duration::from_millis(positive(&mut p, "worker.retry_base_ms", w.retry_base_ms, 500)),
        retry_max: Duration::from_millis(positive(&mut p, "worker.retry_max_ms", w.retry_max_ms, 30_000)),
        queue_deadline: Duration::from_secs(positive(
            &mut p,
            "worker.queue_deadline_secs",
            w.queue_deadline_secs,
            3600,
        )),
        job_deadline: Duration::from_secs(positive(
            &mut p,
            "worker.job_deadline_secs",
            w.job_deadline_secs,
            86_400,
        )),
        max_active_steps: usize::try_from(positive(&mut p, "worker.max_active_steps", w.max_active_steps, 256))
            .unwrap_or(256),
    };
    let shadow_queue = usize::try_from(positive(&mut p, "worker.shadow_queue", w.shadow_queue, 256)).unwrap_or(256);
    let h = raw.health.unwrap_or_default();
    let failure_rate = h.failure_rate.unwrap_or(0.5);
    if !(failure_rate > 0.0 && failure_rate <= 1.0) {
        p.add("health.failure_rate", "must be above 0 and at most 1");
    }
    let health = HealthConfig {
        window: Duration::from_secs(positive(&mut p, "health.window_secs", h.window_secs, 60)),
        min_requests: u32::try_from(positive(
            &mut p,
            "health.min_requests",
            h.min_requests.map(u64::from),
            5,
        ))
        .unwrap_or(5),
        failure_rate,
        open_for: Duration::from_secs(positive(&mut p, "health.open_secs", h.open_secs, 30)),
    };
    let mut problems = Vec::new();
    let access = crate::auth::validate(raw.tenants.unwrap_or_default(), raw.admin, secrets, &mut problems);
    let moderation = crate::moderation::validate(raw.moderation.unwrap_or_default(), &base_dir, secrets, &mut problems);
    let webhooks = crate::webhooks::validate(
        raw.webhooks.unwrap_or_default(),
        &access,
        &base_dir,
        secrets,
        &mut problems,
    );
    for (key, message) in problems {
        p.add(&key, message);
    }
    for (name, m) in &models {
        if let Some(policy) = &m.moderation
            && !moderation.contains_key(policy)
        {
            p.add(
                &format!("models.{name}.moderation"),
                format!("no policy named {policy:?} under [moderation]"),
            );
        }
    }
    if !p.lines.is_empty() {
        return Err(ConfigError::Invalid(p.lines));
    }
    Ok(Config {
        warnings: p.warnings,
        source,
        data_dir,
        server,
        api,
        store,
        assets,
        worker,
        health,
        prices,
        shadow_queue,
        access,
        moderation,
        webhooks,
        backends,
        models,
    })
}

fn resolve(data_dir: &Path, path: PathBuf) -> PathBuf {
    if path.is_absolute() { path } else { data_dir.join(path) }
}

fn positive(p: &mut Problems, key: &str, value: Option<u64>, default: u64) -> u64 {
    match value {
        Some(0) => {
            p.add(key, "must be greater than 0");
            default
        }
        Some(v) => v,
        None => default,
    }
}

fn validate_server(s: RawServer, base_dir: &Path, p: &mut Problems) -> ServerConfig {
    let listen_text = s.listen.unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    let listen = listen_text.parse().unwrap_or_else(|e| {
        p.add(
            "server.listen",
            format!("{listen_text:?} is not an address like 127.0.0.1:8080 ({e})"),
        );
        SocketAddr::from(([127, 0, 0, 1], 8080))
    });
    ServerConfig {
        listen,
        max_body_bytes: positive(p, "server.max_body_bytes", s.max_body_bytes, 52_428_800),
        poll_after_ms: positive(p, "server.poll_after_ms", s.poll_after_ms, 2000),
        shutdown_grace: Duration::from_secs(s.shutdown_grace_secs.unwrap_or(20)),
        header_read_timeout: Duration::from_secs(positive(
            p,
            "server.header_read_timeout_secs",
            s.header_read_timeout_secs,
            30,
        )),
        max_upload_bytes: positive(p, "server.max_upload_bytes", s.max_upload_bytes, 52_428_800),
        max_header_bytes: match s.max_header_bytes {
            // hyper's HTTP/1.1 read buffer cannot be smaller than 8 KiB.
            Some(n) if !(8192..=1_048_576).contains(&n) => {
                p.add("server.max_header_bytes", "must be between 8192 and 1048576");
                65_536
            }
            Some(n) => n as u32,
            None => 65_536,
        },
        request_timeout: Duration::from_secs(positive(p, "server.request_timeout_secs", s.request_timeout_secs, 300)),
        idle_timeout: Duration::from_secs(positive(p, "server.idle_timeout_secs", s.idle_timeout_secs, 120)),
        max_connections: usize::try_from(positive(p, "server.max_connections", s.max_connections, 10_000))
            .unwrap_or(usize::MAX),
        tls: match (s.tls_cert, s.tls_key) {
            (None, None) => None,
            (Some(cert), Some(key)) => {
                let files = TlsFiles {
                    cert: resolve(base_dir, cert),
                    key: resolve(base_dir, key),
                };
                if let Err(e) = crate::tls::load_pair(&files.cert, &files.key) {
                    p.add("server.tls_cert", e);
                }
                Some(files)
            }
            _ => {
                p.add(
                    "server.tls_cert",
                    "tls_cert and tls_key go together: give both or neither",
                );
                None
            }
        },
    }
}

fn validate_backends(
    raw: BTreeMap<String, RawBackend>,
    base_dir: &Path,
    secrets: SecretSource,
    p: &mut Problems,
) -> BTreeMap<String, BackendConfig> {
    let mut out = BTreeMap::new();
    for (name, b) in raw {
        let key = format!("backends.{name}");
        match b.kind.as_str() {
            "local" => {
                let fps = NonZeroU32::new(b.fps.unwrap_or(24)).filter(|f| f.get() <= 60);
                let renders = NonZeroU32::new(b.concurrent_renders.unwrap_or(1));
                match (fps, renders) {
                    (Some(fps), Some(concurrent_renders)) => {
                        out.insert(
                            name,
                            BackendConfig::Local {
                                fps,
                                concurrent_renders,
                            },
                        );
                    }
                    (None, _) => p.add(&format!("{key}.fps"), "must be between 1 and 60"),
                    (_, None) => p.add(&format!("{key}.concurrent_renders"), "must be at least 1"),
                }
            }
            "mapping" => {
                if let Some(m) = validate_mapped(&key, b, base_dir, secrets, p) {
                    out.insert(name, BackendConfig::Mapped(Box::new(m)));
                }
            }
            other => p.add(
                &format!("{key}.kind"),
                format!("unknown backend kind {other:?}; supported: \"local\", \"mapping\""),
            ),
        }
    }
    out
}

fn validate_mapped(
    key: &str,
    b: RawBackend,
    base_dir: &Path,
    secret_source: SecretSource,
    p: &mut Problems,
) -> Option<MappedConfig> {
    let Some(reference) = b.mapping else {
        p.add(
            &format!("{key}.mapping"),
            "missing: a built-in mapping name or a mapping file path",
        );
        return None;
    };
    let mut mapping = match crate::mapping::compile::load(&reference, base_dir) {
        Ok(m) => m,
        Err(e) => {
            for line in e.0 {
                p.add(&format!("{key}.mapping"), line);
            }
            return None;
        }
    };
    let base_url = match b.base_url {
        Some(u) if u.starts_with("https://") || u.starts_with("http://") => u.trim_end_matches('/').to_owned(),
        Some(u) => {
            p.add(&format!("{key}.base_url"), format!("{u:?} is not an http(s) URL"));
            return None;
        }
        None => {
            p.add(&format!("{key}.base_url"), "missing: the provider's base URL");
            return None;
        }
    };
    let callback_secret = match mapping.callback.as_ref().map(|c| &c.verify) {
        Some(crate::mapping::compile::CallbackVerify::StandardWebhooks { secret }) => Some(secret.clone()),
        _ => None,
    };
    let callbacks = match (&b.callback_base_url, &mapping.callback) {
        (None, _) => None,
        (Some(_), None) => {
            p.add(
                &format!("{key}.callback_base_url"),
                format!(
                    "mapping {:?} has no [callback]: this provider cannot call back",
                    mapping.name
                ),
            );
            None
        }
        (Some(url), Some(_)) if !(url.starts_with("https://") || url.starts_with("http://")) => {
            p.add(
                &format!("{key}.callback_base_url"),
                format!("{url:?} is not an http(s) URL"),
            );
            None
        }
        (Some(url), Some(_)) => Some(CallbackSettings {
            base_url: url.trim_end_matches('/').to_owned(),
            poll_interval: Duration::from_millis(b.callback_poll_interval_ms.filter(|m| *m > 0).unwrap_or(30_000)),
            jwks_url: b.callback_jwks_url.clone(),
        }),
    };
    let mut needed_secrets = mapping.secrets.clone();
    if callbacks.is_some()
        && let Some(s) = &callback_secret
    {
        needed_secrets.push(s.clone());
    }
    let mut secrets = BTreeMap::new();
    for needed in &needed_secrets {
        match b.secrets.get(needed) {
            None => p.add(
                &format!("{key}.secrets.{needed}"),
                format!("missing: the mapping needs secret {needed:?}; name the environment variable that holds it"),
            ),
            Some(var) => match secret_source.read(var) {
                Ok(value) => {
                    secrets.insert(needed.clone(), Secret(value.unwrap_or_default()));
                }
                Err(message) => p.add(&format!("{key}.secrets.{needed}"), message),
            },
        }
    }
    for extra in b
        .secrets
        .keys()
        .filter(|k| !mapping.secrets.contains(k) && callback_secret.as_ref() != Some(k))
    {
        p.add(
            &format!("{key}.secrets.{extra}"),
            "the mapping does not use this secret",
        );
    }
    if let Some(wanted) = &b.operations {
        narrow_operations(&format!("{key}.operations"), wanted, &mut mapping, p);
    }
    let options = serde_json::to_value(b.options.unwrap_or_default()).unwrap_or(serde_json::Value::Null);
    let mut files = serde_json::Map::new();
    for (name, path) in &b.files {
        let path = resolve(base_dir, path.clone());
        let loaded = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).map_err(|e| e.to_string()));
        match loaded {
            Ok(v) => {
                files.insert(name.clone(), v);
            }
            Err(e) => p.add(&format!("{key}.files.{name}"), format!("{}: {e}", path.display())),
        }
    }
    let ca_file = b.ca_file.map(|f| resolve(base_dir, f));
    if let Some(ca) = &ca_file
        && let Err(e) = crate::tls::client_config(Some(ca))
    {
        p.add(&format!("{key}.ca_file"), e);
    }
    Some(MappedConfig {
        ca_file,
        callbacks,
        mapping: std::sync::Arc::new(mapping),
        base_url,
        secrets,
        model: b.model,
        options,
        files: serde_json::Value::Object(files),
        timeout: Duration::from_secs(positive(p, &format!("{key}.timeout_secs"), b.timeout_secs, 30)),
        max_concurrent: b.max_concurrent.and_then(NonZeroU32::new),
        requests_per_second: b.requests_per_second.and_then(NonZeroU32::new),
        poll_interval: b.poll_interval_ms.filter(|ms| *ms > 0).map(Duration::from_millis),
        max_response_bytes: usize::try_from(positive(p, &format!("{key}.max_response_mib"), b.max_response_mib, 64))
            .unwrap_or(usize::MAX)
            .saturating_mul(1024 * 1024),
    })
}

/// Keeps only the operations the operator lists; each must be one the mapping offers, and `create` stays.
fn narrow_operations(key: &str, wanted: &[String], mapping: &mut crate::mapping::compile::Mapping, p: &mut Problems) {
    let mut kept = Vec::new();
    for name in wanted {
        match crate::video::JobKind::parse(name) {
            Some(kind) if mapping.operations.contains(&kind) => kept.push(kind),
            Some(_) => p.add(key, format!("the mapping does not offer {name:?}")),
            None => p.add(
                key,
                format!("unknown operation {name:?}; use create, remix, edit or extend"),
            ),
        }
    }
    if !kept.contains(&crate::video::JobKind::Create) {
        p.add(key, "must include \"create\"");
    }
    mapping.operations = kept;
}

fn validate_models(
    raw: BTreeMap<String, RawModel>,
    backends: &BTreeMap<String, BackendConfig>,
    p: &mut Problems,
) -> BTreeMap<String, ModelConfig> {
    let mut out = BTreeMap::new();
    if raw.is_empty() {
        p.add("models", "at least one model must be configured");
    }
    for (name, m) in raw {
        let key = format!("models.\"{name}\"");
        let route = validate_route(&key, &m, backends, p);
        let mut shadow = Vec::new();
        for (i, t) in m.shadow.iter().enumerate() {
            let at = format!("{key}.shadow[{i}]");
            if !backends.contains_key(&t.backend) {
                p.add(
                    &format!("{at}.backend"),
                    format!("no backend named {:?} is configured", t.backend),
                );
            }
            if !(t.sample > 0.0 && t.sample <= 1.0) {
                p.add(&format!("{at}.sample"), "must be above 0 and at most 1");
            }
            shadow.push(ShadowTarget {
                backend: t.backend.clone(),
                sample: t.sample,
            });
        }
        let sizes: Vec<Size> = m
            .sizes
            .iter()
            .filter_map(|s| match s.parse::<Size>() {
                Ok(size) => Some(size),
                Err(e) => {
                    p.add(&format!("{key}.sizes"), e);
                    None
                }
            })
            .collect();
        let seconds: Vec<Seconds> = m
            .seconds
            .iter()
            .filter_map(|s| match s.parse::<Seconds>() {
                Ok(sec) => Some(sec),
                Err(e) => {
                    p.add(&format!("{key}.seconds"), e);
                    None
                }
            })
            .collect();
        if sizes.is_empty() || seconds.is_empty() {
            p.add(&key, "needs at least one size and one duration");
        }
        warn_rounding(&key, &route, m.strict, &sizes, &seconds, backends, p);
        out.insert(
            name,
            ModelConfig {
                route,
                shadow,
                shadow_daily_cap: m.shadow_daily_cap,
                moderation: m.moderation,
                strict: m.strict,
                sizes,
                seconds,
            },
        );
    }
    out
}

/// Warns where a model offers a size or length that one of its backends would round (or refuse): clients asking
/// for it would get something else, or a 400 under `strict`.
fn warn_rounding(
    key: &str,
    route: &crate::routing::Route,
    strict: bool,
    sizes: &[Size],
    seconds: &[Seconds],
    backends: &BTreeMap<String, BackendConfig>,
    p: &mut Problems,
) {
    let advice = if strict {
        "strict = true refuses it"
    } else {
        "set strict = true to refuse it instead"
    };
    for name in route.backends() {
        let Some(BackendConfig::Mapped(b)) = backends.get(name) else {
            continue;
        };
        for size in sizes {
            match b.mapping.map_size(*size) {
                Ok((got, _)) if got != *size => p.warn(
                    &format!("{key}.sizes"),
                    format!("{size} is made as {got} by backend {name:?}; {advice}"),
                ),
                Err(_) => p.warn(
                    &format!("{key}.sizes"),
                    format!("{size} is refused by backend {name:?}, which does not make it"),
                ),
                Ok(_) => {}
            }
        }
        for sec in seconds {
            match b.mapping.map_seconds(*sec) {
                Ok((got, _)) if got != *sec => p.warn(
                    &format!("{key}.seconds"),
                    format!("\"{sec}\" is made as {got} s by backend {name:?}; {advice}"),
                ),
                Err(_) => p.warn(
                    &format!("{key}.seconds"),
                    format!("\"{sec}\" is refused by backend {name:?}, which does not make it"),
                ),
                Ok(_) => {}
            }
        }
    }
}

fn validate_route(
    key: &str,
    m: &RawModel,
    backends: &BTreeMap<String, BackendConfig>,
    p: &mut Problems,
) -> crate::routing::Route {
    use crate::routing::{Route, Sticky, Target};
    let targets: Vec<Target> = match (&m.backend, &m.targets) {
        (Some(b), None) => vec![Target::new(b, 1)],
        (None, Some(t)) if !t.is_empty() => t
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if (t.model.is_some() || t.options.is_some())
                    && matches!(backends.get(&t.backend), Some(BackendConfig::Local { .. }))
                {
                    p.add(
                        &format!("{key}.targets[{i}]"),
                        "model and options are for mapping backends; the local backend takes neither",
                    );
                }
                Target {
                    backend: t.backend.clone(),
                    weight: t.weight,
                    model: t.model.clone(),
                    options: t
                        .options
                        .as_ref()
                        .map(|o| serde_json::to_value(o).unwrap_or(serde_json::Value::Null))
                        .unwrap_or(serde_json::Value::Null),
                }
            })
            .collect(),
        (Some(_), Some(_)) => {
            p.add(key, "set either backend or targets, not both");
            vec![]
        }
        _ => {
            p.add(
                key,
                "missing: backend = \"NAME\", or targets = [{ backend = \"NAME\", weight = N }, …]",
            );
            vec![]
        }
    };
    let field = if m.targets.is_some() { "targets" } else { "backend" };
    for Target { backend, .. } in &targets {
        if !backends.contains_key(backend) {
            p.add(
                &format!("{key}.{field}"),
                format!("no backend named {backend:?} is configured"),
            );
        }
    }
    if !targets.is_empty() && targets.iter().all(|t| t.weight == 0) {
        p.add(&format!("{key}.targets"), "at least one target needs a weight above 0");
    }
    let total: u64 = targets.iter().map(|t| u64::from(t.weight)).sum();
    if m.targets.is_some() && total != 100 && total > 0 {
        p.warn(
            &format!("{key}.targets"),
            format!("weights sum to {total}, not 100: each target gets its weight out of {total}"),
        );
    }
    for backend in &m.fallback {
        if !backends.contains_key(backend) {
            p.add(
                &format!("{key}.fallback"),
                format!("no backend named {backend:?} is configured"),
            );
        }
    }
    let sticky = match m.sticky.as_deref().unwrap_or("tenant") {
        "tenant" => Sticky::Tenant,
        "idempotency_key" => Sticky::IdempotencyKey,
        "job" => Sticky::Job,
        other => {
            p.add(
                &format!("{key}.sticky"),
                format!("unknown {other:?}; use \"tenant\", \"idempotency_key\" or \"job\""),
            );
            Sticky::Tenant
        }
    };
    Route::new(targets, m.fallback.clone(), sticky)
}

fn validate_api(a: RawApi, models: &BTreeMap<String, ModelConfig>, p: &mut Problems) -> ApiConfig {
    let default_model = a.default_model.unwrap_or_else(|| "sora-2".to_owned());
    let default_size = a
        .default_size
        .as_deref()
        .unwrap_or("720x1280")
        .parse()
        .unwrap_or_else(|e| {
            p.add("api.default_size", e);
            Size {
                width: 720,
                height: 1280,
            }
        });
    let default_seconds = a.default_seconds.as_deref().unwrap_or("4").parse().unwrap_or_else(|e| {
        p.add("api.default_seconds", e);
        Seconds(4)
    });
    match models.get(&default_model) {
        None if !models.is_empty() => p.add(
            "api.default_model",
            format!("{default_model:?} is not a configured model"),
        ),
        Some(m) if !m.sizes.contains(&default_size) => p.add(
            "api.default_size",
            format!("{default_size} is not a size of the default model {default_model:?}"),
        ),
        Some(m) if !m.seconds.contains(&default_seconds) => p.add(
            "api.default_seconds",
            format!("{default_seconds} is not a duration of the default model {default_model:?}"),
        ),
        _ => {}
    }
    ApiConfig {
        default_model,
        default_size,
        default_seconds,
        max_total_seconds: a.max_total_seconds.unwrap_or(120),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, text).unwrap();
        Config::load(&Overrides {
            file: Some(file),
            ..Overrides::default()
        })
    }

    #[test]
    fn embedded_default_is_valid() {
        let c = Config::load(&Overrides::default()).unwrap();
        assert!(c.is_default());
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.models["sora-2-pro"].sizes.len(), 6);
        assert!(matches!(c.store, StoreConfig::Sqlite { ref path } if path.ends_with("data/sora-shim.db")));
    }

    #[test]
    fn file_overrides_single_keys_and_keeps_the_rest() {
        let c = load_text("[server]\npoll_after_ms = 100\n[backends.local]\nkind = \"local\"\nfps = 8\n").unwrap();
        assert_eq!(c.server.poll_after_ms, 100);
        assert_eq!(c.server.max_body_bytes, 52_428_800);
        assert!(matches!(c.backends["local"], BackendConfig::Local { fps, .. } if fps.get() == 8));
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let err = load_text(
            "[server]\nlisten = \"nowhere\"\nmax_body_bytes = 0\n[models.m]\nbackend = \"nope\"\nsizes = [\"big\"]\nseconds = [\"4\"]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("server.listen"), "{err}");
        assert!(err.contains("server.max_body_bytes"), "{err}");
        assert!(err.contains("models.\"m\".backend"), "{err}");
        assert!(err.contains("models.\"m\".sizes"), "{err}");
        assert!(err.contains("api.default_model"), "{err}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = load_text("[server]\nlisten_on = \"x\"\n").unwrap_err().to_string();
        assert!(err.contains("listen_on"), "{err}");
    }
}
