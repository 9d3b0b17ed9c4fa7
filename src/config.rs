//! Configuration, parsed once in two stages: loose serde structs (`Raw*`, unknown keys rejected) merged over the
//! embedded default, then validated into [`Config`], whose fields cannot hold a bad value. Every problem is
//! collected and reported as `file: key.path: message`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::http::{Problems, Secret, SecretSource};
use crate::video::{Seconds, Size};

mod backends;
mod models;
mod parse;
mod validate;

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
    // kind = "postgres"
    url_env: Option<String>,
    pool_size: Option<u64>,
    ca_file: Option<PathBuf>,
    lease_secs: Option<u64>,
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
    /// kind = "local" with a PostgreSQL store: the operator states `dir` is one file system every replica shares.
    shared: Option<bool>,
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
    /// Checks one file on its own, so that its problems are reported with their lines (all of them at once).
    fn check(file: &str, text: &str) -> Result<(), ConfigError> {
        match toml::from_str::<RawConfig>(text) {
            Ok(_) => Ok(()),
            Err(e) => Err(ConfigError::Parse {
                file: file.to_owned(),
                message: parse::every_problem::<RawConfig>(text, &e).join(&format!("\n{file}: ")),
            }),
        }
    }
}

/// The sections a config file overrides key by key; `[backends]` is overridden entry by entry, and every other
/// section (`[models]`, `[tenants]`, `[admin]`, `[moderation]`, `[webhooks]`: each one catalogue) as a whole.
const MERGED_BY_KEY: [&str; 7] = ["server", "api", "store", "assets", "worker", "health", "backends"];

/// Lays a config file's table over the embedded default's (see [`MERGED_BY_KEY`]).
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (section, value) in over {
        match (base.get_mut(&section), value) {
            (Some(toml::Value::Table(ours)), toml::Value::Table(theirs))
                if MERGED_BY_KEY.contains(&section.as_str()) =>
            {
                ours.extend(theirs);
            }
            (_, value) => {
                base.insert(section, value);
            }
        }
    }
}

fn parse_table(file: &str, text: &str) -> Result<toml::Table, ConfigError> {
    text.parse().map_err(|e: toml::de::Error| ConfigError::Parse {
        file: file.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })
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

#[derive(Debug, Clone, PartialEq)]
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

#[derive(Debug, Clone, PartialEq)]
pub enum StoreConfig {
    Sqlite {
        path: PathBuf,
    },
    /// Shared by every replica; `lease` is how long a replica owns a job it stops renewing.
    Postgres {
        options: crate::store::postgres::PgOptions,
        /// The variable the URL came from (named in errors; the URL itself never is).
        url_env: String,
        lease: std::time::Duration,
    },
}

impl StoreConfig {
    /// For logs and messages: the SQLite file, or where the PostgreSQL URL comes from (never the URL).
    pub fn describe(&self) -> String {
        match self {
            StoreConfig::Sqlite { path } => format!("sqlite {}", path.display()),
            StoreConfig::Postgres { url_env, .. } => format!("postgres (URL from ${url_env})"),
        }
    }
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
        if let StoreConfig::Sqlite { path } = &self.store {
            targets.push(LockTarget {
                what: "SQLite database",
                path: path.clone(),
                is_dir: false,
            });
        }
        // A local asset directory shared between replicas (`[assets] shared`) is everyone's.
        if let AssetStorage::Local { dir } = &self.assets.storage
            && !self.assets.shared
        {
            targets.push(LockTarget {
                what: "asset directory",
                path: dir.clone(),
                is_dir: true,
            });
        }
        targets
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AssetsConfig {
    pub storage: AssetStorage,
    /// How long a finished video's assets are kept after completion (`expires_at`); `None`: kept until deleted.
    pub retention: Option<Duration>,
    /// How often expired assets are looked for.
    pub sweep_interval: Duration,
    /// A local directory every replica shares (`[assets] shared`): not locked to one process.
    pub shared: bool,
}

pub use crate::assets::AssetStorage;

#[derive(Debug, Clone, PartialEq)]
pub struct WorkerConfig {
    pub poll_interval: Duration,
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// A job no backend has accepted within this long fails (`backend_unavailable`) instead of waiting forever.
    pub queue_deadline: Duration,
    /// A job a backend accepted but has not finished within this long fails (`backend_timeout`).
    pub job_deadline: Duration,
    /// How often unfinished jobs are swept for and leases renewed: 5 s, or a third of a shorter lease.
    pub sweep_interval: Duration,
    /// How many jobs take a step (a submit, poll or asset copy) at once; the others wait their turn holding
    /// almost no memory. Bounds the worker's memory and its pressure on the store when thousands of jobs wake
    /// together (after a restart, or when an unreachable backend's retries line up).
    pub max_active_steps: usize,
}

/// Circuit breakers per backend (see `health`).
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    pub window: Duration,
    pub min_requests: u32,
    pub failure_rate: f64,
    pub open_for: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub enum BackendConfig {
    Local {
        fps: NonZeroU32,
        concurrent_renders: NonZeroU32,
    },
    Mapped(Box<MappedConfig>),
}

/// A backend driven by a mapping file over HTTP.
#[derive(Debug, Clone, PartialEq)]
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

impl Config {
    /// The embedded default with `overrides` applied: the file (if any), then `--listen`/`--data-dir`.
    pub fn load(overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut table = parse_table("<embedded default>", DEFAULT_CONFIG)?;
        let mut source = "<embedded default>".to_owned();
        if let Some(file) = &overrides.file {
            source = file.display().to_string();
            let text = std::fs::read_to_string(file).map_err(|e| ConfigError::Read {
                file: source.clone(),
                source: e,
            })?;
            RawConfig::check(&source, &text)?;
            merge(&mut table, parse_table(&source, &text)?);
        }
        if let Some(listen) = &overrides.listen {
            let server = table
                .entry("server")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(server) = server {
                server.insert("listen".into(), toml::Value::String(listen.clone()));
            }
        }
        let raw = RawConfig::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Parse {
            file: source.clone(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let data_dir = data_dir(overrides, raw.store.as_ref().and_then(|s| s.data_dir.clone()));
        validate::validate(raw, source, data_dir, overrides.secrets)
    }

    /// Whether the job store the config names already exists (the offline commands never create one).
    /// (A PostgreSQL store is a server's: it counts as existing, and connecting tells.)
    pub fn store_exists(&self) -> bool {
        match &self.store {
            StoreConfig::Sqlite { path } => path.is_file(),
            StoreConfig::Postgres { .. } => true,
        }
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

#[cfg(test)]
mod tests;
