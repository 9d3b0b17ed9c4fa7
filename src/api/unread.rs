//! Request bodies a handler did not read to the end, and what that means for an HTTP/1.1 connection.
//!
//! A connection can carry the next request only once this one's body has been read to its end. Many answers
//! come before the body is read: 401 (no key), 429 (rate), 404 (a remix of a video that is not there), 400s
//! found in the headers. When the handler drops the body, hyper reads what is already buffered; if the rest
//! is still in flight it closes the connection after the response, without a `Connection: close` header. A
//! keep-alive client, or a load balancer's connection pool, then sends its next request into a socket that is
//! closing and sees "server disconnected without a response". So every request body goes through
//! [`RequestBody`], which hands an unread remainder back to [`super::handle`]: a small one is read and dropped
//! (the connection stays usable), anything else gets `Connection: close` so the client knows not to reuse it.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{CONNECTION, CONTENT_LENGTH, EXPECT, HeaderValue};
use hyper::{Request, Version};
use tokio::sync::oneshot;

use super::response::Response;

/// Bodies up to this size that a handler left unread are read and dropped to keep the connection.
const DRAIN_MAX: u64 = 64 * 1024;
/// How long the rest of such a body may take to arrive: it was sent right behind the headers, or not at all.
const DRAIN_WAIT: Duration = Duration::from_millis(250);

/// The request body every handler sees: hyper's, plus the way back for whatever it leaves unread.
pub struct RequestBody {
    inner: Option<Incoming>,
    polled: bool,
    give_back: Option<oneshot::Sender<Unread>>,
}

/// What a handler dropped before its end.
struct Unread {
    body: Incoming,
    /// The handler began reading (and gave up: too large, too slow, malformed), as opposed to answering first.
    polled: bool,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        self.polled = true;
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.as_ref().map(Body::size_hint).unwrap_or_default()
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        if let (Some(body), Some(tx)) = (self.inner.take(), self.give_back.take())
            && !body.is_end_stream()
        {
            // The receiver is gone only when the request outlived its handler; hyper copes with it then.
            let _ = tx.send(Unread {
                body,
                polled: self.polled,
            });
        }
    }
}

/// Watches one request's body from [`super::handle`]: wrap it before the handler, [`Watch::settle`] after.
pub struct Watch {
    back: Option<oneshot::Receiver<Unread>>,
    http1: bool,
    drainable: bool,
}

impl Watch {
    pub fn wrap(req: Request<Incoming>) -> (Request<RequestBody>, Watch) {
        let http1 = req.version() < Version::HTTP_2;
        let declared = req
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        // A client waiting for `100 Continue` has not sent its body: reading it would ask for the upload.
        let expects_continue = req.headers().contains_key(EXPECT);
        let drainable = !expects_continue && declared.is_none_or(|n| n <= DRAIN_MAX);
        let (tx, rx) = if req.body().is_end_stream() {
            // Nothing to read (a GET, an empty POST): nothing can be left over.
            (None, None)
        } else {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        };
        let req = req.map(|inner| RequestBody {
            inner: Some(inner),
            polled: false,
            give_back: tx,
        });
        (
            req,
            Watch {
                back: rx,
                http1,
                drainable,
            },
        )
    }

    /// After the handler: finish reading a small body it did not read, or tell the client the connection ends.
    pub async fn settle(self, response: &mut Response) {
        let Some(unread) = self.back.and_then(|mut rx| rx.try_recv().ok()) else {
            return;
        };
        if !self.http1 {
            // HTTP/2 ends just this stream; the connection carries on.
            return;
        }
        if self.drainable && !unread.polled && drain(unread.body).await {
            return;
        }
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
}

/// Reads and drops up to [`DRAIN_MAX`] bytes within [`DRAIN_WAIT`]; true when the body ended in time.
async fn drain(mut body: Incoming) -> bool {
    let read = async {
        let mut seen: u64 = 0;
        loop {
            match body.frame().await {
                None => return true,
                Some(Ok(frame)) => {
                    seen += frame.data_ref().map_or(0, |d| d.len() as u64);
                    if seen > DRAIN_MAX {
                        return false;
                    }
                }
                Some(Err(_)) => return false,
            }
        }
    };
    tokio::time::timeout(DRAIN_WAIT, read).await.unwrap_or(false)
}
