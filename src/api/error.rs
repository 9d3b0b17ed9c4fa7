//! [`ApiError`]: every way a request can fail, and the one place ([`ApiError::into_response`]) that turns it into
//! the OpenAI error envelope `{"error": {message, type, param, code}}` with its status code and headers.

use hyper::StatusCode;
use hyper::header::{ALLOW, CONTENT_RANGE, HeaderName, HeaderValue};
use serde_json::json;

use super::response::{Response, json_response};
use crate::assets::AssetError;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is wrong; `param` names the field where there is one.
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
        code: Option<&'static str>,
    },
    /// 401: no key, or a key we don't accept.
    #[error("{message}")]
    Unauthorized {
        message: String,
        code: Option<&'static str>,
    },
    /// 404: no such resource for this tenant (another tenant's resources are 404 too, never 403).
    #[error("{message}")]
    NotFound { message: String, param: Option<String> },
    /// 404 for a path we don't serve.
    #[error("Invalid URL ({method} {path})")]
    UnknownRoute { method: String, path: String },
    /// 405: the path exists, the method does not.
    #[error("Invalid method for URL ({method} {path})")]
    MethodNotAllowed {
        method: String,
        path: String,
        allow: &'static str,
    },
    /// 409: the idempotency key was used with a different request.
    #[error("{message}")]
    Conflict { message: String },
    /// 413: the body is larger than `server.max_body_bytes`.
    #[error("Request body too large: the limit is {limit} bytes.")]
    TooLarge { limit: u64 },
    /// 413: an uploaded file is larger than `server.max_upload_bytes`.
    #[error("The uploaded file '{field}' is too large: the limit is {limit} bytes.")]
    UploadTooLarge { field: String, limit: u64 },
    /// 408: the client did not send its body within `server.request_timeout_secs`.
    #[error("The request body did not arrive within {secs} seconds.")]
    RequestTimeout { secs: u64 },
    /// 429: over a tenant limit (requests per minute, or unfinished jobs at once).
    #[error("{message}")]
    RateLimited {
        message: String,
        /// For the `x-ratelimit-*-requests` headers (requests-per-minute limits only).
        state: Option<crate::limits::RateState>,
        retry_after: std::time::Duration,
    },
    /// 416: a `Range` outside the asset.
    #[error("Requested range not satisfiable")]
    RangeNotSatisfiable { len: u64 },
    /// 507: the data dir's disk is full; nothing of this request was stored. The detail is logged.
    #[error("The server's storage is full, so this request was not stored. Try again later.")]
    StorageFull { detail: String },
    /// 500: our fault. The message the client sees is generic; the detail is logged.
    #[error("{kind}: {detail}")]
    Internal { kind: &'static str, detail: String },
}

impl ApiError {
    pub fn invalid(message: impl Into<String>, param: Option<&str>, code: Option<&'static str>) -> ApiError {
        ApiError::InvalidRequest {
            message: message.into(),
            param: param.map(str::to_owned),
            code,
        }
    }

    /// `Invalid value: 'x'. Supported values are: 'a', 'b', and 'c'.`, the message Sora gave.
    pub fn invalid_value(param: &str, got: &str, supported: &[String]) -> ApiError {
        let quoted: Vec<String> = supported.iter().map(|s| format!("'{s}'")).collect();
        let list = match quoted.len() {
            0 => String::new(),
            1 => quoted[0].clone(),
            2 => format!("{} and {}", quoted[0], quoted[1]),
            n => format!("{}, and {}", quoted[..n - 1].join(", "), quoted[n - 1]),
        };
        ApiError::invalid(
            format!("Invalid value: '{got}'. Supported values are: {list}."),
            Some(param),
            Some("invalid_value"),
        )
    }

    pub fn video_not_found(id: &str) -> ApiError {
        ApiError::NotFound {
            message: format!("Video with id '{id}' not found."),
            param: None,
        }
    }

    pub fn internal(kind: &'static str, detail: impl ToString) -> ApiError {
        ApiError::Internal {
            kind,
            detail: detail.to_string(),
        }
    }

