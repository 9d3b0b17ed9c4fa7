//! Backends: where generations actually run. The worker drives every backend through [`Backend`]; the built-in
//! [`local`] renderer is one implementation, and [`mapped`] (HTTP providers described by a mapping file) is the
//! other; [`Backends`] builds them from the config. Nothing outside this module knows which one serves a job.

pub mod local;
pub mod mapped;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::assets::{AssetStore, Stored};
use crate::config::{BackendConfig, Config};
use crate::limits::LiveReplicas;
use crate::video::{Job, JobError, JobKind, Seconds, Size, Variant};

/// What a backend said when it accepted a job.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub backend_job_id: String,
    /// Anything else needed to find the job again, kept on the job record.
    pub data: Option<serde_json::Value>,
}

/// Where a finished output can be picked up from.
#[derive(Debug, Clone)]
pub enum OutputLocation {
    /// A file on this machine that the worker copies into asset storage.
    LocalFile(PathBuf),
    /// A URL at (or given by) the provider; `auth` says whether the provider's credentials go with it.
    Url { url: String, auth: bool },
}

#[derive(Debug, Clone)]
pub struct Output {
    pub variant: Variant,
    pub location: OutputLocation,
}

/// A backend's answer to "how is this job doing?".
#[derive(Debug, Clone)]
pub enum Progress {
    /// Accepted, waiting for capacity.
    Queued,
    /// Generating; percent done.
    Running(u8),
    /// Finished; these outputs are ready to be copied.
    Done(Vec<Output>),
    /// Finished without a video.
    Failed(JobError),
    /// The backend has no record of the job (e.g. a local render lost in a restart).
    Lost,
}

/// What to do with a job whose submission may or may not have reached the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterLostSubmit {
    /// Submitting again cannot cost a second paid generation (the local renderer, idempotent backends).
    Resubmit,
    /// Fail the job with a clear error rather than risk paying twice.
    Fail,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendErrorKind {
    /// Nothing was accepted; trying again later is safe.
    Unavailable,
    /// The request may have been accepted (a timeout or reset after sending a create).
    Ambiguous,
    /// The backend refused the job for good; the client sees this error on the video.
    Rejected(JobError),
    /// The backend is at its concurrency limit; the job waits in `queued` (not an error).
    Busy,
    /// Our own storage is full while copying an output: nothing is wrong at the backend, and the copy is tried
    /// again, without counting as an attempt, until space is freed.
    StorageFull,
}

/// Why a request cannot go to this backend, found before anything is persisted (a 400 for the client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub param: &'static str,
    pub value: String,
    /// The values the backend offers, for `Supported values are: …`; empty when the message says it all.
    pub supported: Vec<String>,
    pub message: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("backend {backend}: {message}")]
pub struct BackendError {
    pub backend: String,
    pub kind: BackendErrorKind,
    pub message: String,
    /// A pause the backend asked for (e.g. `Retry-After`).
    pub retry_after: Option<Duration>,
}

