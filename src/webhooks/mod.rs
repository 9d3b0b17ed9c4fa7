//! Outbound webhooks, as the Sora API sent them: `video.completed` and `video.failed` events
//! (`{"id": "evt_…", "object": "event", "created_at", "type", "data": {"id": "video_…"}}`), signed the Standard
//! Webhooks way OpenAI uses (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "id.timestamp.body">`, the key being the base64 part of a `whsec_…` secret), so the official SDKs'
//! `client.webhooks.unwrap(...)` verifies them unchanged.
//!
//! This file holds the endpoints (`[webhooks.NAME]`, validated with the config) and the signing; [`dispatcher`]
//! delivers, above the config and the store.

pub mod dispatcher;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use rand::Rng;
use serde::Deserialize;
use serde_json::json;

use crate::http::{HttpClient, Secret};
use crate::store::Event;

pub const EVENT_TYPES: [&str; 2] = ["video.completed", "video.failed"];

/// `[webhooks.NAME]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawEndpoint {
    url: String,
    /// Environment variable holding the signing secret (`whsec_…`, as OpenAI issues them).
    secret_env: String,
    /// Only these tenants' videos (default: every tenant's).
    tenants: Option<Vec<String>>,
    /// Only these event types (default: both).
    events: Option<Vec<String>>,
    timeout_secs: Option<u64>,
    retry_window_hours: Option<u64>,
    retry_base_ms: Option<u64>,
    retry_max_ms: Option<u64>,
    /// PEM file of extra CAs (an endpoint behind a private CA), relative to the config file.
    ca_file: Option<std::path::PathBuf>,
}

pub struct Endpoint {
    pub name: String,
    pub url: String,
    key: Secret,
    tenants: Option<Vec<String>>,
    events: Vec<String>,
    retry_window: Duration,
    retry_base: Duration,
    retry_max: Duration,
    client: HttpClient,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("tenants", &self.tenants)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

/// The HMAC key of a secret: the base64 part of `whsec_…`, or the secret's bytes (as the SDKs read it).
fn signing_key(secret: &str) -> Result<Vec<u8>, String> {
    match secret.strip_prefix("whsec_") {
        Some(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| "a whsec_ secret must be base64 after the prefix".to_owned()),
        None => Ok(secret.as_bytes().to_vec()),
    }
}

/// `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`.
pub fn sign(key: &[u8], webhook_id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(webhook_id.as_bytes());
    ctx.update(b".");
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    let tag = ctx.sign();
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(tag.as_ref()))
}

/// The event body as OpenAI sends it.
pub fn event_body(event: &Event) -> Bytes {
    Bytes::from(
        json!({
            "id": event.id,
            "object": "event",
            "created_at": event.created_at,
            "type": event.kind,
            "data": {"id": event.video_id},
        })
        .to_string(),
    )
}

pub(crate) fn validate(
    raw: BTreeMap<String, RawEndpoint>,
    tenants: &crate::auth::Access,
    base_dir: &Path,
    secrets: crate::http::SecretSource,
    problems: &mut crate::http::Problems,
) -> BTreeMap<String, Arc<Endpoint>> {
    let mut out = BTreeMap::new();
    for (name, e) in raw {
        let at = format!("webhooks.{name}");
        let before = problems.len();
        if let Err(message) = crate::http::check_url(&e.url) {
            problems.add(&format!("{at}.url"), message);
        }
        let key = match secrets.read(&e.secret_env) {
            Ok(Some(v)) => match signing_key(v.trim()) {
                Ok(_) => Some(Secret::new(v.trim().to_owned())),
                Err(msg) => {
                    problems.add(&format!("{at}.secret_env"), format!("{}: {msg}", e.secret_env));
                    None
                }
            },
            Ok(None) => Some(Secret::new(String::new())),
            Err(message) => {
                problems.add(&format!("{at}.secret_env"), message);
                None
            }
        };
        if let Some(list) = &e.tenants {
            for t in list {
                if !tenants.tenants.iter().any(|c| &c.name == t) {
                    problems.add(
                        &format!("{at}.tenants"),
                        format!("no tenant named {t:?} under [tenants]"),
                    );
                }
            }
        }
        let events = e
            .events
            .unwrap_or_else(|| EVENT_TYPES.iter().map(|s| s.to_string()).collect());
        for ev in &events {
            if !EVENT_TYPES.contains(&ev.as_str()) {
                problems.add(
                    &format!("{at}.events"),
                    format!("unknown event {ev:?}; supported: \"video.completed\", \"video.failed\""),
                );
            }
        }
        let client = crate::http::endpoint_client(&at, e.timeout_secs, 10, e.ca_file, base_dir, 64 * 1024, problems);
        let (Some(key), Some(client)) = (key, client) else {
            continue;
        };
        if problems.len() > before {
            continue;
        }
        out.insert(
            name.clone(),
            Arc::new(Endpoint {
                name,
                url: e.url,
                key,
                tenants: e.tenants,
                events,
                retry_window: Duration::from_secs(e.retry_window_hours.filter(|h| *h > 0).unwrap_or(72) * 3600),
                retry_base: Duration::from_millis(e.retry_base_ms.filter(|m| *m > 0).unwrap_or(5000)),
                retry_max: Duration::from_millis(e.retry_max_ms.filter(|m| *m > 0).unwrap_or(3_600_000)),
                client,
            }),
        );
    }
    out
}

impl Endpoint {
    fn wants(&self, event: &Event) -> bool {
        self.events.iter().any(|e| e == &event.kind) && self.tenants.as_ref().is_none_or(|t| t.contains(&event.tenant))
    }

    /// The delay before attempt `attempts + 1`: exponential from `retry_base`, capped, with jitter.
    fn backoff(&self, attempts: u32) -> Duration {
        let base = self.retry_base.as_millis() as u64;
        let cap = self.retry_max.as_millis() as u64;
        let exp = base.saturating_mul(1u64 << attempts.saturating_sub(1).min(30)).min(cap);
        Duration::from_millis(rand::rng().random_range(exp / 2..=exp.max(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The test vector of openai-python's tests/lib/test_webhooks.py (see the reference).
    #[test]
    fn signs_like_the_openai_sdk_verifies() {
        let key = signing_key("whsec_RdvaYFYUXuIFuEbvZHwMfYFhUf7aMYjYcmM24+Aj40c=").unwrap();
        let body = r#"{"id": "evt_685c059ae3a481909bdc86819b066fb6", "object": "event", "created_at": 1750861210, "type": "response.completed", "data": {"id": "resp_123"}}"#;
        assert_eq!(
            sign(&key, "wh_685c059ae39c8190af8c71ed1022a24d", 1750861210, body.as_bytes()),
            "v1,gUAg4R2hWouRZqRQG4uJypNS8YK885G838+EHb4nKBY="
        );
        assert_eq!(signing_key("plain").unwrap(), b"plain");
        assert!(signing_key("whsec_***").is_err());
    }

    #[test]
    fn the_body_is_openais_event_envelope() {
        let e = Event {
            id: "evt_1".into(),
            video_id: "video_1".into(),
            tenant: "t".into(),
            kind: "video.failed".into(),
            created_at: 5,
        };
        let v: serde_json::Value = serde_json::from_slice(&event_body(&e)).unwrap();
        assert_eq!(
            v,
            json!({"id": "evt_1", "object": "event", "created_at": 5, "type": "video.failed", "data": {"id": "video_1"}})
        );
    }
}