    /// A short, low-cardinality label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::InvalidRequest { .. } => "invalid_request",
            ApiError::Unauthorized { .. } => "unauthorized",
            ApiError::NotFound { .. } => "not_found",
            ApiError::UnknownRoute { .. } => "unknown_route",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::Conflict { .. } => "conflict",
            ApiError::TooLarge { .. } => "too_large",
            ApiError::RequestTimeout { .. } => "request_timeout",
            ApiError::UploadTooLarge { .. } => "upload_too_large",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::RangeNotSatisfiable { .. } => "range_not_satisfiable",
            ApiError::StorageFull { .. } => "storage_full",
            ApiError::Internal { kind, .. } => kind,
        }
    }

    /// The envelope and status. Logs server errors once, here.
    pub fn into_response(self) -> Response {
        let no_header: Option<(HeaderName, HeaderValue)> = None;
        let (status, kind, param, code, extra): (StatusCode, &str, Option<String>, Option<&str>, _) = match &self {
            ApiError::InvalidRequest { param, code, .. } => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                param.clone(),
                *code,
                no_header,
            ),
            ApiError::Unauthorized { code, .. } => (
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                None,
                *code,
                no_header,
            ),
            ApiError::NotFound { param, .. } => (
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                param.clone(),
                None,
                no_header,
            ),
            ApiError::UnknownRoute { .. } => (StatusCode::NOT_FOUND, "invalid_request_error", None, None, no_header),
            ApiError::MethodNotAllowed { allow, .. } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                None,
                Some("method_not_allowed"),
                Some((ALLOW, HeaderValue::from_static(allow))),
            ),
            ApiError::Conflict { .. } => (
                StatusCode::CONFLICT,
                "invalid_request_error",
                Some("Idempotency-Key".to_owned()),
                Some("idempotency_key_reused"),
                no_header,
            ),
            ApiError::TooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                None,
                Some("request_too_large"),
                no_header,
            ),
            ApiError::UploadTooLarge { field, .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                Some(field.clone()),
                Some("file_too_large"),
                no_header,
            ),
            ApiError::RequestTimeout { .. } => (
                StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                None,
                Some("request_timeout"),
                no_header,
            ),
            ApiError::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "requests",
                None,
                Some("rate_limit_exceeded"),
                no_header,
            ),
            ApiError::RangeNotSatisfiable { len } => (
                StatusCode::RANGE_NOT_SATISFIABLE,
                "invalid_request_error",
                Some("Range".to_owned()),
                Some("range_not_satisfiable"),
                HeaderValue::from_str(&format!("bytes */{len}"))
                    .ok()
                    .map(|v| (CONTENT_RANGE, v)),
            ),
            ApiError::StorageFull { .. } => (
                StatusCode::INSUFFICIENT_STORAGE,
                "server_error",
                None,
                Some("storage_full"),
                no_header,
            ),
            ApiError::Internal { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "server_error", None, None, no_header),
        };
        let message = match &self {
            ApiError::Internal { kind, detail } => {
                tracing::error!(kind, detail = %detail, "request failed");
                "The server had an error while processing your request. Sorry about that!".to_owned()
            }
            ApiError::StorageFull { detail } => {
                tracing::error!(detail = %detail, "storage is full; request refused with 507");
                if let Some(m) = crate::metrics::get() {
                    m.storage_full.with_label_values(&["create"]).inc();
                }
                self.to_string()
            }
            other => other.to_string(),
        };
        let body = json!({"error": {"message": message, "type": kind, "param": param, "code": code}});
        let mut response = json_response(status, &body);
        let headers = response.headers_mut();
        // The SDKs retry 408/409/429/5xx unless told not to; of our 4xx only a 429 goes away on retry.
        if status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS {
            headers.insert("x-should-retry", HeaderValue::from_static("false"));
        }
        if let ApiError::RateLimited { state, retry_after, .. } = &self {
            if let Some(state) = state {
                rate_headers(headers, state);
            }
            // Whole seconds, at least 1 (the spec's `Retry-After`); the SDKs prefer the exact `retry-after-ms`.
            let secs = retry_after.as_millis().div_ceil(1000).max(1);
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                headers.insert(hyper::header::RETRY_AFTER, v);
            }
            if let Ok(v) = HeaderValue::from_str(&retry_after.as_millis().max(1).to_string()) {
                headers.insert("retry-after-ms", v);
            }
        }
        if let Some((name, value)) = extra {
            headers.insert(name, value);
        }
        response
    }
}

/// `x-ratelimit-{limit,remaining,reset}-requests`, on every answer to a tenant with a request limit.
pub fn rate_headers(headers: &mut hyper::HeaderMap, state: &crate::limits::RateState) {
    for (name, value) in [
        ("x-ratelimit-limit-requests", state.limit.to_string()),
        ("x-ratelimit-remaining-requests", state.remaining.to_string()),
        (
            "x-ratelimit-reset-requests",
            crate::limits::format_duration(state.reset),
        ),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            headers.insert(name, v);
        }
    }
}

impl From<crate::auth::AuthError> for ApiError {
    fn from(e: crate::auth::AuthError) -> Self {
        ApiError::Unauthorized {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

impl From<crate::limits::LimitError> for ApiError {
    fn from(e: crate::limits::LimitError) -> Self {
        ApiError::RateLimited {
            message: e.message,
            state: e.state,
            retry_after: e.retry_after,
        }
    }
}

impl From<crate::admission::AdmitError> for ApiError {
    fn from(e: crate::admission::AdmitError) -> Self {
        use crate::admission::AdmitError;
        match e {
            AdmitError::Invalid { message, param, code } => ApiError::invalid(message, Some(param), Some(code)),
            AdmitError::Unsupported {
                param,
                value,
                supported,
            } => ApiError::invalid_value(param, &value, &supported),
            AdmitError::Conflict(message) => ApiError::Conflict { message },
            e @ AdmitError::NoBackend(_) => ApiError::internal("config", e),
            AdmitError::Limit(e) => e.into(),
            AdmitError::Store(e) => e.into(),
            AdmitError::Assets(e) => e.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Full(_) => ApiError::StorageFull { detail: e.to_string() },
            e => ApiError::internal("store", e),
        }
    }
}

impl From<AssetError> for ApiError {
    fn from(e: AssetError) -> Self {
        if e.is_storage_full() {
            return ApiError::StorageFull { detail: e.to_string() };
        }
        ApiError::internal("assets", e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supported_values_read_like_sora() {
        let e = ApiError::invalid_value("seconds", "15", &["4".into(), "8".into(), "12".into()]);
        assert_eq!(
            e.to_string(),
            "Invalid value: '15'. Supported values are: '4', '8', and '12'."
        );
        let e = ApiError::invalid_value("size", "1x1", &["720x1280".into(), "1280x720".into()]);
        assert_eq!(
            e.to_string(),
            "Invalid value: '1x1'. Supported values are: '720x1280' and '1280x720'."
        );
    }
}
