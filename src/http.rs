//! The outbound HTTP client (providers, moderation endpoints, webhook receivers): hyper with rustls, pooled
//! connections, a timeout on every request and on every chunk of a download, and errors that say whether
//! anything may have reached the other side (which decides whether a create may be retried). Also the
//! [`Secret`] credentials those calls carry, and where validation reads them ([`SecretSource`]).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderMap, HeaderName, HeaderValue, LOCATION};
use hyper::{Method, Request, Uri};
use std::path::{Path, PathBuf};

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Largest JSON answer we read from a provider.
const MAX_REDIRECTS: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The connection could not be made: nothing was sent.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// Sent, but no (complete) answer in time: the provider may have acted on it.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// Sent, then the connection failed: the provider may have acted on it.
    #[error("connection failed: {0}")]
    Io(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The answer is larger than the backend's `max_response_mib`: asking again gives the same answer.
    #[error("the answer is larger than {} MiB (max_response_mib)", .0 / (1024 * 1024))]
    TooLarge(usize),
}

impl SendError {
    /// True when the request cannot have reached the provider.
    pub fn nothing_sent(&self) -> bool {
        matches!(self, SendError::Connect(_) | SendError::Invalid(_))
    }
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
    /// The largest answer read into memory (a poll with the video inline, as Vertex sends without a bucket).
    max_answer_bytes: usize,
}

impl HttpClient {
    /// A client trusting the platform's roots and the CAs in `extra_ca` (a PEM file), if given.
    pub fn with_ca(timeout: Duration, max_answer_bytes: usize, extra_ca: Option<&Path>) -> Result<HttpClient, String> {
        let tls = crate::tls::client_config(extra_ca).map_err(|e| e.to_string())?;
        Ok(Self::from_tls(tls, timeout, max_answer_bytes))
    }

    /// A backend's client: its timeout, answer cap and extra CAs. The CA file was checked when the config was
    /// validated; should it have become unreadable since, the backend runs on the platform's roots (and a
    /// self-hosted provider's handshake fails visibly) rather than not at all.
    pub fn for_backend(timeout: Duration, max_answer_bytes: usize, extra_ca: Option<&Path>) -> HttpClient {
        let tls = crate::tls::client_config(extra_ca).or_else(|e| {
            tracing::error!(error = %e, "extra CA bundle no longer loads; using the platform's roots only");
            crate::tls::client_config(None)
        });
        match tls {
            Ok(tls) => Self::from_tls(tls, timeout, max_answer_bytes),
            // Only a provider that offers no safe protocol versions gets here, which ring's never is.
            Err(e) => {
                tracing::error!(error = %e, "cannot set up TLS; using webpki roots");
                Self::webpki(timeout, max_answer_bytes)
            }
        }
    }

    fn webpki(timeout: Duration, max_answer_bytes: usize) -> HttpClient {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        Self::from_connector(https, timeout, max_answer_bytes)
    }

    fn from_tls(tls: rustls::ClientConfig, timeout: Duration, max_answer_bytes: usize) -> HttpClient {
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .build();
        Self::from_connector(https, timeout, max_answer_bytes)
    }

    fn from_connector(https: HttpsConnector<HttpConnector>, timeout: Duration, max_answer_bytes: usize) -> HttpClient {
        HttpClient {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .build(https),
            timeout,
            max_answer_bytes,
        }
    }

    fn request(
        method: &Method,
        uri: &Uri,
        headers: &[(String, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<Request<Full<Bytes>>, SendError> {
        let mut builder = Request::builder().method(method.clone()).uri(uri.clone());
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| SendError::Invalid(e.to_string()))?;
            // Never echo a header's value in an error: it may be a secret.
            let value = HeaderValue::from_str(value)
                .map_err(|_| SendError::Invalid(format!("header {name} has an invalid value")))?;
            builder = builder.header(name, value);
        }
        let bytes = match body {
            Some(v) => {
                builder = builder.header("content-type", "application/json");
                Bytes::from(v.to_string())
            }
            None => Bytes::new(),
        };
        builder
            .body(Full::new(bytes))
            .map_err(|e| SendError::Invalid(e.to_string()))
    }

    async fn send_once(&self, req: Request<Full<Bytes>>) -> Result<hyper::Response<hyper::body::Incoming>, SendError> {
        match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Err(_) => Err(SendError::Timeout(self.timeout)),
            Ok(Err(e)) if e.is_connect() => Err(SendError::Connect(source_chain(&e))),
            Ok(Err(e)) => Err(SendError::Io(source_chain(&e))),
            Ok(Ok(resp)) => Ok(resp),
        }
    }

