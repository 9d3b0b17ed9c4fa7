//! Admission: turns a validated request into a persisted [`Job`] before anything is dispatched, stores its
//! uploads, applies `Idempotency-Key`, and hands the job to the worker.

use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::assets::AssetStore;
use crate::auth::Tenant;
use crate::live::LiveHandle;
use crate::store::{Inserted, JobStore};
use crate::video::{InputRef, Job, JobError, JobKind, NormalizedRequest, State, new_id};
use crate::worker::WorkerHandle;

/// Why a request did not become a job (rendered as the OpenAI envelope in `api/error.rs`).
#[derive(Debug, thiserror::Error)]
pub enum AdmitError {
    /// A 400 with this message, naming `param`.
    #[error("{message}")]
    Invalid {
        message: String,
        param: &'static str,
        code: &'static str,
    },
    /// A 400 `Invalid value: '…'. Supported values are: …`.
    #[error("invalid value {value:?} for {param}")]
    Unsupported {
        param: &'static str,
        value: String,
        supported: Vec<String>,
    },
    /// A 409: the idempotency key belongs to another request, or to a deleted video.
    #[error("{0}")]
    Conflict(String),
    #[error("no backend named {0:?} is running")]
    NoBackend(String),
    #[error(transparent)]
    Limit(#[from] crate::limits::LimitError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Assets(#[from] crate::assets::AssetError),
}

/// An input upload to keep with the job (its key is chosen here, under the job's folder).
pub struct PendingUpload {
    /// `input_reference` or `source_video`.
    pub role: &'static str,
    pub extension: &'static str,
    pub content_type: String,
    pub bytes: Bytes,
}

/// A validated request, ready to become a job.
pub struct NewJob {
    pub kind: JobKind,
    pub request: NormalizedRequest,
    pub remixed_from: Option<String>,
    pub backend: String,
    pub idempotency_key: Option<String>,
    /// Digest of everything the client sent that defines the job (for idempotency).
    pub request_hash: String,
    pub uploads: Vec<PendingUpload>,
}

pub struct Admission {
    pub live: LiveHandle,
    /// Offered every new video, for the shadow copies its model asks for.
    pub shadow: Arc<crate::shadow::Shadow>,
    pub store: Arc<dyn JobStore>,
    pub assets: AssetStore,
    pub worker: WorkerHandle,
    /// Per-tenant caps (unfinished jobs at once).
    pub limits: Arc<crate::limits::Limits>,
}

impl Admission {
    /// Checks the model's prompt policy, then persists the job (uploads first, then the record) and wakes the
    /// worker. With an idempotency key the tenant already used, answers with the earlier job if the request is
    /// the same, or a 409 if not. A prompt the policy blocks either fails the create (`action = "reject"`) or
    /// becomes a job that is `failed` with `moderation_blocked` from the start, as Sora's were.
    pub async fn admit(&self, tenant: &Tenant, new: NewJob) -> Result<Job, AdmitError> {
        let live = self.live.load_full();
        let backend = live
            .backends
            .get(&new.backend)
            .cloned()
            .ok_or_else(|| AdmitError::NoBackend(new.backend.clone()))?;
        let id = new_id("video");
        let mut request = new.request;
        // The request as the job will hold it (uploads as stored inputs), so the backend judges what it really gets.
        let mut keys = Vec::with_capacity(new.uploads.len());
        for upload in &new.uploads {
            let key = format!("{id}/inputs/{}.{}", upload.role, upload.extension);
            let input = InputRef::Stored {
                key: key.clone(),
                content_type: upload.content_type.clone(),
                bytes: upload.bytes.len() as u64,
            };
            match upload.role {
                "source_video" => request.source_video = Some(input),
                _ => request.input_reference = Some(input),
            }
            keys.push(key);
        }
        backend.check(new.kind, &request).map_err(|r| {
            // The client hears of its model; which backend refused stays in the log.
            tracing::info!(tenant = %tenant.name, model = %request.model, backend = %new.backend, param = r.param, "request refused: the backend cannot take it");
            match r.message {
                Some(message) => AdmitError::Invalid {
                    message,
                    param: r.param,
                    code: "invalid_value",
                },
                None => AdmitError::Unsupported {
                    param: r.param,
                    value: r.value,
                    supported: r.supported,
                },
            }
        })?;
        if let Some(model) = live.models.get(&request.model).filter(|m| m.strict) {
            refuse_rounding(backend.as_ref(), model, &request)?;
        }
        let policy = live
            .models
            .get(&request.model)
            .and_then(|m| m.moderation.as_ref())
            .and_then(|name| live.moderation.get(name))
            .cloned();
        let verdict = match &policy {
            Some(p) => Some(p.judge(&request.prompt, &request.model).await),
            None => None,
        };
        let blocked = verdict.as_ref().is_some_and(|v| v.blocked());
        if let Some(v) = &verdict {
            crate::moderation::count_verdict(v);
            if blocked
                && policy
                    .as_ref()
                    .is_some_and(|p| p.action == crate::moderation::Action::Reject)
            {
                tracing::info!(tenant = %tenant.name, rule = ?v.rule, "prompt refused by moderation policy");
                return Err(AdmitError::Invalid {
                    message: crate::moderation::BLOCKED_MESSAGE.into(),
                    param: "prompt",
                    code: "moderation_blocked",
                });
            }
        }
        // Counted and inserted under the tenant's lock, so racing creates cannot both take the last slot.
        let _slot = match tenant.max_unfinished_jobs {
            Some(max) if !blocked => {
                let guard = self.limits.admitting(&tenant.id).await;
                if self.store.count_unfinished(&tenant.id).await? >= u64::from(max.get()) {
                    return Err(crate::limits::Limits::too_many_unfinished(tenant, max.get()).into());
                }
                Some(guard)
            }
            _ => None,
        };
        for (upload, key) in new.uploads.iter().zip(&keys) {
            if let Err(e) = self.assets.put_bytes(key, &upload.bytes).await {
                self.discard_uploads(&id).await;
                return Err(e.into());
            }
        }
        let job = Job {
            remixed_from: new.remixed_from,
            // A blocked prompt is a video that failed from the start, as Sora's were.
            state: if blocked { State::Failed } else { State::Accepted },
            error: blocked.then(|| JobError {
                code: "moderation_blocked".into(),
                message: crate::moderation::BLOCKED_MESSAGE.into(),
            }),
            moderation: verdict,
            idempotency_key: new.idempotency_key,
            request_hash: new.request_hash,
            ..Job::accepted(id.clone(), tenant.id.clone(), new.kind, request, new.backend)
        };
        // The cap again, counted with the insert: racing creates on any replica cannot both take the last slot.
        let cap = match tenant.max_unfinished_jobs {
            Some(max) if !blocked => Some(u64::from(max.get())),
            _ => None,
        };
        let inserted = self.store.insert_job(&job, cap).await;
        match inserted {
            Ok(Inserted::New) if blocked => {
                tracing::info!(job = %job.id, tenant = %tenant.name, "video failed: prompt blocked by moderation policy");
                Ok(job)
            }
            Ok(Inserted::New) => {
                tracing::info!(job = %job.id, tenant = %tenant.name, kind = job.kind.as_str(), backend = %job.backend, "video accepted");
                self.worker.notify(&job.id);
                if let Some(m) = crate::metrics::get() {
                    m.accepted
                        .with_label_values(&[job.request.model.as_str(), job.backend.as_str()])
                        .inc();
                }
                self.shadow.offer(&job);
                Ok(job)
            }
            Ok(Inserted::OverCap) => {
                self.discard_uploads(&id).await;
                match tenant.max_unfinished_jobs {
                    Some(max) => Err(crate::limits::Limits::too_many_unfinished(tenant, max.get()).into()),
                    None => Err(AdmitError::Conflict(
                        "The tenant's unfinished-job cap was reached.".into(),
                    )),
                }
            }
            Ok(Inserted::Deleted(deleted)) => {
                self.discard_uploads(&id).await;
                Err(AdmitError::Conflict(format!(
                    "The video '{deleted}' created with this Idempotency-Key has been deleted. Use a new key to \
                     create a new video."
                )))
            }
            Ok(Inserted::Existing(existing)) => {
                self.discard_uploads(&id).await;
                if existing.request_hash == job.request_hash {
                    Ok(*existing)
                } else {
                    Err(AdmitError::Conflict(
                        "This Idempotency-Key was already used with a different request. Use a new key for a new \
                         request."
                            .into(),
                    ))
                }
            }
            Err(e) => {
                self.discard_uploads(&id).await;
                Err(e.into())
            }
        }
    }

