//! Provider callbacks (`POST /callbacks/{backend}/{job}`): no tenant key; the provider's own signature.

use hyper::{Request, StatusCode};
use serde_json::json;

use super::body;
use super::error::ApiError;
use super::response::{Response, json_response};
use super::unread::RequestBody;
use crate::app::App;

/// A provider's callback: verified by the provider's own signature scheme (the mapping's `[callback]`), then
/// handed to the worker, which reads it as the job's next poll answer. Refused (401) when unsigned or badly
/// signed; the job is untouched then, and polling carries on.
pub(super) async fn callback(
    app: &App,
    backend: &str,
    job_id: &str,
    req: Request<RequestBody>,
) -> Result<Response, ApiError> {
    let count = |outcome: &str| {
        if let Some(m) = crate::metrics::get() {
            m.callbacks.with_label_values(&[backend, outcome]).inc();
        }
    };
    let not_found = || ApiError::UnknownRoute {
        method: "POST".into(),
        path: format!("/callbacks/{backend}/{job_id}"),
    };
    let target = app
        .live
        .load()
        .backends
        .get(backend)
        .filter(|b| b.takes_callbacks())
        .cloned()
        .ok_or_else(not_found)?;
    let (parts, body) = req.into_parts();
    let read = body::read_limited(&parts.headers, body, 4 * 1024 * 1024);
    let bytes = tokio::time::timeout(app.config.server.request_timeout, read)
        .await
        .map_err(|_| ApiError::RequestTimeout {
            secs: app.config.server.request_timeout.as_secs(),
        })??;
    if let Err(reason) = target.verify_callback(&parts.headers, &bytes).await {
        count("refused");
        tracing::warn!(backend, job = job_id, %reason, "provider callback refused");
        return Err(ApiError::Unauthorized {
            message: format!("Callback refused: {reason}."),
            code: Some("invalid_signature"),
        });
    }
    let finished = match app.store.get_job(job_id).await? {
        Some(job) if job.backend == backend => job.state.is_terminal(),
        _ => {
            count("unknown_job");
            return Err(not_found());
        }
    };
    let body: serde_json::Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid(format!("The callback body is not JSON: {e}"), None, None))?;
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_owned(), json!(v))))
        .collect();
    // A late or repeated callback for a finished video changes nothing: acknowledged, not kept.
    if !finished {
        app.worker
            .callback(job_id, json!({"body": body, "headers": headers}))
            .await?;
    }
    count("accepted");
    tracing::info!(backend, job = job_id, "provider callback accepted");
    Ok(json_response(StatusCode::OK, &json!({"received": true})))
}