    /// Sends a request and reads a (JSON-sized) answer.
    pub async fn send(
        &self,
        method: &Method,
        url: &str,
        headers: &[(String, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<Reply, SendError> {
        let uri: Uri = url.parse().map_err(|_| SendError::Invalid("not a URL".into()))?;
        let resp = self.send_once(Self::request(method, &uri, headers, body)?).await?;
        self.read_reply(resp).await
    }

    async fn read_reply(&self, resp: hyper::Response<hyper::body::Incoming>) -> Result<Reply, SendError> {
        let (parts, body) = resp.into_parts();
        let limited = http_body_util::Limited::new(body, self.max_answer_bytes);
        let bytes = match tokio::time::timeout(self.timeout, limited.collect()).await {
            Err(_) => return Err(SendError::Timeout(self.timeout)),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(SendError::TooLarge(self.max_answer_bytes));
            }
            Ok(Err(e)) => return Err(SendError::Io(e.to_string())),
            Ok(Ok(c)) => c.to_bytes(),
        };
        Ok(Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: bytes,
        })
    }

    /// Sends a `multipart/form-data` body (a provider's upload step) and reads a (JSON-sized) answer.
    pub async fn send_multipart(
        &self,
        method: &Method,
        url: &str,
        headers: &[(String, String)],
        form: Multipart,
    ) -> Result<Reply, SendError> {
        let uri: Uri = url.parse().map_err(|_| SendError::Invalid("not a URL".into()))?;
        let (content_type, body) = form.finish();
        let mut req = Self::request(method, &uri, headers, None)?;
        let value = HeaderValue::from_str(&content_type).map_err(|e| SendError::Invalid(e.to_string()))?;
        req.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
        *req.body_mut() = Full::new(body);
        let resp = self.send_once(req).await?;
        self.read_reply(resp).await
    }

    /// Posts `body` exactly as given (a signed webhook: the signature covers these bytes).
    pub async fn send_bytes(
        &self,
        url: &str,
        headers: &[(String, String)],
        content_type: &str,
        body: Bytes,
    ) -> Result<Reply, SendError> {
        let uri: Uri = url.parse().map_err(|_| SendError::Invalid("not a URL".into()))?;
        let mut req = Self::request(&Method::POST, &uri, headers, None)?;
        let value = HeaderValue::from_str(content_type).map_err(|e| SendError::Invalid(e.to_string()))?;
        req.headers_mut().insert(hyper::header::CONTENT_TYPE, value);
        *req.body_mut() = Full::new(body);
        let resp = self.send_once(req).await?;
        self.read_reply(resp).await
    }

    /// Posts an `application/x-www-form-urlencoded` body (an OAuth2 token exchange).
    pub async fn send_form(&self, url: &str, form: &str) -> Result<Reply, SendError> {
        let uri: Uri = url.parse().map_err(|_| SendError::Invalid("not a URL".into()))?;
        let req = Request::builder()
            .method(Method::POST)
            .uri(uri)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Full::new(Bytes::from(form.to_owned())))
            .map_err(|e| SendError::Invalid(e.to_string()))?;
        let resp = self.send_once(req).await?;
        self.read_reply(resp).await
    }

