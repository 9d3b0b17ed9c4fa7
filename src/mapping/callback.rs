//! Verifying provider callbacks before they touch a job: the Standard Webhooks scheme (Replicate: HMAC-SHA256
//! of `{webhook-id}.{webhook-timestamp}.{body}` with a `whsec_` key) and fal's (Ed25519 over
//! `{request-id}\n{user-id}\n{timestamp}\n{hex SHA-256 of the body}`, public keys from fal's JWKS). Both refuse a
//! timestamp more than five minutes off, so a captured callback cannot be replayed later.

use std::time::{Duration, Instant};

use base64::Engine;
use hyper::HeaderMap;
use sha2::{Digest, Sha256};

use crate::http::HttpClient;

/// How far a callback's timestamp may be from now.
const TOLERANCE_SECS: i64 = 300;
/// How long fetched public keys are used before they are fetched again.
const JWKS_TTL: Duration = Duration::from_secs(3600);
/// A signature no cached key verifies triggers a refetch, at most this often (key rotation, not abuse).
const JWKS_REFETCH_MIN: Duration = Duration::from_secs(60);

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<&'a str, String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| format!("no {name} header"))
}

fn fresh(timestamp: &str, now: i64) -> Result<(), String> {
    let ts: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| format!("timestamp {timestamp:?} is not a number"))?;
    if (now - ts).abs() > TOLERANCE_SECS {
        return Err(format!("timestamp {ts} is more than {TOLERANCE_SECS} s from now"));
    }
    Ok(())
}

/// Standard Webhooks: any `v1,<base64>` signature in `webhook-signature` that matches.
pub fn verify_standard(headers: &HeaderMap, body: &[u8], secret: &str, now: i64) -> Result<(), String> {
    let id = header(headers, "webhook-id")?;
    let timestamp = header(headers, "webhook-timestamp")?;
    let signatures = header(headers, "webhook-signature")?;
    fresh(timestamp, now)?;
    let key = match secret.strip_prefix("whsec_") {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| "the configured webhook secret is not whsec_<base64>".to_owned())?,
        None => secret.as_bytes().to_vec(),
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let mut signed = format!("{id}.{timestamp}.").into_bytes();
    signed.extend_from_slice(body);
    let ok = signatures.split_whitespace().any(|candidate| {
        candidate
            .strip_prefix("v1,")
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .is_some_and(|sig| ring::hmac::verify(&key, &signed, &sig).is_ok())
    });
    if ok { Ok(()) } else { Err("no signature matches".into()) }
}

/// The message fal signs, and the signature, from a callback.
fn fal_message(headers: &HeaderMap, body: &[u8], now: i64) -> Result<(Vec<u8>, Vec<u8>), String> {
    let request_id = header(headers, "x-fal-webhook-request-id")?;
    let user_id = header(headers, "x-fal-webhook-user-id")?;
    let timestamp = header(headers, "x-fal-webhook-timestamp")?;
    let signature = header(headers, "x-fal-webhook-signature")?;
    fresh(timestamp, now)?;
    let digest = hex::encode(Sha256::digest(body));
    let message = format!("{request_id}\n{user_id}\n{timestamp}\n{digest}").into_bytes();
    let signature = hex::decode(signature.trim()).map_err(|_| "x-fal-webhook-signature is not hex".to_owned())?;
    Ok((message, signature))
}

fn ed25519_verifies(keys: &[Vec<u8>], message: &[u8], signature: &[u8]) -> bool {
    keys.iter().any(|k| {
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, k)
            .verify(message, signature)
            .is_ok()
    })
}

/// Ed25519 public keys (`x`, base64url) of a JWKS document.
fn parse_jwks(doc: &serde_json::Value) -> Vec<Vec<u8>> {
    doc["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|k| k["crv"] == "Ed25519" || k["kty"] == "OKP")
        .filter_map(|k| k["x"].as_str())
        .filter_map(|x| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(x.trim_end_matches('='))
                .ok()
        })
        .collect()
}

/// fal's public keys, fetched on first use and refreshed hourly (or when a signature matches none of them).
#[derive(Default)]
pub struct JwksCache {
    keys: tokio::sync::Mutex<Option<(Instant, Vec<Vec<u8>>)>>,
}

