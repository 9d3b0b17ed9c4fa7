//! The Sora surface. [`handle`] is the front of every request: it matches the route, authenticates, counts the
//! tenant's request rate, runs the handler, stamps the headers every response carries (`x-request-id`,
//! `openai-processing-ms`, `x-ratelimit-*` for tenants with a limit) and logs one line.
//!
//! Order of the stages for a request: route → auth (tenant) → rate limit → body limit → parse (JSON |
//! multipart) → schema → semantic checks (models, sizes, inputs) → admission (moderation, unfinished-job cap,
//! persist, idempotency) → worker. `/admin/…` takes an admin key instead of a tenant's.

pub mod body;
pub mod characters;
pub mod content;
pub mod error;
pub mod openapi;
pub mod response;
pub mod schema;
pub mod videos;

use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, StatusCode};
use serde_json::json;

use self::error::ApiError;
use self::response::{Response, json_response};
use crate::app::App;
use crate::auth::Tenant;
use crate::video::new_id;

/// Every operation we serve.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Health,
    Ready,
    Metrics,
    OpenApi,
    ShadowReport,
    AdminJob(&'a str),
    AdminWebhooks,
    /// `POST /callbacks/{backend}/{job}`: a provider calling back (no tenant key: the provider's signature).
    Callback(&'a str, &'a str),
    CreateVideo,
    ListVideos,
    GetVideo(&'a str),
    DeleteVideo(&'a str),
    Content(&'a str),
    Remix(&'a str),
    Edit,
    Extend,
    CreateCharacter,
    GetCharacter(&'a str),
}

fn route<'a>(method: &Method, path: &'a str) -> Result<Route<'a>, ApiError> {
    let not_allowed = |allow: &'static str| ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: path.to_owned(),
        allow,
    };
    match path {
        "/healthz" => {
            return if method == Method::GET {
                Ok(Route::Health)
            } else {
                Err(not_allowed("GET"))
            };
        }
        "/openapi.json" | "/v1/openapi.json" => {
            return if method == Method::GET {
                Ok(Route::OpenApi)
            } else {
                Err(not_allowed("GET"))
            };
        }
        "/metrics" => {
            return if method == Method::GET {
                Ok(Route::Metrics)
            } else {
                Err(not_allowed("GET"))
            };
        }
        "/admin/shadow/report" => {
            return if method == Method::GET {
                Ok(Route::ShadowReport)
            } else {
                Err(not_allowed("GET"))
            };
        }
        _ if path.starts_with("/callbacks/") => {
            let parts: Vec<&str> = path["/callbacks/".len()..].split('/').collect();
            return match (parts.as_slice(), method == Method::POST) {
                ([backend, job], true) if !backend.is_empty() && !job.is_empty() => Ok(Route::Callback(backend, job)),
                ([_, _], false) => Err(not_allowed("POST")),
                _ => Err(ApiError::UnknownRoute {
                    method: method.to_string(),
                    path: path.to_owned(),
                }),
            };
        }
        _ if path.starts_with("/admin/jobs/") => {
            let id = &path["/admin/jobs/".len()..];
            return match (method == Method::GET, id.is_empty() || id.contains('/')) {
                (_, true) => Err(ApiError::UnknownRoute {
                    method: method.to_string(),
                    path: path.to_owned(),
                }),
                (true, false) => Ok(Route::AdminJob(id)),
                (false, false) => Err(not_allowed("GET")),
            };
        }
        "/admin/webhooks" => {
            return if method == Method::GET {
                Ok(Route::AdminWebhooks)
            } else {
                Err(not_allowed("GET"))
            };
        }
        "/readyz" => {
            return if method == Method::GET {
                Ok(Route::Ready)
            } else {
                Err(not_allowed("GET"))
            };
        }
        _ => {}
    }
    // Clients set a base URL ending in /v1 (the SDK default); a bare base URL is accepted too.
    let rest = path.strip_prefix("/v1").unwrap_or(path);
    let segments: Vec<&str> = rest.trim_end_matches('/').split('/').skip(1).collect();
    let m = method;
    match segments.as_slice() {
        ["videos"] if m == Method::POST => Ok(Route::CreateVideo),
        ["videos"] if m == Method::GET => Ok(Route::ListVideos),
        ["videos"] => Err(not_allowed("GET, POST")),
        ["videos", "edits"] if m == Method::POST => Ok(Route::Edit),
        ["videos", "extensions"] if m == Method::POST => Ok(Route::Extend),
        ["videos", "characters"] if m == Method::POST => Ok(Route::CreateCharacter),
        ["videos", "edits" | "extensions" | "characters"] => Err(not_allowed("POST")),
        ["videos", "characters", id] if m == Method::GET => Ok(Route::GetCharacter(id)),
        ["videos", "characters", _] => Err(not_allowed("GET")),
        ["videos", id] if m == Method::GET => Ok(Route::GetVideo(id)),
        ["videos", id] if m == Method::DELETE => Ok(Route::DeleteVideo(id)),
        ["videos", _] => Err(not_allowed("GET, DELETE")),
        ["videos", id, "content"] if m == Method::GET => Ok(Route::Content(id)),
        ["videos", _, "content"] => Err(not_allowed("GET")),
        ["videos", id, "remix"] if m == Method::POST => Ok(Route::Remix(id)),
        ["videos", _, "remix"] => Err(not_allowed("POST")),
        _ => Err(ApiError::UnknownRoute {
            method: method.to_string(),
            path: path.to_owned(),
        }),
    }
}

/// What the request line of the log and the response headers need to know about the caller.
#[derive(Default)]
struct Caller {
    /// The tenant's name (never the key).
    tenant: Option<String>,
    rate: Option<crate::limits::RateState>,
}

/// Serves one request. Never fails: every error becomes an OpenAI-shaped response here.
pub async fn handle(app: &App, req: Request<Incoming>) -> Response {
    let started = Instant::now();
    let request_id = new_id("req");
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut caller = Caller::default();
    let mut response = match dispatch(app, req, &mut caller).await {
        Ok(r) => r,
        Err(e) => {
            if !matches!(e, ApiError::Internal { .. }) {
                tracing::debug!(%request_id, kind = e.kind(), error = %e, "request refused");
            }
            e.into_response()
        }
    };
    let elapsed = started.elapsed().as_millis();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        headers.insert("x-request-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(&elapsed.to_string()) {
        headers.insert("openai-processing-ms", v);
    }
    headers.insert("openai-version", HeaderValue::from_static("2020-10-01"));
    if let Some(state) = &caller.rate
        && !headers.contains_key("x-ratelimit-limit-requests")
    {
        error::rate_headers(headers, state);
    }
    let route = route_label(&method, &path);
    let status = response.status();
    tracing::info!(
        %request_id,
        tenant = caller.tenant.as_deref().unwrap_or("-"),
        %method,
        route,
        %path,
        status = status.as_u16(),
        ms = elapsed as u64,
        "request"
    );
    if let Some(m) = crate::metrics::get() {
        m.requests
            .with_label_values(&[route, method.as_str(), status.as_str()])
            .inc();
        m.request_seconds
            .with_label_values(&[route, method.as_str()])
            .observe(started.elapsed().as_secs_f64());
    }
    response
}

async fn dispatch(app: &App, req: Request<Incoming>, caller: &mut Caller) -> Result<Response, ApiError> {
    let path = req.uri().path().to_owned();
    let route = route(req.method(), &path)?;
    match route {
        Route::Health => return Ok(json_response(StatusCode::OK, &json!({"status": "ok"}))),
        Route::Ready => return Ok(ready(app).await),
        Route::Metrics => return Ok(metrics(app).await),
        Route::OpenApi => return Ok(json_response(StatusCode::OK, openapi::document())),
        Route::ShadowReport => {
            admin(app, req.headers(), caller)?;
            return shadow_report(app).await;
        }
        Route::AdminJob(id) => {
            admin(app, req.headers(), caller)?;
            return admin_job(app, id).await;
        }
        Route::AdminWebhooks => {
            admin(app, req.headers(), caller)?;
            return admin_webhooks(app, req.uri().query()).await;
        }
        Route::Callback(backend, job) => {
            caller.tenant = Some(format!("provider:{backend}"));
            return callback(app, backend, job, req).await;
        }
        _ => {}
    }
    // The Sora surface: the key names the tenant, whose request rate is counted before anything else is done.
    let tenant: Tenant = app.live.load().access.authenticate(req.headers())?;
    caller.tenant = Some(tenant.name.clone());
    caller.rate = app.limits.check_request(&tenant, app.store.as_ref()).await?;
    let tenant = &tenant;
    match route {
        Route::CreateVideo => videos::create(app, tenant, req).await,
        Route::ListVideos => videos::list(app, tenant, req.uri().query()).await,
        Route::GetVideo(id) => videos::retrieve(app, tenant, id).await,
        Route::DeleteVideo(id) => videos::delete(app, tenant, id).await,
        Route::Content(id) => content::download(app, tenant, id, &req).await,
        Route::Remix(id) => videos::remix(app, tenant, id, req).await,
        Route::Edit => videos::edit(app, tenant, req).await,
        Route::Extend => videos::extend(app, tenant, req).await,
        Route::CreateCharacter => characters::create(app, tenant, req).await,
        Route::GetCharacter(id) => characters::retrieve(app, tenant, id).await,
        Route::Health
        | Route::Ready
        | Route::Metrics
        | Route::OpenApi
        | Route::ShadowReport
        | Route::AdminJob(_)
        | Route::AdminWebhooks
        | Route::Callback(..) => Err(ApiError::internal(
            "routing",
            "an unauthenticated route reached the tenant dispatch",
        )),
    }
}

/// The admin API: an admin key or 401.
fn admin(app: &App, headers: &hyper::HeaderMap, caller: &mut Caller) -> Result<(), ApiError> {
    app.live.load().access.authenticate_admin(headers)?;
    caller.tenant = Some("admin".into());
    Ok(())
}

/// The Prometheus text exposition; circuit states, queue depth and jobs held by backend limits are read now.
async fn metrics(app: &App) -> Response {
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
async fn admin_job(app: &App, id: &str) -> Result<Response, ApiError> {
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
async fn admin_webhooks(app: &App, query: Option<&str>) -> Result<Response, ApiError> {
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

/// A provider's callback: verified by the provider's own signature scheme (the mapping's `[callback]`), then
/// handed to the worker, which reads it as the job's next poll answer. Refused (401) when unsigned or badly
/// signed; the job is untouched then, and polling carries on.
async fn callback(app: &App, backend: &str, job_id: &str, req: Request<Incoming>) -> Result<Response, ApiError> {
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

/// `sora-shim shadow report --json` over HTTP (admin keys only).
async fn shadow_report(app: &App) -> Result<Response, ApiError> {
    let pairs = app.store.shadow_pairs().await?;
    let stats = crate::shadow::report(&pairs, &app.live.load().prices);
    let value = serde_json::to_value(&stats).map_err(|e| ApiError::internal("shadow report", e))?;
    Ok(json_response(
        StatusCode::OK,
        &json!({"object": "shadow.report", "data": value}),
    ))
}

/// A bounded label for a request: the route's name, never an id.
fn route_label(method: &Method, path: &str) -> &'static str {
    match route(method, path) {
        Ok(Route::Health) => "healthz",
        Ok(Route::Ready) => "readyz",
        Ok(Route::Metrics) => "metrics",
        Ok(Route::OpenApi) => "openapi",
        Ok(Route::ShadowReport) => "admin_shadow_report",
        Ok(Route::AdminJob(_)) => "admin_job",
        Ok(Route::AdminWebhooks) => "admin_webhooks",
        Ok(Route::Callback(..)) => "provider_callback",
        Ok(Route::CreateVideo) => "create_video",
        Ok(Route::ListVideos) => "list_videos",
        Ok(Route::GetVideo(_)) => "get_video",
        Ok(Route::DeleteVideo(_)) => "delete_video",
        Ok(Route::Content(_)) => "content",
        Ok(Route::Remix(_)) => "remix",
        Ok(Route::Edit) => "edit",
        Ok(Route::Extend) => "extend",
        Ok(Route::CreateCharacter) => "create_character",
        Ok(Route::GetCharacter(_)) => "get_character",
        Err(_) => "other",
    }
}

/// Ready when the store answers, the worker runs and the server is not draining (a load balancer stops
/// sending new requests here as soon as a shutdown begins).
async fn ready(app: &App) -> Response {
    let store = app.store.ping().await;
    let worker = app.worker.is_running();
    let draining = app.draining.is_cancelled();
    let status = if store.is_ok() && worker && !draining {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(
        status,
        &json!({
            "status": if status == StatusCode::OK { "ready" } else { "not_ready" },
            "store": store.map(|_| "ok".to_owned()).unwrap_or_else(|e| e.to_string()),
            "worker": if worker { "running" } else { "stopped" },
            "draining": draining,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let get = Method::GET;
        let post = Method::POST;
        assert_eq!(route(&post, "/v1/videos").unwrap(), Route::CreateVideo);
        assert_eq!(route(&get, "/videos").unwrap(), Route::ListVideos);
        assert_eq!(route(&get, "/v1/videos/video_1").unwrap(), Route::GetVideo("video_1"));
        assert_eq!(
            route(&get, "/v1/videos/video_1/content").unwrap(),
            Route::Content("video_1")
        );
        assert_eq!(
            route(&post, "/v1/videos/video_1/remix").unwrap(),
            Route::Remix("video_1")
        );
        assert_eq!(route(&post, "/v1/videos/edits").unwrap(), Route::Edit);
        assert_eq!(
            route(&get, "/v1/videos/characters/char_1").unwrap(),
            Route::GetCharacter("char_1")
        );
        assert!(matches!(
            route(&Method::PUT, "/v1/videos"),
            Err(ApiError::MethodNotAllowed { .. })
        ));
        assert!(matches!(
            route(&get, "/v1/videos/edits"),
            Err(ApiError::MethodNotAllowed { .. })
        ));
        assert!(matches!(route(&get, "/v1/images"), Err(ApiError::UnknownRoute { .. })));
        assert!(matches!(
            route(&get, "/v1/videos/a/b/c"),
            Err(ApiError::UnknownRoute { .. })
        ));
    }
}
