//! The operator's endpoints: `/metrics` (no key: serve it on a private network) and `/admin/…` (an admin key,
//! checked by the router before these run).

use hyper::StatusCode;
use hyper::header::HeaderValue;
use serde_json::json;

use super::error::ApiError;
use super::response::{self, Response, json_response};
use crate::app::App;

/// The Prometheus text exposition; circuit states, queue depth and jobs held by backend limits are read now.
pub(super) async fn metrics(app: &App) -> Response {
    let Some(m) = crate::metrics::get() else {
        return json_response(StatusCode::NOT_FOUND, &json!({"status": "metrics disabled"}));
    };
    for (backend, state) in app.breakers.states() {
        let open = i64::from(state != crate::breakers::CircuitState::Closed);
        m.circuit_open.with_label_values(&[backend.as_str()]).set(open);
    }
    match app.store.queue_depth().await {
        Ok(depths) => {
            // Every unfinished state is reported, at 0 when empty, so a drained queue reads 0 rather than gone.
            for state in crate::video::State::ALL.into_iter().filter(|s| !s.is_terminal()) {
                m.queue_depth.with_label_values(&[state.as_str()]).set(0);
            }
            for (state, n) in depths {
                m.queue_depth.with_label_values(&[state.as_str()]).set(n as i64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the queue depth for /metrics"),
    }
    let live = app.live.load();
    for name in live.backends.names() {
        if let Some(b) = live.backends.get(name) {
            m.backend_waiting.with_label_values(&[name]).set(b.waiting() as i64);
        }
    }
    let mut response = hyper::Response::new(response::full(m.render()));
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// `GET /admin/jobs/{id}`: the whole job record — tenant, backend and its job id, internal state, attempts,
/// moderation verdict, timings — for any tenant's video or a shadow job. Records hold no secrets.
pub(super) async fn admin_job(app: &App, id: &str) -> Result<Response, ApiError> {
    let job = app.store.get_job(id).await?.ok_or_else(|| ApiError::NotFound {
        message: format!("No job with id '{id}'."),
        param: None,
    })?;
    let mut value = serde_json::to_value(&job).map_err(|e| ApiError::internal("admin job", e))?;
    if let Some(obj) = value.as_object_mut() {
        obj.insert("object".into(), json!("admin.job"));
        obj.insert("status".into(), json!(job.sora_status()));
    }
    Ok(json_response(StatusCode::OK, &value))
}

/// `GET /admin/webhooks?video_id=…&state=pending|delivered|failed&limit=…`: webhook deliveries, newest first, with
/// their attempts, last status and last error.
pub(super) async fn admin_webhooks(app: &App, query: Option<&str>) -> Result<Response, ApiError> {
    let mut video_id = None;
    let mut state = None;
    let mut limit = 100usize;
    let states = ["pending".to_owned(), "delivered".to_owned(), "failed".to_owned()];
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match k.as_ref() {
            "video_id" => video_id = Some(v.into_owned()),
            "state" if states.iter().any(|s| *s == v) => state = Some(v.into_owned()),
            "state" => return Err(ApiError::invalid_value("state", &v, &states)),
            "limit" => {
                limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| {
                        ApiError::invalid("limit must be 1 to 1000", Some("limit"), Some("invalid_value"))
                    })?;
            }
            other => {
                return Err(ApiError::invalid(
                    format!("Unknown parameter: '{other}'."),
                    Some(other),
                    Some("unknown_parameter"),
                ));
            }
        }
    }
    let deliveries = app
        .store
        .list_deliveries(video_id.as_deref(), state.as_deref(), limit)
        .await?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": deliveries}),
    ))
}

/// `sora-shim shadow report --json` over HTTP (admin keys only).
pub(super) async fn shadow_report(app: &App) -> Result<Response, ApiError> {
    let pairs = app.store.shadow_pairs().await?;
    let missed = crate::shadow::missed(app.store.as_ref()).await?;
    let live = app.live.load();
    let stats = crate::shadow::report(&pairs, &missed, &live.prices, &live.models);
    let value = serde_json::to_value(&stats).map_err(|e| ApiError::internal("shadow report", e))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"object": "shadow.report", "data": value}),
    ))
}
