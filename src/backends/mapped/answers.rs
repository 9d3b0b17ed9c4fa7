//! A provider's answers read back: the answer merged into the context, transport failures and HTTP statuses
//! classified (the mapping's error rules first, then HTTP semantics: whether a retry may pay twice), outputs
//! listed, and the job's progress.

use super::*;

impl MappedBackend {
    /// A provider's answer into the context (`status`, `headers`, `response`, `step`), or the error it means.
    pub(super) fn absorb(&self, name: StepName, reply: &Reply, mut ctx: Value) -> Result<Value, BackendError> {
        let response = parse_body(reply);
        if let Value::Object(map) = &mut ctx {
            map.insert("status".into(), Value::from(reply.status));
            map.insert("headers".into(), headers_json(reply));
            map.insert("response".into(), response.clone().unwrap_or(Value::Null));
            map.insert("step".into(), Value::from(name.as_str()));
        }
        // Classified before the body is judged: a non-JSON error page still gets its status's meaning.
        if let Some(err) = self.classify(name, reply, &ctx)? {
            return Err(err);
        }
        if response.is_none() {
            // A 2xx create we cannot read may still have started a paid job: ambiguous, so it is never resent.
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

    pub(super) fn transport_error(&self, name: StepName, e: SendError) -> BackendError {
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
        // Only a create that may have reached the provider is ambiguous; other steps start nothing and are resent.
        let kind = if e.nothing_sent() || name != StepName::Create {
            BackendErrorKind::Unavailable
        } else {
            BackendErrorKind::Ambiguous
        };
        self.error(kind, format!("{}: {e}", name.as_str()))
    }

    /// The mapping's error rules first, then HTTP semantics for any other non-2xx.
    pub(super) fn classify(
        &self,
        name: StepName,
        reply: &Reply,
        ctx: &Value,
    ) -> Result<Option<BackendError>, BackendError> {
        let retry_after = retry_after(reply);
        // In file order, the first rule whose `when` is true decides; rules see 2xx answers too.
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
            // By HTTP semantics these were not acted on (timeout, too early, rate limit, overload): even a create is
            // safe to resend.
            (408 | 425 | 429 | 503, _) => BackendErrorKind::Unavailable,
            // Any other 5xx after a create may hide a job the provider accepted (and bills).
            (500..=599, StepName::Create) => BackendErrorKind::Ambiguous,
            (500..=599, _) => BackendErrorKind::Unavailable,
            // Any other status (a 4xx, say): the provider refuses the request as sent, and would again.
            (status, _) => BackendErrorKind::Rejected(JobError {
                code: "backend_error".into(),
                message: format!("The video backend refused the request (HTTP {status})."),
            }),
        };
        let mut err = self.error(kind, format!("{} answered HTTP {}", name.as_str(), reply.status));
        err.retry_after = retry_after;
        Ok(Some(err))
    }

    pub(super) fn outputs(&self, ctx: &Value) -> Result<Vec<Output>, BackendError> {
        let mut out = Vec::new();
        for (variant, expr) in &self.mapping.outputs {
            let url = match expr.eval(ctx) {
                Ok(Value::String(s)) if !s.is_empty() => s,
                // Thumbnails and spritesheets are optional; a finished job without a video is a failed one.
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
            // A relative output path is on the provider itself: resolved against base_url.
            let url = self.url(&url, &[]);
            let host = url.parse::<hyper::Uri>().ok().and_then(|u| u.host().map(str::to_owned));
            // Outputs often sit on a storage host or CDN: credentials go only to the provider's hosts and auth_hosts.
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

    /// The provider's state in `ctx` (a poll's answer) as progress; when done, the outputs (from `result` if a
    /// callback carried it, else from the `[result]` step).
    pub(super) async fn progress_of(&self, ctx: Value, result: Option<Value>) -> Result<Progress, BackendError> {
        // An unreadable or unknown state is taken as transient (the job keeps polling), never as the video failing.
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
                // Never 100 while running: the API shows 100 only for a completed video.
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

pub(super) fn parse_body(reply: &Reply) -> Option<Value> {
    // An empty body (a 202 or 204, say) is a valid answer, read as null; only unparsable text is an error.
    if reply.body.is_empty() {
        return Some(Value::Null);
    }
    serde_json::from_slice(&reply.body).ok()
}

pub(super) fn headers_json(reply: &Reply) -> Value {
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
pub(super) fn retry_after(reply: &Reply) -> Option<Duration> {
    let v = reply.headers.get("retry-after")?.to_str().ok()?;
    Some(
        v.trim()
            .parse::<u64>()
            .map(Duration::from_secs)
            .unwrap_or(Duration::from_secs(5)),
    )
}
