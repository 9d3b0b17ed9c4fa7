//! The webhook scenario: with `--webhook-listen ADDR --webhook-secret whsec_…` the kit listens on ADDR and the
//! endpoint (configured to deliver there) must POST a `video.completed` event for the source video, signed the
//! Standard Webhooks way the OpenAI SDKs verify (`client.webhooks.unwrap`). The verification here follows the
//! SDK's algorithm step by step and is written independently of the shim's signer.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

/// Seconds a signature's timestamp may be off, as the SDKs allow.
const TOLERANCE_SECS: i64 = 300;

#[derive(Debug, Clone)]
pub struct Delivery {
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

/// A receiver on loopback (or wherever `--webhook-listen` says) that records every POST and answers 200.
pub struct Receiver {
    pub addr: SocketAddr,
    got: Arc<Mutex<Vec<Delivery>>>,
}

impl Receiver {
    pub async fn start(addr: SocketAddr) -> std::io::Result<Receiver> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let got: Arc<Mutex<Vec<Delivery>>> = Arc::default();
        let sink = Arc::clone(&got);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let sink = Arc::clone(&sink);
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                        let sink = Arc::clone(&sink);
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                            if let Ok(mut list) = sink.lock() {
                                list.push(Delivery {
                                    headers: parts.headers,
                                    body,
                                });
                            }
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Receiver { addr, got })
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

/// The SDK's check: headers present, timestamp within tolerance, one `v1,` signature matching
/// base64(HMAC-SHA256(key, "{webhook-id}.{timestamp}.{body}")) with the key from `whsec_<base64>`.
pub fn verify(delivery: &Delivery, secret: &str, now: i64) -> Result<(), String> {
    let header = |name: &str| {
        delivery
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| format!("no {name} header"))
    };
    let (id, timestamp, signatures) = (
        header("webhook-id")?,
        header("webhook-timestamp")?,
        header("webhook-signature")?,
    );
    let ts: i64 = timestamp
        .parse()
        .map_err(|_| format!("webhook-timestamp {timestamp:?} is not a number"))?;
    if (now - ts).abs() > TOLERANCE_SECS {
        return Err(format!(
            "webhook-timestamp {ts} is more than {TOLERANCE_SECS} s from now ({now})"
        ));
    }
    let key = match secret.strip_prefix("whsec_") {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| "--webhook-secret is not whsec_<base64>".to_owned())?,
        None => secret.as_bytes().to_vec(),
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(&delivery.body);
    let matches = signatures.split_whitespace().any(|candidate| {
        let b64 = candidate.strip_prefix("v1,").unwrap_or(candidate);
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .is_ok_and(|sig| ring::hmac::verify(&key, &signed, &sig).is_ok())
    });
    if matches {
        Ok(())
    } else {
        Err(format!(
            "webhook-signature {signatures:?} does not verify with the given secret"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The openai-python test vector (see the reference).
    #[test]
    fn verifies_the_sdk_test_vector() {
        let mut headers = hyper::HeaderMap::new();
        headers.insert("webhook-id", "wh_685c059ae39c8190af8c71ed1022a24d".parse().unwrap());
        headers.insert("webhook-timestamp", "1750861210".parse().unwrap());
        headers.insert(
            "webhook-signature",
            "v1,gUAg4R2hWouRZqRQG4uJypNS8YK885G838+EHb4nKBY=".parse().unwrap(),
        );
        let d = Delivery {
            headers,
            body: Bytes::from_static(br#"{"id": "evt_685c059ae3a481909bdc86819b066fb6", "object": "event", "created_at": 1750861210, "type": "response.completed", "data": {"id": "resp_123"}}"#),
        };
        let secret = "whsec_RdvaYFYUXuIFuEbvZHwMfYFhUf7aMYjYcmM24+Aj40c=";
        assert_eq!(verify(&d, secret, 1750861210), Ok(()));
        assert!(verify(&d, secret, 1750861210 + 301).unwrap_err().contains("300 s"));
        assert!(
            verify(&d, "whsec_b3RoZXI=", 1750861210)
                .unwrap_err()
                .contains("does not verify")
        );
    }
}
