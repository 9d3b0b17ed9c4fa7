//! The runtime, built once from a validated [`Config`]: store (with its cache), asset storage, schemas,
//! backends and the worker, behind one `Arc` that every request shares.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::Admission;
use crate::assets::AssetStore;
use crate::backends::Backends;
use crate::config::{Config, StoreConfig};
use crate::live::{Live, LiveHandle, Reloader};
use crate::store::JobStore;
use crate::store::StoreError;
use crate::store::cache::CachedStore;
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::worker::{Worker, WorkerHandle};

/// How many jobs the read cache holds.
const CACHE_CAPACITY: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("cannot open the job store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{0}")]
    Assets(#[from] crate::assets::OpenError),
    #[error("{0}")]
    Locked(#[from] crate::datadir::LockError),
}

pub struct App {
    /// The config the process started with (server, store, assets, worker: what needs a restart).
    pub config: Config,
    /// Models, routes, API defaults and backends: swapped on reload.
    pub live: LiveHandle,
    pub shadow: Arc<crate::shadow::Shadow>,
    /// Backend health (shared with the worker), for `/metrics`.
    pub breakers: Arc<crate::breakers::Breakers>,
    pub store: Arc<dyn JobStore>,
    pub assets: AssetStore,
    pub admission: Admission,
    /// Per-tenant request rates and unfinished-job caps.
    pub limits: Arc<crate::limits::Limits>,
    /// How many replicas share the store (1 with SQLite), as the last heartbeat counted them.
    pub replicas: crate::limits::LiveReplicas,
    pub worker: WorkerHandle,
    /// Every background task; shutdown waits for them.
    pub tracker: TaskTracker,
    pub shutdown: CancellationToken,
    /// Cancelled when the server stops accepting: `/readyz` answers 503 from then on.
    pub draining: CancellationToken,
    /// This process's hold on its data directory, released when the app is dropped or the process exits.
    _lock: crate::datadir::DataDirLock,
}

/// Opens the job store the config names, for `serve` or an offline command (`export`, `import`, `shadow
/// report`): SQLite on the blocking pool, PostgreSQL connected and migrated, as a fresh replica.
pub async fn open_store(config: &StoreConfig) -> Result<Arc<dyn JobStore>, StoreError> {
    match config {
        StoreConfig::Sqlite { path } => {
            let path = path.clone();
            let sqlite = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
                .await
                .map_err(|e| StoreError::Backend(e.to_string()))??;
            Ok(Arc::new(sqlite))
        }
        StoreConfig::Postgres { options, lease, .. } => {
            let replica = crate::store::Replica::new(*lease);
            Ok(Arc::new(PgStore::connect(options, replica).await?))
        }
    }
}

impl App {
    /// Opens storage, resumes unfinished jobs and starts the worker.
    pub async fn start(config: Config) -> Result<Arc<App>, InitError> {
        // Before anything is opened: a second process on the same files must not touch them at all.
        let targets = config.lock_targets();
        let lock = tokio::task::spawn_blocking(move || crate::datadir::DataDirLock::acquire(&targets))
            .await
            .map_err(|e| crate::store::StoreError::Backend(e.to_string()))??;
        let store = open_store(&config.store).await?;
        let store: Arc<dyn JobStore> = match &config.store {
            StoreConfig::Sqlite { .. } => Arc::new(CachedStore::new(store, CACHE_CAPACITY)),
            // Other replicas write it too: reads are never answered from memory.
            StoreConfig::Postgres { .. } => Arc::new(CachedStore::shared(store, CACHE_CAPACITY)),
        };
        let assets = AssetStore::open(&config.assets.storage)?;
        match assets.sweep_temporaries().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(files = n, "removed partial asset writes left by an earlier crash"),
            Err(e) => tracing::warn!(error = %e, "could not sweep temporary asset files"),
        }
        let tracker = TaskTracker::new();
        let shutdown = CancellationToken::new();
        // Registered, and counting the others, before the worker's first sweep sends anything: limits shared
        // out among replicas start from the right count.
        let replicas = crate::limits::LiveReplicas::default();
        beat(store.as_ref(), &replicas).await;
        tracker.spawn(heartbeat(
            Arc::clone(&store),
            replicas.clone(),
            config.worker.sweep_interval,
            shutdown.clone(),
        ));
        let backends = Backends::build(&config, &assets, &replicas, shutdown.child_token());
        let live: LiveHandle = Arc::new(ArcSwap::from_pointee(Live::new(&config, backends)));
        // Breakers outlive reloads: a backend's health does not reset because a weight changed.
        let breakers = Arc::new(crate::breakers::Breakers::new(config.health.clone()));
        let worker = Worker::new(
            Arc::clone(&store),
            assets.clone(),
            Arc::clone(&live),
            config.worker.clone(),
            Arc::clone(&breakers),
            tracker.clone(),
            shutdown.clone(),
        )
        .start();
        let shadow = crate::shadow::Shadow::start(
            Arc::clone(&live),
            Arc::clone(&store),
            worker.clone(),
            config.shadow_queue,
            &tracker,
            shutdown.clone(),
        );
        crate::webhooks::dispatcher::Dispatcher::start(
            Arc::clone(&store),
            Arc::clone(&live),
            &tracker,
            shutdown.clone(),
        );
        tracker.spawn(
            crate::retention::Sweeper {
                store: Arc::clone(&store),
                assets: assets.clone(),
                every: config.assets.sweep_interval,
                shutdown: shutdown.clone(),
            }
            .run(),
        );
        let limits = Arc::new(crate::limits::Limits::default());
        let admission = Admission {
            limits: Arc::clone(&limits),
            shadow: Arc::clone(&shadow),
            live: Arc::clone(&live),
            store: Arc::clone(&store),
            assets: assets.clone(),
            worker: worker.clone(),
        };
        Ok(Arc::new(App {
            config,
            live,
            shadow,
            breakers,
            store,
            assets,
            admission,
            limits,
            replicas,
            worker,
            tracker,
            shutdown,
            draining: CancellationToken::new(),
            _lock: lock,
        }))
    }

    /// What the config watcher needs to reload models, routes and backends into this running app.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            live: Arc::clone(&self.live),
            started: self.config.clone(),
            assets: self.assets.clone(),
            replicas: self.replicas.clone(),
            shutdown: self.shutdown.clone(),
        }
    }

    /// Stops the worker and waits for every background task. Job state is already persisted at every step.
    pub async fn stop(&self) {
        self.shutdown.cancel();
        self.tracker.close();
        self.tracker.wait().await;
        // Nothing of this process drives a job any more: other replicas may take them over at once.
        if let Err(e) = self.store.release_leases().await {
            tracing::warn!(error = %e, "cannot release this replica's job leases; they pass to other replicas when they run out");
        }
    }
}

/// Records this replica as alive in the store at every sweep interval, and keeps the count of live replicas
/// that limits shared out among them divide by (a backend's `requests_per_second`).
async fn heartbeat(
    store: Arc<dyn JobStore>,
    replicas: crate::limits::LiveReplicas,
    every: std::time::Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => beat(store.as_ref(), &replicas).await,
        }
    }
}

async fn beat(store: &dyn JobStore, replicas: &crate::limits::LiveReplicas) {
    match store.heartbeat().await {
        Ok(n) => {
            if n != replicas.get() {
                tracing::info!(live = n, "replicas sharing the job store");
            }
            replicas.set(n);
            if let Some(m) = crate::metrics::get() {
                m.live_replicas.set(i64::from(n));
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot record this replica's heartbeat in the job store"),
    }
}
