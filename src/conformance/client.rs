//! The suite's HTTP client: hyper with rustls, built the way [`crate::http::HttpClient`] builds its
//! client, but able to send any body (raw bytes, malformed JSON, `multipart/form-data`) and to read large
//! downloads. Every answer passes through the [`Recorder`] (schemas, `x-request-id`, 429s, generations).

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue};
use hyper::{Method, Request, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::http::source_chain;
use serde_json::Value;

pub use super::reply::Reply;
use super::schema::Recorder;

/// Longest wait for one request, body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(180);
/// Largest answer read (a 20 s 1080p MP4 is far smaller).
const MAX_ANSWER_BYTES: usize = 1024 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{0} {1}: invalid request: {2}")]
    Invalid(Method, String, String),
    #[error("{0} {1}: no answer within {2:?}")]
    Timeout(Method, String, Duration),
    #[error("{0} {1}: {2}")]
    Transport(Method, String, String),
}

/// A request body, in the encodings the SDKs use.
pub enum Body {
    Empty,
    Json(Value),
    Raw { content_type: String, bytes: Bytes },
    Form(Form),
}

impl Body {
    /// A text field of the body (`seconds` of an extension, for the cost count).
    pub fn field(&self, name: &str) -> Option<String> {
        match self {
            Body::Json(v) => v.get(name).and_then(Value::as_str).map(str::to_owned),
            Body::Form(f) => f.field(name).map(str::to_owned),
            Body::Empty | Body::Raw { .. } => None,
        }
    }
}

/// `multipart/form-data` as the official SDKs send it: text parts without a filename, file parts with one.
#[derive(Default)]
pub struct Form {
    parts: Vec<Part>,
}

struct Part {
    name: String,
    /// Filename and content type of a file part.
    file: Option<(String, String)>,
    data: Bytes,
}

impl Form {
    pub fn new() -> Form {
        Form::default()
    }

    pub fn text(mut self, name: &str, value: &str) -> Form {
        self.parts.push(Part {
            name: name.to_owned(),
            file: None,
            data: Bytes::copy_from_slice(value.as_bytes()),
        });
        self
    }

    pub fn file(mut self, name: &str, filename: &str, content_type: &str, data: Bytes) -> Form {
        let file = Some((filename.to_owned(), content_type.to_owned()));
        self.parts.push(Part {
            name: name.to_owned(),
            file,
            data,
        });
        self
    }

    pub fn field(&self, name: &str) -> Option<&str> {
        self.parts
            .iter()
            .find(|p| p.name == name && p.file.is_none())
            .and_then(|p| std::str::from_utf8(&p.data).ok())
    }

