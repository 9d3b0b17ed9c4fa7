//! [`MappedBackend`]: one [`Backend`] that runs any mapping over HTTP. It builds the JSON context every jq
//! expression sees, sends the mapping's requests, classifies every answer (by the mapping's error rules, then
//! by HTTP semantics) and streams outputs into asset storage.
//!
//! The context: `kind`, `request` (prompt, model, size, seconds), `size` and `seconds` (the provider's values
//! from the capability tables), `image` (a data URI or null), `target` (`model`, `options`), `job` (`id`,
//! `backend_job_id`, `data`), `source` (`backend_job_id` of the video being remixed), and after a request
//! `response`, `status`, `headers`.

mod answers;
mod fetch;
mod request;

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};

use crate::assets::{AssetStore, Stored};
use crate::backends::{
    AfterLostSubmit, Backend, BackendError, BackendErrorKind, Output, OutputLocation, Progress, Rejection, Submitted,
};
use crate::config::MappedConfig;
use crate::http::Secret;
use crate::http::{HttpClient, Multipart, Reply, SendError};
use crate::mapping::compile::{ImageMode, Mapping, RuleKind, StateClass, Step, Upload};
use crate::mapping::token::TokenSource;
use crate::video::{InputRef, Job, JobError, JobKind, NormalizedRequest, Seconds, Size};

/// Header or query name/value pairs.
type Pairs = Vec<(String, String)>;

pub struct MappedBackend {
    name: String,
    mapping: Arc<Mapping>,
    base_url: String,
    secrets: BTreeMap<String, Secret>,
    target: Value,
    http: HttpClient,
    limiter: Option<crate::limits::SharedRate>,
    max_concurrent: Option<NonZeroU32>,
    poll_interval: Option<Duration>,
    /// Our job ids at the provider now (for `max_concurrent`); a slot is taken before the create is sent.
    in_flight: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Jobs refused a slot (held in the shim by `max_concurrent`), with when they last were.
    waiting: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
    assets: AssetStore,
    token: Option<TokenSource>,
    /// Hosts that may receive the credentials: the provider's own and the mapping's `download.auth_hosts`.
    trusted_hosts: Vec<String>,
    /// Provider callbacks, when the backend turned them on (and the mapping has a `[callback]`).
    callbacks: Option<crate::config::CallbackSettings>,
    jwks: crate::mapping::callback::JwksCache,
}

/// Which request of the mapping an answer belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StepName {
    Upload,
    Create,
    Poll,
    Result,
}

impl StepName {
    fn as_str(self) -> &'static str {
        match self {
            StepName::Upload => "upload",
            StepName::Create => "create",
            StepName::Poll => "poll",
            StepName::Result => "result",
        }
    }
}

impl MappedBackend {
    pub fn new(
        name: &str,
        config: &MappedConfig,
        assets: AssetStore,
        replicas: &crate::limits::LiveReplicas,
    ) -> MappedBackend {
        let host = config
            .base_url
            .parse::<hyper::Uri>()
            .ok()
            .and_then(|u| u.host().map(str::to_owned));
        MappedBackend {
            name: name.to_owned(),
            mapping: Arc::clone(&config.mapping),
            base_url: config.base_url.clone(),
            secrets: config.secrets.clone(),
            target: json!({"model": config.model, "options": config.options, "files": config.files}),
            http: HttpClient::for_backend(config.timeout, config.max_response_bytes, config.ca_file.as_deref()),
            limiter: config
                .requests_per_second
                // Evenly spaced, no burst: a provider metering calls per second sees at most `n` in any
                // one-second window, also right after a quiet spell, from all replicas together.
                .map(|n| crate::limits::SharedRate::new(n, replicas.clone())),
            max_concurrent: config.max_concurrent,
            // With callbacks, polling is only the safety net.
            poll_interval: match &config.callbacks {
                Some(c) => Some(c.poll_interval),
                None => config.poll_interval,
            },
            callbacks: config.callbacks.clone(),
            jwks: crate::mapping::callback::JwksCache::default(),
            in_flight: std::sync::Mutex::new(std::collections::HashSet::new()),
            waiting: std::sync::Mutex::new(std::collections::HashMap::new()),
            assets,
            token: config.mapping.token.clone().map(TokenSource::new),
            trusted_hosts: host
                .iter()
                .cloned()
                .chain(config.mapping.download_auth_hosts.iter().cloned())
                .collect(),
        }
    }

    fn error(&self, kind: BackendErrorKind, message: impl Into<String>) -> BackendError {
        BackendError::new(&self.name, kind, message)
    }

