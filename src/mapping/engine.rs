//! [`MappedBackend`]: one [`Backend`] that runs any mapping over HTTP. It builds the JSON context every jq
//! expression sees, sends the mapping's requests, classifies every answer (by the mapping's error rules, then
//! by HTTP semantics) and streams outputs into asset storage.
//!
//! The context: `kind`, `request` (prompt, model, size, seconds), `size` and `seconds` (the provider's values
//! from the capability tables), `image` (a data URI or null), `target` (`model`, `options`), `job` (`id`,
//! `backend_job_id`, `data`), `source` (`backend_job_id` of the video being remixed), and after a request
//! `response`, `status`, `headers`.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use futures_util::StreamExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use http_body_util::BodyExt;
use serde_json::{Map, Value, json};

use super::compile::{ImageMode, Mapping, RuleKind, StateClass, Step, Upload};
use super::http::{HttpClient, Multipart, Reply, SendError};
use super::token::TokenSource;
use crate::assets::{AssetStore, Stored};
use crate::backends::{
    AfterLostSubmit, Backend, BackendError, BackendErrorKind, Output, OutputLocation, Progress, Rejection, Submitted,
};
use crate::config::{MappedConfig, Secret};
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
    limiter: Option<DefaultDirectRateLimiter>,
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
    jwks: super::callback::JwksCache,
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
    pub fn new(name: &str, config: &MappedConfig, assets: AssetStore) -> MappedBackend {
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
            http: HttpClient::for_backend(config),
            limiter: config
                .requests_per_second
                // Evenly spaced, no burst: a provider metering calls per second sees at most `n` in any
                // one-second window, also right after a quiet spell.
                .map(|n| RateLimiter::direct(Quota::per_second(n).allow_burst(std::num::NonZeroU32::MIN))),
            max_concurrent: config.max_concurrent,
            // With callbacks, polling is only the safety net.
            poll_interval: match &config.callbacks {
                Some(c) => Some(c.poll_interval),
                None => config.poll_interval,
            },
            callbacks: config.callbacks.clone(),
            jwks: super::callback::JwksCache::default(),
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

    async fn auth(&self) -> Result<(Pairs, Pairs), BackendError> {
        let secrets: Map<String, Value> = self
            .secrets
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.expose().to_owned())))
            .collect();
        let token = match &self.token {
            Some(t) => {
                let lookup = |name: &str| self.secrets.get(name).map(|s| s.expose().to_owned());
                let token = t.get(&self.http, lookup).await.map_err(|e| {
                    // A token endpoint that is down is worth retrying; the message never holds a secret.
                    self.error(BackendErrorKind::Unavailable, format!("credentials: {e}"))
                })?;
                Value::String(token)
            }
            None => Value::Null,
        };
        let ctx = json!({ "secrets": secrets, "token": token });
        let eval = |pairs: &[(String, super::jq::Expr)]| -> Result<Vec<(String, String)>, BackendError> {
            pairs
                .iter()
                .map(|(name, e)| {
                    e.eval_string(&ctx)
                        .map(|v| (name.clone(), v))
                        // The message could quote a secret: say only which key failed.
                        .map_err(|_| self.mapping_error(format!("auth value {name:?} did not evaluate to a string")))
                })
                .collect()
        };
        Ok((eval(&self.mapping.auth_headers)?, eval(&self.mapping.auth_query)?))
    }

    fn url(&self, path: &str, query: &[(String, String)]) -> String {
        let mut url = if path.starts_with("http://") || path.starts_with("https://") || path.starts_with("data:") {
            path.to_owned()
        } else {
            format!(
                "{}{}{path}",
                self.base_url,
                if path.starts_with('/') { "" } else { "/" }
            )
        };
        if !query.is_empty() {
            let mut q = form_urlencoded::Serializer::new(String::new());
            for (k, v) in query {
                q.append_pair(k, v);
            }
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&q.finish());
        }
        url
    }

    async fn context(&self, job: &Job) -> Result<Value, BackendError> {
        let r = &job.request;
        let size = self.mapping.map_size(r.size).map(|(_, v)| v).unwrap_or(Value::Null);
        let seconds_wanted = r.extension_seconds.unwrap_or(r.seconds);
        let seconds = self
            .mapping
            .map_seconds(seconds_wanted)
            .map(|(_, v)| v)
            .unwrap_or(Value::Null);
        let (image, image_base64, image_mime_type) = match (&r.input_reference, self.mapping.images) {
            (Some(InputRef::Stored { key, content_type, .. }), ImageMode::DataUri | ImageMode::Base64) => {
                let encoded = base64::engine::general_purpose::STANDARD.encode(self.stored_input(key).await?);
                (
                    Value::String(format!("data:{content_type};base64,{encoded}")),
                    Value::String(encoded),
                    Value::String(content_type.clone()),
                )
            }
            (Some(InputRef::Url { url }), ImageMode::DataUri) => (Value::String(url.clone()), Value::Null, Value::Null),
            _ => (Value::Null, Value::Null, Value::Null),
        };
        Ok(json!({
            "kind": job.kind.as_str(),
            "request": {
                "prompt": r.prompt,
                "model": r.model,
                "size": r.size.to_string(),
                "seconds": seconds_wanted.0,
            },
            "size": size,
            "seconds": seconds,
            "image": image,
            "image_base64": image_base64,
            "image_mime_type": image_mime_type,
            "target": self.target_for(r),
            "job": {"id": job.id, "backend_job_id": job.backend_job_id, "data": job.backend_data},
            "source": {"backend_job_id": r.source_backend_job_id},
            "callback_url": self.callbacks.as_ref().map(|c| format!("{}/callbacks/{}/{}", c.base_url, self.name, job.id)),
        }))
    }

    /// Why this backend cannot take the request's reference image (a sentence ending the error), if it cannot.
    /// An image is never dropped silently: a text-to-video result for an image-to-video request is wrong.
    fn image_refusal(&self, request: &NormalizedRequest) -> Option<&'static str> {
        match (&request.input_reference, self.mapping.images) {
            (None, _) => None,
            (Some(_), ImageMode::None) => Some("does not accept an input_reference image."),
            (Some(InputRef::FileId { .. }), _) => {
                Some("cannot read OpenAI file ids: upload the image or send it as image_url.")
            }
            (Some(InputRef::Url { .. }), ImageMode::Base64 | ImageMode::Upload) => {
                Some("needs the image itself: upload the file or send it as a data URL.")
            }
            (Some(InputRef::Video { .. }), _) => Some("does not accept a video as input_reference."),
            (Some(InputRef::Stored { .. }), ImageMode::Upload) => None,
            (Some(InputRef::Stored { .. } | InputRef::Url { .. }), ImageMode::DataUri | ImageMode::Base64) => None,
        }
    }

    /// `.target`: the backend's model, options and files, with the job's route target's model and options over
    /// them (an option the target sets replaces the backend's; the others stay).
    fn target_for(&self, r: &NormalizedRequest) -> Value {
        let mut target = self.target.clone();
        if let Some(o) = &r.target {
            if let Some(model) = &o.model {
                target["model"] = Value::String(model.clone());
            }
            if let Value::Object(extra) = &o.options {
                if !target["options"].is_object() {
                    target["options"] = Value::Object(Map::new());
                }
                if let Value::Object(options) = &mut target["options"] {
                    for (k, v) in extra {
                        options.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        target
    }

    async fn stored_input(&self, key: &str) -> Result<Vec<u8>, BackendError> {
        self.assets
            .read(key)
            .await
            .map_err(|e| self.error(BackendErrorKind::Unavailable, format!("reference image: {e}")))
    }

    /// Sends one step of the mapping and returns the reply with the context extended by it.
    async fn send(&self, step: &Step, name: StepName, ctx: Value) -> Result<Value, BackendError> {
        let path = step
            .path
            .eval_string(&ctx)
            .map_err(|e| self.mapping_error(format!("{}.path: {e}", name.as_str())))?;
        let body = match &step.body {
            Some(b) => Some(
                b.eval(&ctx)
                    .map_err(|e| self.mapping_error(format!("{}.body: {e}", name.as_str())))?,
            ),
            None => None,
        };
        let (headers, query) = self.auth().await?;
        if let Some(l) = &self.limiter {
            l.until_ready().await;
        }
        let url = self.url(&path, &query);
        let started = std::time::Instant::now();
        let reply = self.http.send(&step.method, &url, &headers, body.as_ref()).await;
        let result = reply
            .map_err(|e| self.transport_error(name, e))
            .and_then(|reply| self.absorb(name, &reply, ctx));
        self.count_call(name.as_str(), started, &result);
        result
    }

    /// `sora_shim_backend_calls_total` and `…_call_duration_seconds` for one provider call.
    fn count_call<T>(&self, operation: &str, started: std::time::Instant, result: &Result<T, BackendError>) {
        let Some(m) = crate::metrics::get() else { return };
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => match e.kind {
                BackendErrorKind::Unavailable | BackendErrorKind::Busy => "retryable",
                BackendErrorKind::StorageFull => "storage_full",
                BackendErrorKind::Rejected(_) => "rejected",
                BackendErrorKind::Ambiguous => "error",
            },
        };
        m.backend_calls
            .with_label_values(&[self.name.as_str(), operation, outcome])
            .inc();
        m.backend_call_seconds
            .with_label_values(&[self.name.as_str(), operation])
            .observe(started.elapsed().as_secs_f64());
    }

    /// The `[upload]` step: the job's stored reference image goes to the provider as a multipart file, and the
    /// create sees what the step's `image` expression reads from the answer as `.image`. Nothing is generated
    /// by an upload, so any failure here is retried later (at worst the image is uploaded twice).
    async fn upload_image(&self, job: &Job, upload: &Upload, ctx: Value) -> Result<Value, BackendError> {
        let Some(InputRef::Stored { key, content_type, .. }) = &job.request.input_reference else {
            return Ok(ctx);
        };
        let bytes = self.stored_input(key).await?;
        let path = upload
            .step
            .path
            .eval_string(&ctx)
            .map_err(|e| self.mapping_error(format!("upload.path: {e}")))?;
        let mut form = Multipart::new();
        match upload.form.as_ref().map(|f| f.eval(&ctx)) {
            None | Some(Ok(Value::Null)) => {}
            Some(Ok(Value::Object(fields))) => {
                for (name, value) in fields {
                    let text = match value {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    form = form.text(&name, &text);
                }
            }
            Some(Ok(other)) => return Err(self.mapping_error(format!("upload.form: gave {other}, not an object"))),
            Some(Err(e)) => return Err(self.mapping_error(format!("upload.form: {e}"))),
        }
        let extension = content_type.rsplit('/').next().unwrap_or("png");
        let file_name = format!("{}.{extension}", job.id);
        form = form.file(&upload.field, &file_name, content_type, &bytes);
        let (headers, query) = self.auth().await?;
        if let Some(l) = &self.limiter {
            l.until_ready().await;
        }
        let url = self.url(&path, &query);
        let started = std::time::Instant::now();
        let reply = self
            .http
            .send_multipart(&upload.step.method, &url, &headers, form)
            .await;
        let result = reply
            .map_err(|e| self.transport_error(StepName::Upload, e))
            .and_then(|reply| self.absorb(StepName::Upload, &reply, ctx));
        self.count_call(StepName::Upload.as_str(), started, &result);
        let mut ctx = result?;
        let image = upload
            .image
            .eval(&ctx)
            .map_err(|e| self.mapping_error(format!("upload.image: {e}")))?;
        if let Value::Object(map) = &mut ctx {
            map.insert("image".into(), image);
        }
        Ok(ctx)
    }

    /// A provider's answer into the context (`status`, `headers`, `response`, `step`), or the error it means.
    fn absorb(&self, name: StepName, reply: &Reply, mut ctx: Value) -> Result<Value, BackendError> {
        let response = parse_body(reply);
        if let Value::Object(map) = &mut ctx {
            map.insert("status".into(), Value::from(reply.status));
            map.insert("headers".into(), headers_json(reply));
            map.insert("response".into(), response.clone().unwrap_or(Value::Null));
            map.insert("step".into(), Value::from(name.as_str()));
        }
        if let Some(err) = self.classify(name, reply, &ctx)? {
            return Err(err);
        }
        if response.is_none() {
            let kind = if name == StepName::Create {
                BackendErrorKind::Ambiguous
            } else {
                BackendErrorKind::Unavailable
            };
            return Err(self.error(
                kind,
                format!(
                    "{} answered {} with a body that is not JSON",
                    name.as_str(),
                    reply.status
                ),
            ));
        }
        Ok(ctx)
    }

    fn transport_error(&self, name: StepName, e: SendError) -> BackendError {
        if matches!(e, SendError::TooLarge(_)) && name != StepName::Create {
            // Polling again gets the same oversized answer: fail the job, saying which setting to raise.
            return self.error(
                BackendErrorKind::Rejected(JobError {
                    code: "backend_error".into(),
                    message: "The video backend's answer is larger than this shim accepts; the operator can raise \
                              max_response_mib for this backend."
                        .into(),
                }),
                format!("{}: {e}", name.as_str()),
            );
        }
        let kind = if e.nothing_sent() || name != StepName::Create {
            BackendErrorKind::Unavailable
        } else {
            BackendErrorKind::Ambiguous
        };
        self.error(kind, format!("{}: {e}", name.as_str()))
    }

    /// The mapping's error rules first, then HTTP semantics for any other non-2xx.
    fn classify(&self, name: StepName, reply: &Reply, ctx: &Value) -> Result<Option<BackendError>, BackendError> {
        let retry_after = retry_after(reply);
        for rule in &self.mapping.errors {
            let hit = rule
                .when
                .eval(ctx)
                .map_err(|e| self.mapping_error(format!("errors.when: {e}")))?;
            if hit != Value::Bool(true) {
                continue;
            }
            let message = match &rule.message {
                Some(m) => m
                    .eval_string(ctx)
                    .map_err(|e| self.mapping_error(format!("errors.message: {e}")))?,
                None => format!("The video backend answered {} to {}.", reply.status, name.as_str()),
            };
            let kind = match rule.kind {
                RuleKind::Rejected => BackendErrorKind::Rejected(JobError {
                    code: rule.code.clone(),
                    message: message.clone(),
                }),
                RuleKind::Retry => BackendErrorKind::Unavailable,
                RuleKind::Ambiguous => BackendErrorKind::Ambiguous,
            };
            let mut err = self.error(kind, format!("{} answered {}: {message}", name.as_str(), reply.status));
            err.retry_after = retry_after;
            return Ok(Some(err));
        }
        if (200..300).contains(&reply.status) {
            return Ok(None);
        }
        let kind = match (reply.status, name) {
            (404, StepName::Poll) => return Ok(None), // handled as Lost by the caller
            (408 | 425 | 429 | 503, _) => BackendErrorKind::Unavailable,
            (500..=599, StepName::Create) => BackendErrorKind::Ambiguous,
            (500..=599, _) => BackendErrorKind::Unavailable,
            (status, _) => BackendErrorKind::Rejected(JobError {
                code: "backend_error".into(),
                message: format!("The video backend refused the request (HTTP {status})."),
            }),
        };
        let mut err = self.error(kind, format!("{} answered HTTP {}", name.as_str(), reply.status));
        err.retry_after = retry_after;
        Ok(Some(err))
    }

    fn outputs(&self, ctx: &Value) -> Result<Vec<Output>, BackendError> {
        let mut out = Vec::new();
        for (variant, expr) in &self.mapping.outputs {
            let url = match expr.eval(ctx) {
                Ok(Value::String(s)) if !s.is_empty() => s,
                Ok(Value::Null) if *variant != crate::video::Variant::Video => continue,
                Ok(Value::Null) => {
                    return Err(self.error(
                        BackendErrorKind::Rejected(JobError {
                            code: "backend_error".into(),
                            message: "The video backend finished without a video.".into(),
                        }),
                        "outputs.video is null",
                    ));
                }
                Ok(other) => {
                    return Err(self.mapping_error(format!("outputs.{}: gave {other}", variant.as_str())));
                }
                Err(e) => {
                    return Err(self.mapping_error(format!("outputs.{}: {e}", variant.as_str())));
                }
            };
            let url = self.url(&url, &[]);
            let host = url.parse::<hyper::Uri>().ok().and_then(|u| u.host().map(str::to_owned));
            let trusted = host.is_some_and(|h| self.trusted_hosts.contains(&h));
            out.push(Output {
                variant: *variant,
                location: OutputLocation::Url {
                    url,
                    auth: self.mapping.download_auth && trusted,
                },
            });
        }
        Ok(out)
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
        let mut ctx = self.context(job).await?;
        if let Value::Object(map) = &mut ctx {
            map.insert("status".into(), Value::from(200));
            map.insert("headers".into(), payload["headers"].clone());
            map.insert("response".into(), response);
            map.insert("step".into(), Value::from("poll"));
        }
        self.progress_of(ctx, result).await
    }

    /// The provider's state in `ctx` (a poll's answer) as progress; when done, the outputs (from `result` if a
    /// callback carried it, else from the `[result]` step).
    async fn progress_of(&self, ctx: Value, result: Option<Value>) -> Result<Progress, BackendError> {
        let state = self
            .mapping
            .state
            .eval_string(&ctx)
            .map_err(|e| self.error(BackendErrorKind::Unavailable, format!("poll.state: {e}")))?;
        let Some(class) = self.mapping.states.get(&state) else {
            return Err(self.error(
                BackendErrorKind::Unavailable,
                format!("unknown provider state {state:?} (not in the mapping's [states])"),
            ));
        };
        match class {
            StateClass::Queued => Ok(Progress::Queued),
            StateClass::Running => {
                let p = match &self.mapping.progress {
                    Some(e) => e.eval(&ctx).ok().and_then(|v| v.as_f64()).unwrap_or(0.0),
                    None => 0.0,
                };
                Ok(Progress::Running(p.clamp(0.0, 99.0) as u8))
            }
            StateClass::Failed => {
                let error = match &self.mapping.error {
                    Some(e) => e
                        .eval(&ctx)
                        .ok()
                        .and_then(|v| serde_json::from_value::<JobError>(v).ok()),
                    None => None,
                };
                Ok(Progress::Failed(error.unwrap_or(JobError {
                    code: "backend_error".into(),
                    message: "The video backend failed to generate this video.".into(),
                })))
            }
            StateClass::Done => {
                let ctx = match (result, &self.mapping.result) {
                    (Some(answer), _) => {
                        let mut ctx = ctx;
                        if let Value::Object(map) = &mut ctx {
                            map.insert("response".into(), answer);
                        }
                        ctx
                    }
                    (None, Some(step)) => self.send(step, StepName::Result, ctx).await?,
                    (None, None) => ctx,
                };
                Ok(Progress::Done(self.outputs(&ctx)?))
            }
        }
    }
}

fn parse_body(reply: &Reply) -> Option<Value> {
    if reply.body.is_empty() {
        return Some(Value::Null);
    }
    serde_json::from_slice(&reply.body).ok()
}

fn headers_json(reply: &Reply) -> Value {
    let map: Map<String, Value> = reply
        .headers
        .iter()
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_owned(), Value::String(v.to_owned())))
        })
        .collect();
    Value::Object(map)
}

