//! Admission: turns a validated request into a persisted [`Job`] before anything is dispatched, stores its
//! uploads, applies `Idempotency-Key`, and hands the job to the worker.

use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::api::error::ApiError;
use crate::assets::AssetStore;
use crate::auth::Tenant;
use crate::live::LiveConfig;
use crate::store::{Inserted, JobStore};
use crate::video::{InputRef, Job, JobKind, NormalizedRequest, State, new_id, now_unix_ms};
use crate::worker::WorkerHandle;

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
    pub live: LiveConfig,
    /// Offered every new video, for the shadow copies its model asks for.
    pub shadow: Arc<crate::shadow::Shadow>,
    pub store: Arc<dyn JobStore>,
    pub assets: AssetStore,
    pub worker: WorkerHandle,
}

impl Admission {
    /// Persists the job (uploads first, then the record) and wakes the worker. With an idempotency key the
    /// tenant already used, answers with the earlier job if the request is the same, or a 409 if not.
    pub async fn admit(&self, tenant: &Tenant, new: NewJob) -> Result<Job, ApiError> {
        let backend =
            self.live.load().backends.get(&new.backend).cloned().ok_or_else(|| {
                ApiError::internal("config", format!("no backend named {:?} is running", new.backend))
            })?;
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
        backend.check(new.kind, &request).map_err(|r| match r.message {
            Some(message) => ApiError::invalid(message, Some(r.param), Some("invalid_value")),
            None => ApiError::invalid_value(r.param, &r.value, &r.supported),
        })?;
        for (upload, key) in new.uploads.iter().zip(&keys) {
            if let Err(e) = self.assets.put_bytes(key, &upload.bytes).await {
                self.discard_uploads(&id).await;
                return Err(e.into());
            }
        }
        let now_ms = now_unix_ms();
        let now = now_ms / 1000;
        let job = Job {
            id: id.clone(),
            tenant: tenant.0.clone(),
            kind: new.kind,
            request,
            remixed_from: new.remixed_from,
            backend: new.backend,
            backend_version: String::new(),
            backend_job_id: None,
            backend_data: None,
            state: State::Accepted,
            progress: 0,
            created_at: now,
            updated_at: now,
            completed_at: None,
            expires_at: None,
            error: None,
            assets: Vec::new(),
            produced: None,
            submitted_at_ms: None,
            shadow_of: None,
            created_at_ms: now_ms,
            idempotency_key: new.idempotency_key,
            request_hash: new.request_hash,
            attempts: 0,
            next_attempt_at_ms: 0,
            version: 1,
        };
        let inserted = self.store.insert_job(&job).await;
        match inserted {
            Ok(Inserted::New) => {
                tracing::info!(job = %job.id, kind = job.kind.as_str(), backend = %job.backend, "video accepted");
                self.worker.notify(&job.id);
                if let Some(m) = crate::metrics::get() {
                    m.accepted
                        .with_label_values(&[job.request.model.as_str(), job.backend.as_str()])
                        .inc();
                }
                self.shadow.offer(&job);
                Ok(job)
            }
            Ok(Inserted::Existing(existing)) => {
                self.discard_uploads(&id).await;
                if existing.request_hash == job.request_hash {
                    Ok(*existing)
                } else {
                    Err(ApiError::Conflict {
                        message: "This Idempotency-Key was already used with a different request. Use a new key for a \
                                  new request."
                            .into(),
                    })
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
