//! Response plumbing: the one body type every handler returns, and JSON responses.

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::StatusCode;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use serde_json::Value;

/// A response body: small JSON in memory, or an asset streamed from storage.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;
pub type Response = hyper::Response<Body>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never| match never {}).boxed_unsync()
}

pub fn empty() -> Body {
    full(Bytes::new())
}

pub fn json_response(status: StatusCode, value: &Value) -> Response {
    let mut response = hyper::Response::new(full(value.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub fn ok_json(value: &Value) -> Response {
    json_response(StatusCode::OK, value)
}

/// 200 with `value` serialised straight to bytes, no `Value` built first: the answer of the read path (a poll,
/// a list page), where the resources borrow from the cached records.
pub fn ok_serialized<T: serde::Serialize + ?Sized>(value: &T) -> Result<Response, serde_json::Error> {
    let mut response = hyper::Response::new(full(serde_json::to_vec(value)?));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}
