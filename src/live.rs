//! The part of the configuration that changes without a restart — models and their routes, API defaults, the
//! set of backends, tenants and their keys and limits, admin keys, prompt policies, webhook endpoints — swapped atomically (`arc-swap`) on SIGHUP or when the config file changes.
//!
//! A reload is validated exactly as at start-up; a bad file is rejected with its reasons and the running config
//! stays. Requests read one consistent snapshot each, so none fails during a swap. In-flight jobs keep the
//! backend they started on: a backend removed from the file stays running (unroutable) for them, and a backend
//! whose own settings changed keeps its running instance (its in-flight renders, slots and rate limiter) until a
//! restart, with a warning. Sections bound at start-up (`server`, `store`, `assets`, `worker`, `health`) also
//! need a restart; a change there is reported and ignored.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use crate::assets::AssetStore;
use crate::backends::{Backend, Backends};
use crate::config::{ApiConfig, Config, ModelConfig, Overrides};
use crate::routing::Route;

/// How often the config file's modification time is checked.
const WATCH_EVERY: Duration = Duration::from_secs(2);

pub struct Live {
    pub models: BTreeMap<String, ModelConfig>,
    pub api: ApiConfig,
    pub backends: Backends,
    /// Backend → estimated price per second of video, for shadow reports.
    pub prices: BTreeMap<String, f64>,
    /// Sora model → route, for the worker's fallback order.
    pub routes: BTreeMap<String, Route>,
    /// Tenants, their keys and limits, and the admin keys: keys rotate and limits change on reload.
    pub access: crate::auth::Access,
    /// Prompt policies by name.
    pub moderation: BTreeMap<String, Arc<crate::moderation::Policy>>,
    /// Outbound webhook endpoints by name.
    pub webhooks: BTreeMap<String, Arc<crate::webhooks::Endpoint>>,
    /// `[assets] retention` as started (tenants may override it).
    default_retention: Option<Duration>,
    /// Each backend's settings as it runs them (to tell a changed backend from an unchanged one on reload).
    running: BTreeMap<String, crate::config::BackendConfig>,
}

/// The handle to the running [`Live`] config, swapped whole on reload: shared by the API, admission and the
/// worker; every reader takes one snapshot per request or step.
pub type LiveHandle = Arc<ArcSwap<Live>>;

fn routes(config: &Config) -> BTreeMap<String, Route> {
    config
        .models
        .iter()
        .map(|(name, m)| (name.clone(), m.route.clone()))
        .collect()
}

/// Creates every counter series whose label values the config already determines, at zero, so that an alert on
/// the first increase (`increase(x[5m]) > 0`) fires on the first event instead of seeing a series appear.
fn expose_known_series(config: &Config, backends: &Backends) {
    let Some(m) = crate::metrics::get() else {
        return;
    };
    for at in ["create", "finalize"] {
        m.storage_full.with_label_values(&[at]);
    }
    for source in ["policy", "backend"] {
        for verdict in ["allowed", "blocked"] {
            m.moderation.with_label_values(&[source, verdict]);
        }
    }
    for outcome in ["delivered", "retry", "failed"] {
        m.webhooks.with_label_values(&[outcome]);
    }
    for t in &config.access.tenants {
        if t.requests_per_minute.is_some() {
            m.rate_limited.with_label_values(&[&t.name, "requests"]);
        }
        if t.max_unfinished_jobs.is_some() {
            m.rate_limited.with_label_values(&[&t.name, "concurrent_jobs"]);
        }
    }
    for (model, mc) in &config.models {
        for from in mc.route.backends() {
            for to in mc.route.fallback().iter().filter(|to| to.as_str() != from) {
                m.failovers.with_label_values(&[model, from, to]);
            }
        }
    }
    for name in backends.names() {
        if backends.get(name).is_some_and(|b| b.takes_callbacks()) {
            for outcome in ["accepted", "refused", "unknown_job"] {
                m.callbacks.with_label_values(&[name, outcome]);
            }
        }
    }
}

impl Live {
    pub fn new(config: &Config, backends: Backends) -> Live {
        expose_known_series(config, &backends);
        Live {
            models: config.models.clone(),
            api: config.api.clone(),
            backends,
            prices: config.prices.clone(),
            routes: routes(config),
            access: config.access.clone(),
            moderation: config.moderation.clone(),
            webhooks: config.webhooks.clone(),
            default_retention: config.assets.retention,
            running: config.backends.clone(),
        }
    }

    /// How long the finished assets of a tenant's video are kept (`None`: until deleted).
    pub fn retention_for(&self, tenant_id: &str) -> Option<Duration> {
        self.access
            .tenants
            .iter()
            .find(|t| t.name == tenant_id)
            .and_then(|t| t.retention)
            .unwrap_or(self.default_retention)
    }
}

/// What a reload needs besides the new config.
pub struct Reloader {
    pub live: LiveHandle,
    /// The config the process started with (for the sections that need a restart).
    pub started: Config,
    pub assets: AssetStore,
    pub replicas: crate::limits::LiveReplicas,
    pub shutdown: CancellationToken,
}