    /// Starts a download, following redirects. `auth` headers go only to `trusted_hosts` (the provider's own),
    /// never to the host a redirect points at (a signed storage URL needs none).
    pub async fn download(
        &self,
        url: &str,
        auth: &[(String, String)],
        trusted_hosts: &[String],
    ) -> Result<hyper::Response<hyper::body::Incoming>, SendError> {
        let mut uri: Uri = url.parse().map_err(|_| SendError::Invalid("not a URL".into()))?;
        for _ in 0..=MAX_REDIRECTS {
            let trusted = uri.host().is_some_and(|h| trusted_hosts.iter().any(|t| t == h));
            let headers: &[(String, String)] = if trusted { auth } else { &[] };
            let resp = self
                .send_once(Self::request(&Method::GET, &uri, headers, None)?)
                .await?;
            if !resp.status().is_redirection() {
                return Ok(resp);
            }
            let next = resp
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| SendError::Io("redirect without a Location".into()))?;
            uri = resolve(&uri, next)?;
        }
        Err(SendError::Io(format!("more than {MAX_REDIRECTS} redirects")))
    }

    /// The timeout for one chunk of a download.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// A `Location` may be relative to the URL that answered.
fn resolve(base: &Uri, location: &str) -> Result<Uri, SendError> {
    if location.contains("://") {
        return location
            .parse()
            .map_err(|_| SendError::Io("bad redirect Location".into()));
    }
    let scheme = base.scheme_str().unwrap_or("https");
    let authority = base.authority().map(|a| a.as_str()).unwrap_or("");
    format!("{scheme}://{authority}{location}")
        .parse()
        .map_err(|_| SendError::Io("bad redirect Location".into()))
}

/// An error and all its sources, `a: b: c`, for messages that must say what really failed.
pub(crate) fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// A `multipart/form-data` body. Written here because hyper has no form encoder and the crates that have one
/// (reqwest's `multipart`) come with a second HTTP client; the format (RFC 7578) is a few lines.
pub struct Multipart {
    boundary: String,
    body: Vec<u8>,
}

impl Multipart {
    pub fn new() -> Multipart {
        Multipart {
            boundary: crate::video::new_id("sora-shim-boundary"),
            body: Vec::new(),
        }
    }

    fn part_header(&mut self, name: &str, filename: Option<&str>, content_type: Option<&str>) {
        // Quotes and line breaks cannot appear in a quoted header parameter: percent-encode them (as browsers do).
        let quote = |s: &str| s.replace('"', "%22").replace('\r', "%0D").replace('\n', "%0A");
        let mut head = format!(
            "--{}\r\nContent-Disposition: form-data; name=\"{}\"",
            self.boundary,
            quote(name)
        );
        if let Some(f) = filename {
            head.push_str(&format!("; filename=\"{}\"", quote(f)));
        }
        head.push_str("\r\n");
        if let Some(t) = content_type {
            head.push_str(&format!("Content-Type: {}\r\n", quote(t)));
        }
        head.push_str("\r\n");
        self.body.extend_from_slice(head.as_bytes());
    }

    pub fn text(mut self, name: &str, value: &str) -> Multipart {
        self.part_header(name, None, None);
        self.body.extend_from_slice(value.as_bytes());
        self.body.extend_from_slice(b"\r\n");
        self
    }

    pub fn file(mut self, name: &str, filename: &str, content_type: &str, bytes: &[u8]) -> Multipart {
        self.part_header(name, Some(filename), Some(content_type));
        self.body.extend_from_slice(bytes);
        self.body.extend_from_slice(b"\r\n");
        self
    }

    /// The Content-Type header (with the boundary) and the body.
    fn finish(mut self) -> (String, Bytes) {
        self.body
            .extend_from_slice(format!("--{}--\r\n", self.boundary).as_bytes());
        (
            format!("multipart/form-data; boundary={}", self.boundary),
            Bytes::from(self.body),
        )
    }
}

impl Default for Multipart {
    fn default() -> Multipart {
        Multipart::new()
    }
}

/// An outbound endpoint's URL, as every part of the config checks it (a mapped backend's `base_url`, a
/// moderation endpoint, a webhook receiver): http or https.
pub fn check_url(url: &str) -> Result<(), String> {
    if url.starts_with("https://") || url.starts_with("http://") {
        Ok(())
    } else {
        Err(format!("{url:?} is not an http(s) URL"))
    }
}

