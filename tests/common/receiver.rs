//! A webhook receiver on loopback (hyper), for the tests of the shim's outbound webhooks: it keeps every
//! request and answers 500 to the first `fail` of them, then 200.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

#[derive(Debug, Clone)]
pub struct Received {
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
    pub answered: u16,
}

/// A webhook receiver that answers 500 to the first `fail` requests, then 200.
pub struct Receiver {
    pub url: String,
    got: Arc<Mutex<Vec<Received>>>,
    pub fail: Arc<AtomicUsize>,
}

impl Receiver {
    pub async fn start(fail: usize) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks", listener.local_addr().unwrap());
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let fail = Arc::new(AtomicUsize::new(fail));
        let (g, f) = (Arc::clone(&got), Arc::clone(&fail));
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let (g, f) = (Arc::clone(&g), Arc::clone(&f));
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let (g, f) = (Arc::clone(&g), Arc::clone(&f));
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.unwrap().to_bytes();
                            let failing = f
                                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                                .is_ok();
                            let answered = if failing { 500 } else { 200 };
                            g.lock().unwrap().push(Received {
                                headers: parts.headers,
                                body,
                                answered,
                            });
                            Ok::<_, std::convert::Infallible>(
                                hyper::Response::builder()
                                    .status(answered)
                                    .body(Full::new(Bytes::new()))
                                    .unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Receiver { url, got, fail }
    }

    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until a request was answered 2xx; returns everything received by then (plus a settling pause).
    pub async fn until_delivered(&self, count: usize, within: Duration) -> Vec<Received> {
        let deadline = Instant::now() + within;
        while self.received().iter().filter(|r| r.answered == 200).count() < count {
            assert!(Instant::now() < deadline, "not delivered; got {:?}", self.received());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
        self.received()
    }
}