    /// The content type (with a fresh random boundary, as the SDKs make) and the encoded body.
    pub fn encode(&self) -> (String, Bytes) {
        let boundary = format!("{:032x}", rand::random::<u128>());
        let mut out = Vec::new();
        for Part { name, file, data } in &self.parts {
            out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            let disposition = match file {
                Some((filename, content_type)) => format!(
                    "Content-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n\
                     Content-Type: {content_type}\r\n\r\n"
                ),
                None => format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n"),
            };
            out.extend_from_slice(disposition.as_bytes());
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        (format!("multipart/form-data; boundary={boundary}"), Bytes::from(out))
    }
}

pub struct Api {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    base: String,
    recorder: Mutex<Recorder>,
}

impl Api {
    /// A client for `base_url` (`http(s)://host[:port][/prefix]`, e.g. `http://127.0.0.1:8080/v1`).
    /// HTTPS trusts the platform's roots (`SSL_CERT_FILE`/`SSL_CERT_DIR` honoured) and the CAs in `ca_file`.
    pub fn new(base_url: &str, ca_file: Option<&std::path::Path>) -> Result<Api, String> {
        let base = base_url.trim_end_matches('/').to_owned();
        let uri: Uri = base.parse().map_err(|e| format!("not a URL: {e}"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
            return Err("expected http://HOST[:PORT][/PATH] or https://…".into());
        }
        let tls = crate::tls::client_config(ca_file).map_err(|e| format!("--ca-file: {e}"))?;
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        Ok(Api {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(https),
            base,
            recorder: Mutex::new(Recorder::new()),
        })
    }

    /// Whether the endpoint answers at all (any status): `Err` carries the transport failure. Not recorded.
    pub async fn reachable(&self) -> Result<(), String> {
        let request = Request::builder()
            .method(Method::GET)
            .uri(format!("{}/videos?limit=1", self.base))
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(Duration::from_secs(30), self.client.request(request)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(source_chain(&e)),
            Err(_) => Err("no answer within 30 s".into()),
        }
    }

    pub fn recorder(&self) -> MutexGuard<'_, Recorder> {
        self.recorder.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends one request to `base + path`; `key` becomes `Authorization: Bearer …`.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        headers: &[(&str, &str)],
        body: Body,
    ) -> Result<Reply, CallError> {
        let invalid = |m: &Method, e: String| CallError::Invalid(m.clone(), path.to_owned(), e);
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.base))
            .header(
                "user-agent",
                concat!("sora-shim-conformance/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(key) = key {
            // Never put the key in an error message.
            let value = HeaderValue::from_str(&format!("Bearer {key}"))
                .map_err(|_| invalid(&method, "the API key is not a valid header value".into()))?;
            builder = builder.header("authorization", value);
        }
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| invalid(&method, e.to_string()))?;
            builder = builder.header(name, *value);
        }
        let bytes = match &body {
            Body::Empty => Bytes::new(),
            Body::Json(v) => {
                builder = builder.header("content-type", "application/json");
                Bytes::from(v.to_string())
            }
            Body::Raw { content_type, bytes } => {
                builder = builder.header("content-type", content_type.as_str());
                bytes.clone()
            }
            Body::Form(form) => {
                let (content_type, bytes) = form.encode();
                builder = builder.header("content-type", content_type);
                bytes
            }
        };
        let req = builder
            .body(Full::new(bytes))
            .map_err(|e| invalid(&method, e.to_string()))?;
        let exchange = async {
            let resp = self.client.request(req).await.map_err(|e| source_chain(&e))?;
            let (parts, body) = resp.into_parts();
            let collected = Limited::new(body, MAX_ANSWER_BYTES)
                .collect()
                .await
                .map_err(|e| format!("reading the answer: {e}"))?;
            Ok::<_, String>((parts, collected.to_bytes()))
        };
        let (parts, bytes) = match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Err(_) => return Err(CallError::Timeout(method, path.to_owned(), REQUEST_TIMEOUT)),
            Ok(Err(e)) => return Err(CallError::Transport(method, path.to_owned(), e)),
            Ok(Ok(done)) => done,
        };
        let reply = Reply {
            method,
            path: path.to_owned(),
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: bytes,
        };
        self.recorder().record(&reply, body.field("seconds").as_deref());
        Ok(reply)
    }

    pub async fn get(&self, path: &str, key: Option<&str>) -> Result<Reply, CallError> {
        self.call(Method::GET, path, key, &[], Body::Empty).await
    }

    pub async fn post_json(&self, path: &str, key: Option<&str>, body: &Value) -> Result<Reply, CallError> {
        self.call(Method::POST, path, key, &[], Body::Json(body.clone())).await
    }

    pub async fn post_form(&self, path: &str, key: Option<&str>, form: Form) -> Result<Reply, CallError> {
        self.call(Method::POST, path, key, &[], Body::Form(form)).await
    }

    pub async fn delete(&self, path: &str, key: Option<&str>) -> Result<Reply, CallError> {
        self.call(Method::DELETE, path, key, &[], Body::Empty).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_encodes_like_the_sdks() {
        let form = Form::new().text("prompt", "a fox").text("video[id]", "video_1").file(
            "video",
            "clip.mp4",
            "video/mp4",
            Bytes::from_static(b"\x00\x01"),
        );
        assert_eq!(form.field("video[id]"), Some("video_1"));
        assert_eq!(form.field("video"), None);
        let (content_type, body) = form.encode();
        let boundary = content_type.strip_prefix("multipart/form-data; boundary=").unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(text.starts_with(&format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"prompt\"\r\n\r\na fox\r\n"
        )));
        assert!(text.contains("name=\"video\"; filename=\"clip.mp4\"\r\nContent-Type: video/mp4\r\n\r\n"));
        assert!(text.ends_with(&format!("--{boundary}--\r\n")));
    }

    #[test]
    fn base_urls() {
        assert!(Api::new("http://127.0.0.1:8080/v1/", None).is_ok());
        assert!(Api::new("ftp://example.com", None).is_err());
        assert!(Api::new("not a url", None).is_err());
    }
}
