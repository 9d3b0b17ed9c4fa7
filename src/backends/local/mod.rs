//! The built-in `local` backend: renders a real H.264 MP4 (plus thumbnail and spritesheet) on this machine,
//! so a new user and every test get playable videos with no provider and no network. Renders are CPU-bound and
//! run on the blocking pool, a few at a time. Re-rendering is free, so a render lost in a restart is resubmitted.

mod queue;
pub mod render;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use dashmap::DashMap;
use tokio_util::sync::CancellationToken;

use super::{AfterLostSubmit, Backend, BackendError, BackendErrorKind, Output, OutputLocation, Progress, Submitted};
use crate::assets::AssetStore;
use crate::video::{InputRef, Job, JobError, JobKind, Variant};

/// Bumped when the renderer's output changes, and recorded on every job it makes.
const RENDERER_VERSION: &str = "local-1";

enum RenderStatus {
    Waiting,
    Running,
    Done,
    Failed(String),
}

struct RenderState {
    progress: AtomicU8,
    cancelled: AtomicBool,
    status: Mutex<RenderStatus>,
    dir: PathBuf,
}

pub struct LocalBackend {
    name: String,
    fps: u32,
    slots: Arc<queue::RenderQueue>,
    work_dir: PathBuf,
    assets: AssetStore,
    renders: Arc<DashMap<String, Arc<RenderState>>>,
    shutdown: CancellationToken,
}

impl LocalBackend {
    pub fn new(
        name: &str,
        fps: u32,
        concurrent_renders: u32,
        work_dir: PathBuf,
        assets: AssetStore,
        shutdown: CancellationToken,
    ) -> LocalBackend {
        LocalBackend {
            name: name.to_owned(),
            fps,
            slots: queue::RenderQueue::new(concurrent_renders as usize),
            work_dir,
            assets,
            renders: Arc::new(DashMap::new()),
            shutdown,
        }
    }

    fn error(&self, kind: BackendErrorKind, message: impl Into<String>) -> BackendError {
        BackendError::new(&self.name, kind, message)
    }

    async fn spec_for(&self, job: &Job) -> Result<render::RenderSpec, BackendError> {
        let reference_image = match &job.request.input_reference {
            Some(InputRef::Stored { key, .. }) => Some(
                self.assets
                    .read(key)
                    .await
                    .map_err(|e| self.error(BackendErrorKind::Unavailable, e.to_string()))?,
            ),
            // The local renderer has no network and no Files API: a URL or file id is recorded, not drawn.
            _ => None,
        };
        Ok(render::RenderSpec {
            width: job.request.size.width,
            height: job.request.size.height,
            fps: self.fps,
            segments: job
                .request
                .segments
                .iter()
                .map(|s| render::Segment {
                    prompt: s.prompt.clone(),
                    seconds: s.seconds,
                })
                .collect(),
            reference_image,
            label: job.id.clone(),
        })
    }
}

#[async_trait]
impl Backend for LocalBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn version(&self) -> &str {
        RENDERER_VERSION
    }

    fn supports(&self, _kind: JobKind) -> bool {
        true
    }

    fn after_lost_submit(&self) -> AfterLostSubmit {
        AfterLostSubmit::Resubmit
    }

    async fn submit(&self, job: &Job) -> Result<Submitted, BackendError> {
        let spec = self.spec_for(job).await?;
        let dir = self.work_dir.join(&job.id);
        // A leftover from an earlier attempt is discarded: renders are deterministic and free.
        let _ = tokio::fs::remove_dir_all(&dir).await;
        tokio::fs::create_dir_all(&dir).await.map_err(|e| {
            self.error(
                BackendErrorKind::Unavailable,
                format!("cannot create {}: {e}", dir.display()),
            )
        })?;
        let state = Arc::new(RenderState {
            progress: AtomicU8::new(0),
            cancelled: AtomicBool::new(false),
            status: Mutex::new(RenderStatus::Waiting),
            dir: dir.clone(),
        });
        if let Some(old) = self.renders.insert(job.id.clone(), Arc::clone(&state)) {
            old.cancelled.store(true, Ordering::Relaxed);
        }
        let slots = Arc::clone(&self.slots);
        let shutdown = self.shutdown.clone();
        let job_id = job.id.clone();
        let created_at_ms = job.created_at_ms;
        tokio::spawn(async move {
            let Some(_slot) = slots.acquire(&job_id, created_at_ms).await else {
                return;
            };
            set_status(&state, RenderStatus::Running);
            let worker_state = Arc::clone(&state);
            let result = tokio::task::spawn_blocking(move || {
                let st = worker_state;
                let mut progress = |p: u8| st.progress.store(p, Ordering::Relaxed);
                let cancel = || st.cancelled.load(Ordering::Relaxed) || shutdown.is_cancelled();
                render::render(&spec, &st.dir, &mut progress, &cancel)
            })
            .await;
            let status = match result {
                Ok(Ok(out)) => {
                    tracing::debug!(job = %job_id, frames = out.frames, bytes = out.video_bytes, "render finished");
                    RenderStatus::Done
                }
                Ok(Err(e)) => RenderStatus::Failed(e.to_string()),
                Err(e) => RenderStatus::Failed(format!("render task failed: {e}")),
            };
            set_status(&state, status);
        });
        Ok(Submitted {
            // Its own id, not the video's: a log line names the video once (renders are found by video id).
            backend_job_id: crate::video::new_id("render"),
            data: None,
        })
    }

    async fn poll(&self, job: &Job) -> Result<Progress, BackendError> {
        let Some(state) = self.renders.get(&job.id).map(|s| Arc::clone(&s)) else {
            return Ok(Progress::Lost);
        };
        let status = state
            .status
            .lock()
            .map_err(|_| self.error(BackendErrorKind::Unavailable, "render state lock poisoned"))?;
        Ok(match &*status {
            RenderStatus::Waiting => Progress::Queued,
            RenderStatus::Running => Progress::Running(state.progress.load(Ordering::Relaxed)),
            RenderStatus::Done => Progress::Done(
                Variant::ALL
                    .iter()
                    .map(|v| Output {
                        variant: *v,
                        location: OutputLocation::LocalFile(state.dir.join(v.file_name())),
                    })
                    .collect(),
            ),
            RenderStatus::Failed(message) if self.shutdown.is_cancelled() => {
                // Cancelled by shutdown: the job is resumed on the next start, not failed.
                tracing::debug!(job = %job.id, %message, "render stopped by shutdown");
                Progress::Lost
            }
            RenderStatus::Failed(message) => Progress::Failed(JobError {
                code: "internal_error".into(),
                message: format!("The local renderer failed: {message}"),
            }),
        })
    }

    /// Jobs that were rendering or waiting here before a restart keep their place ahead of newer ones.
    /// (The worker's later sweeps claim again: a job this process already submitted has its place already.)
    fn claim(&self, job_id: &str) {
        if !self.renders.contains_key(job_id) {
            self.slots.claim(job_id);
        }
    }

    async fn release(&self, job: &Job) {
        self.slots.forget(&job.id);
        if let Some((_, state)) = self.renders.remove(&job.id) {
            state.cancelled.store(true, Ordering::Relaxed);
        }
        let _ = tokio::fs::remove_dir_all(self.work_dir.join(&job.id)).await;
    }
}

fn set_status(state: &RenderState, status: RenderStatus) {
    if let Ok(mut s) = state.status.lock() {
        *s = status;
    }
}