impl Reloader {
    /// Applies `new` (already validated). Returns what was not applied, for the log.
    pub fn apply(&self, new: &Config) -> Vec<String> {
        let mut notes = Vec::new();
        for (section, same) in [
            ("server", new.server == self.started.server),
            ("store", new.store == self.started.store),
            ("assets", new.assets == self.started.assets),
            ("worker", new.worker == self.started.worker),
            ("health", new.health == self.started.health),
        ] {
            if !same {
                notes.push(format!("[{section}] changed: it applies at the next restart"));
            }
        }
        let old = self.live.load();
        // Turning open mode on or off changes who may reach what (and open mode is bound to loopback at start):
        // that takes a restart.
        let access = if new.access.is_open() == old.access.is_open() {
            new.access.clone()
        } else {
            notes.push(
                "[tenants] added or all removed: switching open development mode on or off applies at the next \
                        restart; the running tenants stay"
                    .to_owned(),
            );
            old.access.clone()
        };
        let mut by_name: BTreeMap<String, Arc<dyn Backend>> = BTreeMap::new();
        for (name, b) in &new.backends {
            match old.backends.get(name) {
                Some(running) => {
                    if old.running.get(name) != Some(b) {
                        notes.push(format!(
                            "backend {name:?} changed: its jobs keep the running settings until a restart"
                        ));
                    }
                    by_name.insert(name.clone(), Arc::clone(running));
                }
                None => {
                    let built = Backends::build_one(
                        name,
                        b,
                        &self.started,
                        &self.assets,
                        &self.replicas,
                        self.shutdown.child_token(),
                    );
                    by_name.insert(name.clone(), built);
                }
            }
        }
        // Removed from the file: still there for the jobs that run on it, but no route can pick it.
        for name in old.backends.names() {
            if !by_name.contains_key(name)
                && let Some(running) = old.backends.get(name)
            {
                notes.push(format!(
                    "backend {name:?} removed: it keeps serving its unfinished jobs"
                ));
                by_name.insert(name.to_owned(), Arc::clone(running));
            }
        }
        // A backend already running keeps its settings until a restart; a new one runs the new file's.
        let mut running = old.running.clone();
        for (name, b) in &new.backends {
            running.entry(name.clone()).or_insert_with(|| b.clone());
        }
        let backends = Backends::from_map(by_name);
        expose_known_series(new, &backends);
        self.live.store(Arc::new(Live {
            models: new.models.clone(),
            api: new.api.clone(),
            backends,
            prices: new.prices.clone(),
            routes: routes(new),
            access,
            moderation: new.moderation.clone(),
            webhooks: new.webhooks.clone(),
            default_retention: old.default_retention,
            running,
        }));
        notes
    }

    /// Loads the file again and applies it, or keeps the running config if it is invalid. The file, its mapping
    /// files and CA bundles are read on the blocking pool, not on a runtime thread serving requests.
    pub async fn reload(&self, overrides: &Overrides, why: &str) {
        let reading = overrides.clone();
        let loaded = match tokio::task::spawn_blocking(move || Config::load(&reading)).await {
            Ok(loaded) => loaded,
            Err(e) => {
                tracing::error!(trigger = why, error = %e, "config reload failed, the running config stays");
                return;
            }
        };
        match loaded {
            Ok(new) => {
                let notes = self.apply(&new);
                tracing::info!(trigger = why, models = new.models.len(), "config reloaded");
                for note in notes {
                    tracing::warn!("config reload: {note}");
                }
            }
            Err(e) => {
                tracing::error!(trigger = why, "config reload rejected, the running config stays:\n{e}");
            }
        }
    }

    /// Reloads on SIGHUP and whenever the config file's modification time changes, until shutdown.
    pub async fn watch(self, overrides: Overrides) {
        let mut hangup = hangup_stream();
        let Some(file) = overrides.file.clone() else {
            // Still take SIGHUP (its default would end the process), with nothing to reload.
            loop {
                tokio::select! {
                    _ = self.shutdown.cancelled() => return,
                    _ = recv(&mut hangup) => tracing::info!("SIGHUP: running on the embedded default, nothing to reload"),
                }
            }
        };
        let mut last = modified(&file);
        let mut tick = tokio::time::interval(WATCH_EVERY);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = recv(&mut hangup) => self.reload(&overrides, "SIGHUP").await,
                _ = tick.tick() => {
                    let now = modified(&file);
                    if now != last {
                        last = now;
                        self.reload(&overrides, "file changed").await;
                    }
                }
            }
        }
    }
}

fn modified(file: &PathBuf) -> Option<SystemTime> {
    std::fs::metadata(file).and_then(|m| m.modified()).ok()
}

#[cfg(unix)]
type Hangup = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangup = Option<()>;

#[cfg(unix)]
fn hangup_stream() -> Hangup {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
fn hangup_stream() -> Hangup {
    None
}

#[cfg(unix)]
async fn recv(h: &mut Hangup) {
    match h {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

#[cfg(not(unix))]
async fn recv(_: &mut Hangup) {
    std::future::pending::<()>().await
}