impl BackendError {
    pub fn new(backend: &str, kind: BackendErrorKind, message: impl Into<String>) -> BackendError {
        BackendError {
            backend: backend.to_owned(),
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Writing an output into our storage failed: `StorageFull` when the disk is, else worth another try.
    pub fn storing(backend: &str, e: &crate::assets::AssetError, context: &str) -> BackendError {
        let kind = if e.is_storage_full() {
            BackendErrorKind::StorageFull
        } else {
            BackendErrorKind::Unavailable
        };
        BackendError::new(backend, kind, format!("{context}: {e}"))
    }
}

#[async_trait]
pub trait Backend: Send + Sync + 'static {
    fn name(&self) -> &str;
    /// Recorded on every job it touches (a mapping's version, or the renderer's).
    fn version(&self) -> &str;
    fn supports(&self, kind: JobKind) -> bool;
    fn after_lost_submit(&self) -> AfterLostSubmit;
    /// Can this backend take the request at all (operation, size, duration)? Asked before the job is persisted.
    fn check(&self, _kind: JobKind, _request: &crate::video::NormalizedRequest) -> Result<(), Rejection> {
        Ok(())
    }
    /// What this backend makes of a size and length it accepts: the same, or the nearest it can make (a mapping
    /// whose policy is `nearest`). `None` where it refuses them (`check` says why).
    fn delivers(&self, size: Size, seconds: Seconds) -> Option<(Size, Seconds)> {
        Some((size, seconds))
    }
    /// How often to poll this backend's jobs; `None` is the worker's default.
    fn poll_interval(&self) -> Option<Duration> {
        None
    }
    async fn submit(&self, job: &Job) -> Result<Submitted, BackendError>;
    async fn poll(&self, job: &Job) -> Result<Progress, BackendError>;
    /// Frees whatever the backend keeps for a job once its assets are ours (or it failed).
    async fn release(&self, job: &Job);
    /// At start-up, before any job is driven: the job is at this backend already (submitted, running or being
    /// finalized), so it counts against the backend's limits before a waiting job could take its place.
    fn claim(&self, _job_id: &str) {}
    /// Whether the provider calls back (`POST /callbacks/{backend}/{job}`) for this backend's jobs.
    fn takes_callbacks(&self) -> bool {
        false
    }
    /// Checks a callback's signature (the provider's scheme) before anything reads it.
    async fn verify_callback(&self, _headers: &hyper::HeaderMap, _body: &[u8]) -> Result<(), String> {
        Err("this backend takes no callbacks".into())
    }
    /// A verified callback (`{body, headers}`) read as the progress a poll would have found.
    async fn on_callback(&self, job: &Job, _payload: &serde_json::Value) -> Result<Progress, BackendError> {
        self.poll(job).await
    }
    /// How many of its jobs may be at the backend at once, across every replica (`max_concurrent`); `None`:
    /// no limit the store counts (the local renderer keeps its own slots, per process).
    fn max_concurrent(&self) -> Option<u32> {
        None
    }
    /// Jobs held in the shim by this backend's concurrency limit now (for `/metrics`).
    fn waiting(&self) -> usize {
        0
    }
    /// Copies one output into asset storage under `key`.
    async fn fetch(&self, output: &Output, assets: &AssetStore, key: &str) -> Result<Stored, BackendError> {
        match &output.location {
            OutputLocation::LocalFile(path) => assets
                .put_file(key, path)
                .await
                .map_err(|e| BackendError::storing(self.name(), &e, "store")),
            OutputLocation::Url { .. } => Err(BackendError::new(
                self.name(),
                BackendErrorKind::Rejected(JobError {
                    code: "internal_error".into(),
                    message: "This backend cannot download outputs.".into(),
                }),
                "a URL output from a backend that has no HTTP client",
            )),
        }
    }
}

/// The configured backends by name.
#[derive(Clone, Default)]
pub struct Backends {
    by_name: BTreeMap<String, Arc<dyn Backend>>,
}

impl Backends {
    pub fn build(
        config: &Config,
        assets: &AssetStore,
        replicas: &LiveReplicas,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Backends {
        let by_name = config
            .backends
            .iter()
            .map(|(name, b)| {
                (
                    name.clone(),
                    Self::build_one(name, b, config, assets, replicas, shutdown.clone()),
                )
            })
            .collect();
        Backends { by_name }
    }

    pub fn build_one(
        name: &str,
        b: &BackendConfig,
        config: &Config,
        assets: &AssetStore,
        replicas: &LiveReplicas,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> Arc<dyn Backend> {
        match b {
            BackendConfig::Local {
                fps,
                concurrent_renders,
            } => Arc::new(local::LocalBackend::new(
                name,
                fps.get(),
                concurrent_renders.get(),
                config.data_dir.join("work").join(name),
                assets.clone(),
                shutdown,
            )),
            BackendConfig::Mapped(m) => Arc::new(mapped::MappedBackend::new(name, m, assets.clone(), replicas)),
        }
    }

    pub fn from_map(by_name: BTreeMap<String, Arc<dyn Backend>>) -> Backends {
        Backends { by_name }
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    pub fn get(&self, name: &str) -> Option<&Arc<dyn Backend>> {
        self.by_name.get(name)
    }
}