    async fn discard_uploads(&self, id: &str) {
        if let Err(e) = self.assets.delete_prefix(id).await {
            tracing::warn!(job = %id, error = %e, "could not remove uploads of a request that was not admitted");
        }
    }
}

/// A `strict` model refuses a size or length its backend would round, naming the values it makes exactly.
fn refuse_rounding(
    backend: &dyn crate::backends::Backend,
    model: &crate::config::ModelConfig,
    request: &NormalizedRequest,
) -> Result<(), AdmitError> {
    let seconds = request.extension_seconds.unwrap_or(request.seconds);
    let Some((size, secs)) = backend.delivers(request.size, seconds) else {
        return Ok(());
    };
    if size != request.size {
        let exact: Vec<String> = (model.sizes.iter())
            .filter(|s| backend.delivers(**s, secs).is_some_and(|(made, _)| made == **s))
            .map(ToString::to_string)
            .collect();
        return Err(AdmitError::Unsupported {
            param: "size",
            value: request.size.to_string(),
            supported: exact,
        });
    }
    if secs != seconds {
        let exact: Vec<String> = (model.seconds.iter())
            .filter(|s| backend.delivers(size, **s).is_some_and(|(_, made)| made == **s))
            .map(ToString::to_string)
            .collect();
        return Err(AdmitError::Unsupported {
            param: "seconds",
            value: seconds.to_string(),
            supported: exact,
        });
    }
    Ok(())
}

/// A stable digest of a request: the operation, its target, the fields and the uploaded bytes.
pub fn request_hash(kind: JobKind, target: Option<&str>, fields: &serde_json::Value, files: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    h.update(kind.as_str().as_bytes());
    h.update([0]);
    h.update(target.unwrap_or("").as_bytes());
    h.update([0]);
    // serde_json's map is ordered by key, so equal objects serialize equally.
    h.update(fields.to_string().as_bytes());
    for f in files {
        h.update([0]);
        h.update(Sha256::digest(f));
    }
    hex::encode(h.finalize())
}
