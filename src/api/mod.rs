//! The Sora surface. [`handle`] is the front of every request: it matches the route, authenticates, counts the
//! tenant's request rate, runs the handler, stamps the headers every response carries (`x-request-id`,
//! `openai-processing-ms`, `x-ratelimit-*` for tenants with a limit) and logs one line.
//!
//! Order of the stages for a request: route → auth (tenant) → rate limit → body limit → parse (JSON |
//! multipart) → schema → semantic checks (models, sizes, inputs) → admission (moderation, unfinished-job cap,
//! persist, idempotency) → worker. `/admin/…` takes an admin key instead of a tenant's.

mod admin;
pub mod body;
mod callback;
pub mod characters;
pub mod content;
pub mod error;
pub mod openapi;
pub mod response;
pub mod schema;
pub mod unread;
pub mod videos;

use std::time::Instant;

use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, StatusCode};
use serde_json::json;

use self::error::ApiError;
use self::response::{Response, json_response};
use self::unread::{RequestBody, Watch};
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
    // At most three segments route anywhere; a longer path is unknown (and costs no allocation to find out).
    let mut found = [""; 3];
    let mut count = 0;
    for segment in rest.trim_end_matches('/').split('/').skip(1) {
        let Some(slot) = found.get_mut(count) else {
            return Err(ApiError::UnknownRoute {
                method: method.to_string(),
                path: path.to_owned(),
            });
        };
        *slot = segment;
        count += 1;
    }
    let m = method;
    match &found[..count] {
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
    /// The route's label for the log line and metrics (`other` until the route is known).
    route: Option<&'static str>,
    /// The tenant's name (never the key).
    tenant: Option<String>,
    rate: Option<crate::limits::RateState>,
}

/// Serves one request. Never fails: every error becomes an OpenAI-shaped response here.
pub async fn handle(app: &App, req: Request<Incoming>) -> Response {
    let started = Instant::now();
    let request_id = new_id("req");
    let method = req.method().clone();
    // A `Uri` shares the request head's bytes: cloning it copies no path.
    let uri = req.uri().clone();
    let path = uri.path();
    let mut caller = Caller::default();
    let (req, watch) = Watch::wrap(req);
    let mut response = match dispatch(app, req, &mut caller).await {
        Ok(r) => r,
        Err(e) => {
            if !matches!(e, ApiError::Internal { .. }) {
                tracing::debug!(%request_id, kind = e.kind(), error = %e, "request refused");
            }
            e.into_response()
        }
    };
    watch.settle(&mut response).await;
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
    let route = caller.route.unwrap_or("other");
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

async fn dispatch(app: &App, req: Request<RequestBody>, caller: &mut Caller) -> Result<Response, ApiError> {
    let uri = req.uri().clone();
    let route = route(req.method(), uri.path())?;
    caller.route = Some(route_label(&route));
    match route {
        Route::Health => return Ok(json_response(StatusCode::OK, &json!({"status": "ok"}))),
        Route::Ready => return Ok(ready(app).await),
        Route::Metrics => return Ok(admin::metrics(app).await),
        Route::OpenApi => return Ok(json_response(StatusCode::OK, openapi::document())),
        Route::ShadowReport => {
            admin(app, req.headers(), caller)?;
            return admin::shadow_report(app).await;
        }
        Route::AdminJob(id) => {
            admin(app, req.headers(), caller)?;
            return admin::admin_job(app, id).await;
        }
        Route::AdminWebhooks => {
            admin(app, req.headers(), caller)?;
            return admin::admin_webhooks(app, req.uri().query()).await;
        }
        Route::Callback(backend, job) => {
            caller.tenant = Some(format!("provider:{backend}"));
            return callback::callback(app, backend, job, req).await;
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

/// A bounded label for a request: the route's name, never an id (`other` for a request that matched none).
fn route_label(route: &Route<'_>) -> &'static str {
    match route {
        Route::Health => "healthz",
        Route::Ready => "readyz",
        Route::Metrics => "metrics",
        Route::OpenApi => "openapi",
        Route::ShadowReport => "admin_shadow_report",
        Route::AdminJob(_) => "admin_job",
        Route::AdminWebhooks => "admin_webhooks",
        Route::Callback(..) => "provider_callback",
        Route::CreateVideo => "create_video",
        Route::ListVideos => "list_videos",
        Route::GetVideo(_) => "get_video",
        Route::DeleteVideo(_) => "delete_video",
        Route::Content(_) => "content",
        Route::Remix(_) => "remix",
        Route::Edit => "edit",
        Route::Extend => "extend",
        Route::CreateCharacter => "create_character",
        Route::GetCharacter(_) => "get_character",
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
