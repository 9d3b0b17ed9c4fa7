//! The listener: HTTP/1.1 and h2 on one TCP port, plain or TLS (rustls, ALPN), and the server limits that keep a
//! slow or endless client from holding resources:
//!
//! - at most `max_connections` connections are served at once (more wait in the kernel's backlog);
//! - a TLS handshake and a request's headers must arrive within `header_read_timeout`;
//! - a request head over `max_header_bytes` gets 431 (hyper, both protocols);
//! - a body must arrive within `request_timeout` (408, in the API layer) and within `max_body_bytes` (413);
//! - a connection with no request in flight for `idle_timeout` is closed gracefully (HTTP/1.1 keep-alive and
//!   h2 alike: hyper has no idle timeout for h2, so each connection tracks its own activity).
//!
//! Shutdown is graceful: stop accepting, let in-flight requests finish within the grace period, then stop the
//! worker (whose state is persisted at every step).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api;
use crate::app::App;
use crate::config::ServerConfig;
use crate::tls::{Certificates, TlsError};

/// The first bytes of every h2 connection without TLS (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("cannot load the request schemas: {0}")]
    Schema(&'static crate::api::schema::SchemaError),
}

pub struct Server {
    listener: TcpListener,
    app: Arc<App>,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

/// Which protocol a connection speaks, once known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

impl Server {
    /// Binds the listener; with `tls_cert`/`tls_key` configured, loads the certificate and starts watching it.
    pub async fn bind(app: Arc<App>) -> Result<Server, ServerError> {
        crate::api::schema::loaded().map_err(ServerError::Schema)?;
        let addr = app.config.server.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| ServerError::Bind { addr, source })?;
        let tls = match &app.config.server.tls {
            None => None,
            Some(files) => {
                let certs = Certificates::load(&files.cert, &files.key)?;
                let acceptor = certs.acceptor()?;
                app.tracker.spawn(certs.watch(app.shutdown.clone()));
                Some(acceptor)
            }
        };
        Ok(Server { listener, app, tls })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    /// Serves until `shutdown` resolves, then drains.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let connections = TaskTracker::new();
        let draining = self.app.draining.clone();
        let slots = Arc::new(Semaphore::new(self.app.config.server.max_connections));
        tokio::pin!(shutdown);
        loop {
            // A free connection slot first: at the limit, new connections wait in the backlog, not in memory.
            let slot = tokio::select! {
                slot = Arc::clone(&slots).acquire_owned() => slot,
                _ = &mut shutdown => break,
            };
            let Ok(slot) = slot else { break };
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                _ = &mut shutdown => break,
            };
            let (stream, peer) = match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let app = Arc::clone(&self.app);
            let tls = self.tls.clone();
            let draining = draining.clone();
            connections.spawn(async move {
                if let Err(e) = connection(app, stream, tls, draining).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                drop(slot);
            });
        }
        drop(self.listener);
        tracing::info!("shutting down: draining in-flight requests");
        draining.cancel();
        connections.close();
        let grace = self.app.config.server.shutdown_grace;
        if tokio::time::timeout(grace, connections.wait()).await.is_err() {
            tracing::warn!(?grace, "some connections were still open after the grace period");
        }
        self.app.stop().await;
        tracing::info!("stopped");
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One accepted connection: TLS handshake or protocol sniffing (both within the header timeout), then HTTP.
async fn connection(
    app: Arc<App>,
    stream: TcpStream,
    tls: Option<tokio_rustls::TlsAcceptor>,
    draining: CancellationToken,
) -> Result<(), BoxError> {
    let _ = stream.set_nodelay(true);
    let limit = app.config.server.header_read_timeout;
    match tls {
        Some(acceptor) => {
            let mut first = [0u8; 1];
            let n = tokio::time::timeout(limit, stream.peek(&mut first))
                .await
                .map_err(|_| "no TLS handshake within the header timeout")??;
            // A TLS record starts with 0x16; an HTTP/1 request line with a capital letter (`GET`, `POST`).
            if n == 0 {
                return Ok(());
            }
            if first[0].is_ascii_uppercase() {
                return plain_http_on_tls_port(stream, limit).await;
            }
            let stream = tokio::time::timeout(limit, acceptor.accept(stream))
                .await
                .map_err(|_| "TLS handshake timed out")??;
            let protocol = match stream.get_ref().1.alpn_protocol() {
                Some(b"h2") => Protocol::Http2,
                _ => Protocol::Http1,
            };
            serve(app, stream, protocol, draining).await
        }
        None => {
            let protocol = tokio::time::timeout(limit, sniff(&stream))
                .await
                .map_err(|_| "no request within the header timeout")??;
            match protocol {
                Some(protocol) => serve(app, stream, protocol, draining).await,
                None => Ok(()),
            }
        }
    }
}

/// Plain HTTP sent to the HTTPS listener: a 400 in OpenAI's envelope that says to use https (as nginx answers),
/// instead of a TLS alert the client prints as garbage. The request head is read first, so that closing with
/// unread bytes does not reset the connection before the client reads the answer.
async fn plain_http_on_tls_port(mut stream: TcpStream, limit: Duration) -> Result<(), BoxError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    let read_head = async {
        while head.len() < 64 * 1024 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    tokio::time::timeout(limit, read_head)
        .await
        .map_err(|_| "plain HTTP on the TLS port: no request head within the header timeout")??;
    let body = serde_json::json!({"error": {
        "message": "This port serves HTTPS, and the request was sent as plain HTTP. Use an https:// base URL.",
        "type": "invalid_request_error",
        "param": null,
        "code": "plain_http_to_https_port",
    }})
    .to_string();
    let answer = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(answer.as_bytes()).await?;
    stream.shutdown().await?;
    tracing::info!("plain HTTP request on the TLS listener answered 400");
    Ok(())
}

/// Tells h2 prior knowledge from HTTP/1.1 by the first bytes, without consuming them. `None`: closed.
async fn sniff(stream: &TcpStream) -> std::io::Result<Option<Protocol>> {
    let mut buf = [0u8; 24];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        if buf[..n] != H2_PREFACE[..n] {
            return Ok(Some(Protocol::Http1));
        }
        if n == H2_PREFACE.len() {
            return Ok(Some(Protocol::Http2));
        }
        // Part of the preface so far: `peek` would return at once with the same bytes, so wait a little.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn builder(server: &ServerConfig, protocol: Protocol) -> Builder<TokioExecutor> {
    let mut b = Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        .max_buf_size(server.max_header_bytes as usize);
    b.http2()
        .timer(TokioTimer::new())
        .max_header_list_size(server.max_header_bytes)
        // Dead peers (no TCP reset ever arrives) are found by pings.
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(20));
    match protocol {
        Protocol::Http1 => b.http1_only(),
        Protocol::Http2 => b.http2_only(),
    }
}

