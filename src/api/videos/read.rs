//! The reading side of the video resource: list, retrieve and delete, answered from the store's shared
//! records (the cache, for SQLite) without copying them.

use std::sync::Arc;

use hyper::HeaderMap;
use hyper::header::HeaderValue;
use serde_json::json;

use crate::api::error::ApiError;
use crate::api::response::{Response, ok_json, ok_serialized};
use crate::app::App;
use crate::auth::Tenant;
use crate::store::Order;
use crate::video::{Job, VideoResource};

/// Page size of `GET /videos` when `limit` is not given.
const DEFAULT_LIST_LIMIT: usize = 20;

/// The tenant's video, or 404 (also for another tenant's video: its existence is not revealed).
pub(crate) async fn owned_job(app: &App, tenant: &Tenant, id: &str) -> Result<Arc<Job>, ApiError> {
    match app.store.read_job(id).await? {
        Some(job) if job.tenant == tenant.id => Ok(job),
        _ => Err(ApiError::video_not_found(id)),
    }
}

pub async fn list(app: &App, tenant: &Tenant, query: Option<&str>) -> Result<Response, ApiError> {
    let mut limit = DEFAULT_LIST_LIMIT;
    let mut order = Order::Desc;
    let mut after = None;
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "limit" => {
                limit = value.parse::<usize>().ok().filter(|n| *n <= 100).ok_or_else(|| {
                    ApiError::invalid(
                        format!("Invalid 'limit': expected an integer between 0 and 100, but got '{value}'."),
                        Some("limit"),
                        Some("invalid_value"),
                    )
                })?;
            }
            "order" => {
                order = match value.as_ref() {
                    "asc" => Order::Asc,
                    "desc" => Order::Desc,
                    other => {
                        return Err(ApiError::invalid_value("order", other, &["asc".into(), "desc".into()]));
                    }
                }
            }
            "after" if !value.is_empty() => after = Some(value.into_owned()),
            // Other query parameters (and an empty `after`) are ignored, as the API did.
            _ => {}
        }
    }
    // One row more than the page: whether it came back is `has_more`.
    let mut jobs = app
        .store
        .read_jobs(&tenant.id, after.as_deref(), limit + 1, order)
        .await?;
    let has_more = jobs.len() > limit;
    jobs.truncate(limit);
    let page = ListPage {
        object: "list",
        data: jobs.iter().map(|j| j.resource()).collect(),
        first_id: jobs.first().map(|j| j.id.as_str()),
        last_id: jobs.last().map(|j| j.id.as_str()),
        has_more,
    };
    ok_serialized(&page).map_err(|e| ApiError::internal("serialize", e))
}

/// `GET /v1/videos`: a page of resources, borrowing from the jobs.
#[derive(serde::Serialize)]
struct ListPage<'a> {
    object: &'static str,
    data: Vec<VideoResource<'a>>,
    first_id: Option<&'a str>,
    last_id: Option<&'a str>,
    has_more: bool,
}

pub async fn retrieve(app: &App, tenant: &Tenant, id: &str) -> Result<Response, ApiError> {
    let job = owned_job(app, tenant, id).await?;
    let mut response = ok_serialized(&job.resource()).map_err(|e| ApiError::internal("serialize", e))?;
    if !job.state.is_terminal() {
        // The SDK poll helpers sleep this long between retrieves: the shim paces its own clients.
        if let Ok(v) = HeaderValue::from_str(&app.config.server.poll_after_ms.to_string()) {
            response.headers_mut().insert("openai-poll-after-ms", v);
        }
    }
    describe_origin(&job, response.headers_mut());
    Ok(response)
}

/// What the stored video really is (a provider may round a size or a length): an extra header SDKs ignore. Which
/// backend made it stays on the job record and in the logs, never in a client's response.
fn describe_origin(job: &Job, headers: &mut HeaderMap) {
    if let Some(p) = &job.produced {
        let value = format!(
            "{}x{}; seconds={}.{:03}",
            p.width,
            p.height,
            p.duration_ms / 1000,
            p.duration_ms % 1000
        );
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert("x-sora-shim-produced", v);
        }
    }
}

pub async fn delete(app: &App, tenant: &Tenant, id: &str) -> Result<Response, ApiError> {
    let job = owned_job(app, tenant, id).await?;
    if !job.state.is_terminal() {
        return Err(ApiError::invalid(
            format!(
                "Video '{id}' is still {}; only completed or failed videos can be deleted.",
                job.sora_status()
            ),
            Some("video_id"),
            Some("invalid_state"),
        ));
    }
    // The record goes first: a crash in between leaves unreferenced files, never a record without its files.
    app.store.delete_job(&job.id, job.version).await.map_err(|e| match e {
        // The version moved since it was read (a concurrent delete, say): answered as a video that is gone.
        crate::store::StoreError::Conflict(_) => ApiError::video_not_found(id),
        other => other.into(),
    })?;
    if let Err(e) = app.assets.delete_prefix(&job.id).await {
        tracing::warn!(job = %job.id, error = %e, "video deleted but its assets could not be removed");
    }
    Ok(ok_json(
        &json!({"id": job.id, "object": "video.deleted", "deleted": true}),
    ))
}