impl JwksCache {
    async fn fetch(http: &HttpClient, url: &str) -> Result<Vec<Vec<u8>>, String> {
        let reply = http
            .send(&hyper::Method::GET, url, &[], None)
            .await
            .map_err(|e| format!("cannot fetch the provider's keys from {url}: {e}"))?;
        if reply.status != 200 {
            return Err(format!("{url} answered HTTP {}", reply.status));
        }
        let doc: serde_json::Value =
            serde_json::from_slice(&reply.body).map_err(|e| format!("{url} is not a JWKS: {e}"))?;
        let keys = parse_jwks(&doc);
        if keys.is_empty() {
            return Err(format!("{url} holds no Ed25519 keys"));
        }
        Ok(keys)
    }

    pub async fn verify_fal(
        &self,
        http: &HttpClient,
        url: &str,
        headers: &HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<(), String> {
        let (message, signature) = fal_message(headers, body, now)?;
        let mut cached = self.keys.lock().await;
        let stale = cached.as_ref().is_none_or(|(at, _)| at.elapsed() > JWKS_TTL);
        if stale {
            *cached = Some((Instant::now(), Self::fetch(http, url).await?));
        }
        if let Some((_, keys)) = cached.as_ref()
            && ed25519_verifies(keys, &message, &signature)
        {
            return Ok(());
        }
        // Perhaps the provider rotated its keys: fetch again, but not on every bad request.
        if cached.as_ref().is_some_and(|(at, _)| at.elapsed() > JWKS_REFETCH_MIN) {
            *cached = Some((Instant::now(), Self::fetch(http, url).await?));
            if let Some((_, keys)) = cached.as_ref()
                && ed25519_verifies(keys, &message, &signature)
            {
                return Ok(());
            }
        }
        Err("no signature matches the provider's keys".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    /// openai-python's Standard Webhooks test vector (see the reference).
    #[test]
    fn standard_webhooks_vector_and_refusals() {
        let body = br#"{"id": "evt_685c059ae3a481909bdc86819b066fb6", "object": "event", "created_at": 1750861210, "type": "response.completed", "data": {"id": "resp_123"}}"#;
        let secret = "whsec_RdvaYFYUXuIFuEbvZHwMfYFhUf7aMYjYcmM24+Aj40c=";
        let good = headers(&[
            ("webhook-id", "wh_685c059ae39c8190af8c71ed1022a24d"),
            ("webhook-timestamp", "1750861210"),
            (
                "webhook-signature",
                "v1,bad v1,gUAg4R2hWouRZqRQG4uJypNS8YK885G838+EHb4nKBY=",
            ),
        ]);
        assert_eq!(verify_standard(&good, body, secret, 1750861210), Ok(()));
        assert!(verify_standard(&good, b"{}", secret, 1750861210).is_err());
        assert!(
            verify_standard(&good, body, secret, 1750861210 + 600)
                .unwrap_err()
                .contains("300 s")
        );
        assert!(
            verify_standard(&HeaderMap::new(), body, secret, 0)
                .unwrap_err()
                .contains("webhook-id")
        );
    }

    #[test]
    fn fal_signatures_verify_with_a_key_from_the_jwks() {
        use ring::signature::KeyPair;
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap();
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        let keys = parse_jwks(&serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x}]}));
        let body = br#"{"request_id":"r1","status":"OK"}"#;
        let message = format!("r1\nu1\n1000\n{}", hex::encode(Sha256::digest(body)));
        let sig = hex::encode(pair.sign(message.as_bytes()).as_ref());
        let h = headers(&[
            ("x-fal-webhook-request-id", "r1"),
            ("x-fal-webhook-user-id", "u1"),
            ("x-fal-webhook-timestamp", "1000"),
            ("x-fal-webhook-signature", &sig),
        ]);
        let (m, s) = fal_message(&h, body, 1000).unwrap();
        assert!(ed25519_verifies(&keys, &m, &s));
        let (m, s) = fal_message(&h, b"{}", 1000).unwrap();
        assert!(!ed25519_verifies(&keys, &m, &s));
        assert!(fal_message(&h, body, 5000).is_err());
    }
}