/// `Retry-After` in seconds (an HTTP date is treated as "a little while").
fn retry_after(reply: &Reply) -> Option<Duration> {
    let v = reply.headers.get("retry-after")?.to_str().ok()?;
    Some(
        v.trim()
            .parse::<u64>()
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(5)),
    )
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
                super::callback::verify_standard(headers, body, secret.expose(), now)
            }
            crate::mapping::compile::CallbackVerify::FalEd25519 { jwks_url } => {
                let url = settings.jwks_url.as_deref().unwrap_or(jwks_url);
                self.jwks.verify_fal(&self.http, url, headers, body, now).await
            }
        }
    }

    async fn on_callback(&self, job: &Job, payload: &Value) -> Result<Progress, BackendError> {
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

    async fn fetch(&self, output: &Output, assets: &AssetStore, key: &str) -> Result<Stored, BackendError> {
        let started = std::time::Instant::now();
        let result = self.fetch_output(output, assets, key).await;
        self.count_call("download", started, &result);
        result
    }
}

impl MappedBackend {
    /// Copies one output (inline data URL, or a download) into asset storage.
    async fn fetch_output(&self, output: &Output, assets: &AssetStore, key: &str) -> Result<Stored, BackendError> {
        let OutputLocation::Url { url, auth } = &output.location else {
            return Err(self.error(BackendErrorKind::Unavailable, "a mapped backend has only URL outputs"));
        };
        if let Some(inline) = url.strip_prefix("data:") {
            // Some providers (Vertex without an output bucket) return the video inline, base64-encoded.
            let data = inline.split_once(";base64,").map(|(_, d)| d).unwrap_or("");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|_| self.mapping_error("outputs: an inline data URL that is not base64".into()))?;
            let chunk = futures_util::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from(bytes))]);
            return assets
                .put_stream(key, chunk)
                .await
                .map_err(|e| BackendError::storing(&self.name, &e, "store"));
        }
        let (headers, query) = if *auth { self.auth().await? } else { (vec![], vec![]) };
        let url = if query.is_empty() {
            url.clone()
        } else {
            self.url(url, &query)
        };
        if let Some(l) = &self.limiter {
            l.until_ready().await;
        }
        let resp = self
            .http
            .download(&url, &headers, &self.trusted_hosts)
            .await
            .map_err(|e| self.error(BackendErrorKind::Unavailable, format!("download: {e}")))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            // Expired or refused: the poll will be asked again for fresh URLs.
            return Err(self.error(
                BackendErrorKind::Unavailable,
                format!("download answered HTTP {status}"),
            ));
        }
        let chunk_timeout = self.http.timeout();
        let body = resp.into_body().into_data_stream();
        let stream = body.map(|r| r.map_err(std::io::Error::other));
        // A provider that stops sending mid-download must not hold the job forever.
        let stream = tokio_stream_timeout(stream, chunk_timeout);
        assets
            .put_stream(key, Box::pin(stream))
            .await
            .map_err(|e| BackendError::storing(&self.name, &e, "download"))
    }
}

/// Ends a stream with an error when no chunk arrives within `timeout`.
fn tokio_stream_timeout<S>(
    stream: S,
    timeout: Duration,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Unpin,
{
    futures_util::stream::unfold(Some(stream), move |state| async move {
        let mut s = state?;
        match tokio::time::timeout(timeout, s.next()).await {
            Ok(Some(item)) => Some((item, Some(s))),
            Ok(None) => None,
            Err(_) => Some((
                Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "download stalled")),
                None,
            )),
        }
    })
}