    /// A mapping that evaluates to nonsense is a configuration problem: the job fails with a clear error. The
    /// detail (which may quote the mapping's jq) goes to the log, not to the client.
    fn mapping_error(&self, message: String) -> BackendError {
        tracing::error!(backend = %self.name, mapping = %self.mapping.name, %message, "mapping error");
        self.error(
            BackendErrorKind::Rejected(JobError {
                code: "internal_error".into(),
                message: "The shim could not translate this job for the video backend serving its model; the shim's \
                          log has the detail."
                    .into(),
            }),
            message,
        )
    }

    fn waiting_set(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, std::time::Instant>> {
        self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn in_flight_set(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        // The set holds no invariant a panic could break half-way: use it even if poisoned.
        self.in_flight.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes a slot for `id` unless the backend is at `max_concurrent`: checked and taken under one lock, so
    /// two jobs cannot both pass the check before either is counted.
    fn take_slot(&self, id: &str) -> bool {
        let mut set = self.in_flight_set();
        // Already counted (claimed at start-up, or resubmitted after the provider lost it): never two slots.
        if set.contains(id) {
            return true;
        }
        if self.max_concurrent.is_some_and(|max| set.len() >= max.get() as usize) {
            return false;
        }
        set.insert(id.to_owned());
        true
    }

    /// Sends the mapping's create and reads the provider's job id.
    async fn create(&self, job: &Job) -> Result<Submitted, BackendError> {
        let mut ctx = self.context(job).await?;
        if let Some(upload) = &self.mapping.upload {
            ctx = self.upload_image(job, upload, ctx).await?;
        }
        let ctx = self.send(&self.mapping.create, StepName::Create, ctx).await?;
        let backend_job_id = self
            .mapping
            .job_id
            .eval_string(&ctx)
            // Accepted, but we cannot tell which job it is: never send it again blindly.
            .map_err(|e| self.error(BackendErrorKind::Ambiguous, format!("create.job_id: {e}")))?;
        let data = match &self.mapping.job_data {
            Some(e) => Some(
                e.eval(&ctx)
                    .map_err(|e| self.error(BackendErrorKind::Ambiguous, format!("create.job_data: {e}")))?,
            ),
            None => None,
        };
        Ok(Submitted { backend_job_id, data })
    }

    async fn poll_job(&self, job: &Job) -> Result<Progress, BackendError> {
        let ctx = self.context(job).await?;
        let ctx = self.send(&self.mapping.poll, StepName::Poll, ctx).await?;
        // classify lets a poll's 404 through: the provider has no such job, and the worker resubmits or fails it
        // by `after_lost_submit`.
        if ctx["status"] == 404 {
            return Ok(Progress::Lost);
        }
        self.progress_of(ctx, None).await
    }

    /// A verified callback's payload (`{body, headers}`) read as the poll (and result) answer it stands for.
    async fn callback_progress(&self, job: &Job, payload: &Value) -> Result<Progress, BackendError> {
        let Some(callback) = &self.mapping.callback else {
            return self.poll_job(job).await;
        };
        if let (Some(expr), Some(known)) = (&callback.job_id, &job.backend_job_id) {
            let said = expr.eval_string(payload).unwrap_or_default();
            if &said != known {
                tracing::warn!(job = %job.id, %said, %known, "a callback names another provider job; polling instead");
                return self.poll_job(job).await;
            }
        }
        let response = callback
            .response
            .eval(payload)
            .map_err(|e| self.mapping_error(format!("callback.response: {e}")))?;
        let result = match &callback.result {
            Some(e) => Some(
                e.eval(payload)
                    .map_err(|e| self.mapping_error(format!("callback.result: {e}")))?,
            ),
            None => None,
        };
        // Dressed as a poll that answered 200, so the mapping's poll state, progress and error read it unchanged.
        let mut ctx = self.context(job).await?;
        if let Value::Object(map) = &mut ctx {
            map.insert("status".into(), Value::from(200));
            map.insert("headers".into(), payload["headers"].clone());
            map.insert("response".into(), response);
            map.insert("step".into(), Value::from("poll"));
        }
        self.progress_of(ctx, result).await
    }
}

#[async_trait]
impl Backend for MappedBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn version(&self) -> &str {
        &self.mapping.version
    }

    fn supports(&self, kind: JobKind) -> bool {
        self.mapping.operations.contains(&kind)
    }

    fn after_lost_submit(&self) -> AfterLostSubmit {
        if self.mapping.resubmit_after_lost {
            AfterLostSubmit::Resubmit
        } else {
            AfterLostSubmit::Fail
        }
    }

    fn check(&self, kind: JobKind, request: &NormalizedRequest) -> Result<(), Rejection> {
        if !self.supports(kind) {
            return Err(Rejection {
                param: "model",
                value: request.model.clone(),
                supported: vec![],
                message: Some(format!(
                    "The model '{}' does not support {} requests.",
                    request.model,
                    kind.as_str()
                )),
            });
        }
        if let Some(reason) = self.image_refusal(request) {
            return Err(Rejection {
                param: "input_reference",
                value: String::new(),
                supported: vec![],
                message: Some(format!("The model '{}' {reason}", request.model)),
            });
        }
        // Refused, never dropped: the jq context has no characters, so no mapping could pass them on.
        if !request.characters.is_empty() {
            return Err(Rejection {
                param: "characters",
                value: String::new(),
                supported: vec![],
                message: Some(format!("The model '{}' does not support characters.", request.model)),
            });
        }
        if let Err(supported) = self.mapping.map_size(request.size) {
            return Err(Rejection {
                param: "size",
                value: request.size.to_string(),
                supported,
                message: None,
            });
        }
        // An extension is generated alone: its own length, not the stitched total, must be in the table.
        let seconds = request.extension_seconds.unwrap_or(request.seconds);
        if let Err(supported) = self.mapping.map_seconds(seconds) {
            return Err(Rejection {
                param: "seconds",
                value: seconds.to_string(),
                supported,
                message: None,
            });
        }
        Ok(())
    }

    fn poll_interval(&self) -> Option<Duration> {
        self.poll_interval
    }

    fn delivers(&self, size: Size, seconds: Seconds) -> Option<(Size, Seconds)> {
        self.mapping.delivers(size, seconds)
    }

    async fn submit(&self, job: &Job) -> Result<Submitted, BackendError> {
        if !self.take_slot(&job.id) {
            self.waiting_set().insert(job.id.clone(), std::time::Instant::now());
            return Err(self.error(BackendErrorKind::Busy, "at its concurrency limit"));
        }
        self.waiting_set().remove(&job.id);
        let submitted = self.create(job).await;
        if submitted.is_err() {
            // Nothing is running for it at the provider (or the job fails as ambiguous): free the slot.
            self.in_flight_set().remove(&job.id);
        }
        submitted
    }

    async fn poll(&self, job: &Job) -> Result<Progress, BackendError> {
        // A job we poll is at the provider and holds a slot (the worker also claims them all at start-up).
        self.in_flight_set().insert(job.id.clone());
        self.poll_job(job).await
    }

    fn takes_callbacks(&self) -> bool {
        self.callbacks.is_some() && self.mapping.callback.is_some()
    }

    async fn verify_callback(&self, headers: &hyper::HeaderMap, body: &[u8]) -> Result<(), String> {
        let (Some(settings), Some(callback)) = (&self.callbacks, &self.mapping.callback) else {
            return Err("this backend takes no callbacks".into());
        };
        let now = crate::video::now_unix();
        match &callback.verify {
            crate::mapping::compile::CallbackVerify::StandardWebhooks { secret } => {
                let secret = self
                    .secrets
                    .get(secret)
                    .ok_or_else(|| format!("the callback secret {secret:?} is not configured"))?;
                crate::mapping::callback::verify_standard(headers, body, secret.expose(), now)
            }
            crate::mapping::compile::CallbackVerify::FalEd25519 { jwks_url } => {
                let url = settings.jwks_url.as_deref().unwrap_or(jwks_url);
                self.jwks.verify_fal(&self.http, url, headers, body, now).await
            }
        }
    }

    async fn on_callback(&self, job: &Job, payload: &Value) -> Result<Progress, BackendError> {
        // As in `poll`: a job a callback reports on is at the provider and holds a slot.
        self.in_flight_set().insert(job.id.clone());
        let started = std::time::Instant::now();
        let result = self.callback_progress(job, payload).await;
        self.count_call("callback", started, &result);
        result
    }

    async fn release(&self, job: &Job) {
        self.in_flight_set().remove(&job.id);
        self.waiting_set().remove(&job.id);
    }

    fn waiting(&self) -> usize {
        // A job that stopped asking (failed at its queue deadline, deleted) drops out after a minute.
        let mut set = self.waiting_set();
        set.retain(|_, seen| seen.elapsed() < Duration::from_secs(60));
        set.len()
    }

    fn claim(&self, job_id: &str) {
        self.in_flight_set().insert(job_id.to_owned());
    }

    fn max_concurrent(&self) -> Option<u32> {
        self.max_concurrent.map(NonZeroU32::get)
    }

    async fn fetch(&self, output: &Output, assets: &AssetStore, key: &str) -> Result<Stored, BackendError> {
        let started = std::time::Instant::now();
        let result = self.fetch_output(output, assets, key).await;
        self.count_call("download", started, &result);
        result
    }
}
