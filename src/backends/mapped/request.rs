//! The requests a mapping describes: the jq context every expression sees, credentials, URLs, an input image
//! uploaded first where the provider wants that, and sending one step with its rate limit and metrics.

use super::*;

impl MappedBackend {
    pub(super) async fn auth(&self) -> Result<(Pairs, Pairs), BackendError> {
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
        // Secrets are in this context only: path and body expressions cannot read them, only auth headers and query.
        let ctx = json!({ "secrets": secrets, "token": token });
        let eval = |pairs: &[(String, crate::mapping::jq::Expr)]| -> Result<Vec<(String, String)>, BackendError> {
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

    pub(super) fn url(&self, path: &str, query: &[(String, String)]) -> String {
        // Full URLs a provider handed back (fal's status_url, output links) and inline data URIs are used as given.
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

    pub(super) async fn context(&self, job: &Job) -> Result<Value, BackendError> {
        let r = &job.request;
        let size = self.mapping.map_size(r.size).map(|(_, v)| v).unwrap_or(Value::Null);
        // An extension's provider makes only the new segment: `.request.seconds` is its length, not the total.
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
            // Upload mode gets `.image` later (upload_image); other pairs were refused at admission (image_refusal).
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
    pub(super) fn image_refusal(&self, request: &NormalizedRequest) -> Option<&'static str> {
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
    pub(super) fn target_for(&self, r: &NormalizedRequest) -> Value {
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

    pub(super) async fn stored_input(&self, key: &str) -> Result<Vec<u8>, BackendError> {
        self.assets
            .read(key)
            .await
            // Our own storage failing says nothing against the job: retried later, not failed.
            .map_err(|e| self.error(BackendErrorKind::Unavailable, format!("reference image: {e}")))
    }

    /// Sends one step of the mapping and returns the reply with the context extended by it.
    pub(super) async fn send(&self, step: &Step, name: StepName, ctx: Value) -> Result<Value, BackendError> {
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
    pub(super) fn count_call<T>(&self, operation: &str, started: std::time::Instant, result: &Result<T, BackendError>) {
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
    pub(super) async fn upload_image(&self, job: &Job, upload: &Upload, ctx: Value) -> Result<Value, BackendError> {
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
                    // Multipart fields are text: a number or boolean goes as its JSON spelling.
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
}