/// An outbound call's `timeout_secs`, as every part of the config reads it: absent is `default_secs`, 0 is
/// refused (it would fail every call).
pub fn timeout(secs: Option<u64>, default_secs: u64) -> Result<Duration, String> {
    match secs {
        Some(0) => Err("must be greater than 0".into()),
        Some(s) => Ok(Duration::from_secs(s)),
        None => Ok(Duration::from_secs(default_secs)),
    }
}

/// An outbound endpoint's client, as the config builds it for moderation endpoints and webhook receivers: the
/// timeout (see [`timeout`], `default_secs` when absent) and extra CA certificates (`ca_file`, relative to the
/// config file's directory). `None` when either is wrong; each problem is pushed as (key under `at`, message).
pub fn endpoint_client(
    at: &str,
    timeout_secs: Option<u64>,
    default_secs: u64,
    ca_file: Option<PathBuf>,
    base_dir: &Path,
    max_answer_bytes: usize,
    problems: &mut crate::http::Problems,
) -> Option<HttpClient> {
    let timeout = match timeout(timeout_secs, default_secs) {
        Ok(t) => t,
        Err(message) => {
            problems.add(&format!("{at}.timeout_secs"), message);
            return None;
        }
    };
    let ca = ca_file.map(|f| if f.is_absolute() { f } else { base_dir.join(f) });
    match HttpClient::with_ca(timeout, max_answer_bytes, ca.as_deref()) {
        Ok(client) => Some(client),
        Err(message) => {
            problems.add(&format!("{at}.ca_file"), message);
            None
        }
    }
}

/// What validating a config finds: every problem is collected (as `file: key.path: message`) before any is
/// reported, and warnings for what is valid but probably not meant. One collector for stage 2 of the config and
/// for the parts that validate their own sections (tenants, moderation policies, webhook and other endpoints).
#[derive(Debug, Default)]
pub struct Problems {
    file: String,
    pub lines: Vec<String>,
    /// `check` prints these and the server logs them at start.
    pub warnings: Vec<String>,
}

impl Problems {
    /// Problems of the config read from `file` (its name prefixes every line).
    pub fn new(file: impl Into<String>) -> Problems {
        Problems {
            file: file.into(),
            ..Problems::default()
        }
    }

    pub fn add(&mut self, key: &str, message: impl std::fmt::Display) {
        self.lines.push(format!("{}: {key}: {message}", self.file));
    }

    pub fn warn(&mut self, key: &str, message: impl std::fmt::Display) {
        self.warnings.push(format!("{}: {key}: {message}", self.file));
    }

    /// Problems found so far (not warnings).
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }
}

/// A credential read from the environment at start-up. Prints as `*****`.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// For settings compared on reload (is this the same database URL?). API keys are never compared this way:
/// they are hashed and their digests looked up (`auth`).
impl PartialEq for Secret {
    fn eq(&self, other: &Secret) -> bool {
        self.0 == other.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("*****")
    }
}

/// Where validation reads secret values: the environment (every command), or nowhere (`check
/// --without-secrets`, for CI that validates a config without holding production secrets: each secret's
/// variable must still be named, its value is not read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SecretSource {
    #[default]
    Environment,
    Unread,
}

impl SecretSource {
    /// `Ok(Some(value))` when set, `Ok(None)` when values are not read, `Err(message)` when unset or blank.
    pub fn read(self, var: &str) -> Result<Option<String>, String> {
        match self {
            SecretSource::Unread => Ok(None),
            SecretSource::Environment => match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Ok(Some(v)),
                _ => Err(format!("environment variable {var} is not set")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_has_parts_in_order_and_a_closing_boundary() {
        let (content_type, body) = Multipart::new()
            .text("type", "input")
            .file("image", "ref \"1\".png", "image/png", b"\x89PNG")
            .finish();
        let boundary = content_type.strip_prefix("multipart/form-data; boundary=").unwrap();
        let text = String::from_utf8_lossy(&body);
        let expected = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"type\"\r\n\r\ninput\r\n\
             --{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"ref %221%22.png\"\r\n\
             Content-Type: image/png\r\n\r\n\u{FFFD}PNG\r\n--{boundary}--\r\n"
        );
        assert_eq!(text, expected);
    }
}