async fn serve<I>(app: Arc<App>, io: I, protocol: Protocol, draining: CancellationToken) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let idle_limit = app.config.server.idle_timeout;
    let builder = builder(&app.config.server, protocol);
    let activity = Arc::new(Activity::new());
    let service = {
        let activity = Arc::clone(&activity);
        service_fn(move |req| {
            let app = Arc::clone(&app);
            let busy = activity.begin();
            async move {
                let response = api::handle(&app, req).await;
                drop(busy);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => return result,
            _ = draining.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = activity.idle_for(idle_limit), if !closing => {
                // In-flight responses (a download still streaming) finish; then the connection closes.
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// Requests in flight on one connection, and when the last one ended.
struct Activity {
    in_flight: AtomicUsize,
    last: std::sync::Mutex<Instant>,
}

/// Ends a request's activity when dropped (also when the client goes away mid-request).
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        *self.0.last_lock() = Instant::now();
    }
}

impl Activity {
    fn new() -> Activity {
        Activity {
            in_flight: AtomicUsize::new(0),
            last: std::sync::Mutex::new(Instant::now()),
        }
    }

    fn last_lock(&self) -> std::sync::MutexGuard<'_, Instant> {
        // An Instant cannot be left half-written: use it even if a holder panicked.
        self.last.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn begin(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(Arc::clone(self))
    }

    /// Resolves once no request has been in flight for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let idle = *self.last_lock();
            let wait = if self.in_flight.load(Ordering::Acquire) > 0 {
                limit
            } else {
                match limit.checked_sub(idle.elapsed()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return,
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
