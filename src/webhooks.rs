//! Outbound webhooks, as the Sora API sent them: `video.completed` and `video.failed` events
//! (`{"id": "evt_…", "object": "event", "created_at", "type", "data": {"id": "video_…"}}`), signed the Standard
//! Webhooks way OpenAI uses (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "id.timestamp.body">`, the key being the base64 part of a `whsec_…` secret), so the official SDKs'
//! `client.webhooks.unwrap(...)` verifies them unchanged.
//!
//! Delivery is at-least-once through the outbox in the store: the event is written in the same transaction that
//! finishes the video, fanned out to every endpoint configured for its tenant, and each delivery is retried with
//! exponential backoff and jitter until a 2xx or the end of the endpoint's retry window (72 hours by default, as
//! OpenAI documents). The `webhook-id` and the event id stay the same on every attempt, so receivers can
//! deduplicate. Each attempt runs in its own task with a timeout and a per-endpoint concurrency limit, so a
//! dead endpoint never slows the others; a restart resumes from the store.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use dashmap::{DashMap, DashSet};
use rand::Rng;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Secret;
use crate::live::LiveConfig;
use crate::mapping::http::HttpClient;
use crate::store::{Delivery, Event, JobStore};
use crate::video::{new_id, now_unix, now_unix_ms};

/// How often the outbox is read.
const TICK: Duration = Duration::from_millis(250);
/// Attempts in flight toward one endpoint at once.
const PER_ENDPOINT: usize = 4;
/// Deliveries read per tick.
const BATCH: usize = 200;

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
    secrets: crate::config::SecretSource,
    problems: &mut Vec<(String, String)>,
) -> BTreeMap<String, Arc<Endpoint>> {
    let mut out = BTreeMap::new();
    for (name, e) in raw {
        let at = format!("webhooks.{name}");
        let before = problems.len();
        if !(e.url.starts_with("https://") || e.url.starts_with("http://")) {
            problems.push((format!("{at}.url"), format!("{:?} is not an http(s) URL", e.url)));
        }
        let key = match secrets.read(&e.secret_env) {
            Ok(Some(v)) => match signing_key(v.trim()) {
                Ok(_) => Some(Secret::new(v.trim().to_owned())),
                Err(msg) => {
                    problems.push((format!("{at}.secret_env"), format!("{}: {msg}", e.secret_env)));
                    None
                }
            },
            Ok(None) => Some(Secret::new(String::new())),
            Err(message) => {
                problems.push((format!("{at}.secret_env"), message));
                None
            }
        };
        if let Some(list) = &e.tenants {
            for t in list {
                if !tenants.tenants.iter().any(|c| &c.name == t) {
                    problems.push((
                        format!("{at}.tenants"),
                        format!("no tenant named {t:?} under [tenants]"),
                    ));
                }
            }
        }
        let events = e
            .events
            .unwrap_or_else(|| EVENT_TYPES.iter().map(|s| s.to_string()).collect());
        for ev in &events {
            if !EVENT_TYPES.contains(&ev.as_str()) {
                problems.push((
                    format!("{at}.events"),
                    format!("unknown event {ev:?}; supported: \"video.completed\", \"video.failed\""),
                ));
            }
        }
        let timeout = Duration::from_secs(e.timeout_secs.filter(|s| *s > 0).unwrap_or(10));
        let ca = e.ca_file.map(|f| if f.is_absolute() { f } else { base_dir.join(f) });
        let client = match HttpClient::with_ca(timeout, 64 * 1024, ca.as_deref()) {
            Ok(c) => Some(c),
            Err(msg) => {
                problems.push((format!("{at}.ca_file"), msg));
                None
            }
        };
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

/// Reads the outbox and delivers, until shutdown.
pub struct Dispatcher {
    store: Arc<dyn JobStore>,
    live: LiveConfig,
    in_flight: DashSet<String>,
    limits: DashMap<String, Arc<Semaphore>>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Dispatcher {
    pub fn start(
        store: Arc<dyn JobStore>,
        live: LiveConfig,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Arc<Dispatcher> {
        let d = Arc::new(Dispatcher {
            store,
            live,
            in_flight: DashSet::new(),
            limits: DashMap::new(),
            tracker: tracker.clone(),
            shutdown,
        });
        let run = Arc::clone(&d);
        tracker.spawn(async move { run.run().await });
        d
    }

    async fn run(self: Arc<Self>) {
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(TICK) => {}
            }
            if let Err(e) = self.fan_out().await {
                tracing::warn!(error = %e, "webhooks: cannot read new events");
            }
            if let Err(e) = self.deliver_due().await {
                tracing::warn!(error = %e, "webhooks: cannot read due deliveries");
            }
        }
    }

    /// One delivery per endpoint that wants the event, recorded with the event marked done.
    async fn fan_out(&self) -> Result<(), crate::store::StoreError> {
        let events = self.store.pending_events(BATCH).await?;
        if events.is_empty() {
            return Ok(());
        }
        let live = self.live.load();
        let now = now_unix_ms();
        for event in events {
            let deliveries: Vec<Delivery> = live
                .webhooks
                .values()
                .filter(|e| e.wants(&event))
                .map(|e| Delivery {
                    id: new_id("wh"),
                    event: event.clone(),
                    endpoint: e.name.clone(),
                    url: e.url.clone(),
                    state: "pending".into(),
                    attempts: 0,
                    next_attempt_at_ms: now,
                    created_at_ms: now,
                    last_status: None,
                    last_error: None,
                    delivered_at_ms: None,
                })
                .collect();
            self.store.fan_out(&event, &deliveries).await?;
        }
        Ok(())
    }

    async fn deliver_due(self: &Arc<Self>) -> Result<(), crate::store::StoreError> {
        for delivery in self.store.due_deliveries(now_unix_ms(), BATCH).await? {
            if !self.in_flight.insert(delivery.id.clone()) {
                continue;
            }
            let endpoint = self.live.load().webhooks.get(&delivery.endpoint).cloned();
            let limit = Arc::clone(
                self.limits
                    .entry(delivery.endpoint.clone())
                    .or_insert_with(|| Arc::new(Semaphore::new(PER_ENDPOINT)))
                    .value(),
            );
            let me = Arc::clone(self);
            self.tracker.spawn(async move {
                let id = delivery.id.clone();
                tokio::select! {
                    _ = me.shutdown.cancelled() => {}
                    _ = async {
                        let Ok(_permit) = limit.acquire_owned().await else { return };
                        me.attempt(delivery, endpoint.as_deref()).await;
                    } => {}
                }
                me.in_flight.remove(&id);
            });
        }
        Ok(())
    }

    async fn attempt(&self, mut d: Delivery, endpoint: Option<&Endpoint>) {
        let Some(endpoint) = endpoint else {
            d.state = "failed".into();
            d.last_error = Some("the endpoint was removed from the config".into());
            self.save(&d, "failed").await;
            return;
        };
        let body = event_body(&d.event);
        let timestamp = now_unix();
        let signature = match signing_key(endpoint.key.expose()) {
            Ok(key) => sign(&key, &d.id, timestamp, &body),
            Err(e) => {
                d.last_error = Some(e);
                d.state = "failed".into();
                self.save(&d, "failed").await;
                return;
            }
        };
        let headers = vec![
            ("webhook-id".to_owned(), d.id.clone()),
            ("webhook-timestamp".to_owned(), timestamp.to_string()),
            ("webhook-signature".to_owned(), signature),
            (
                "user-agent".to_owned(),
                format!("sora-shim/{} (webhooks)", env!("CARGO_PKG_VERSION")),
            ),
        ];
        let result = endpoint
            .client
            .send_bytes(&endpoint.url, &headers, "application/json", body)
            .await;
        d.attempts += 1;
        let (status, error) = match result {
            Ok(reply) if (200..300).contains(&reply.status) => (Some(reply.status), None),
            Ok(reply) => (Some(reply.status), Some(format!("answered HTTP {}", reply.status))),
            Err(e) => (None, Some(e.to_string())),
        };
        d.last_status = status;
        let outcome = match error {
            None => {
                d.state = "delivered".into();
                d.last_error = None;
                d.delivered_at_ms = Some(now_unix_ms());
                tracing::info!(delivery = %d.id, event = %d.event.id, endpoint = %d.endpoint, attempts = d.attempts, "webhook delivered");
                "delivered"
            }
            Some(e) => {
                let next = now_unix_ms() + endpoint.backoff(d.attempts).as_millis() as i64;
                d.last_error = Some(e);
                if next - d.created_at_ms > endpoint.retry_window.as_millis() as i64 {
                    d.state = "failed".into();
                    tracing::warn!(delivery = %d.id, endpoint = %d.endpoint, attempts = d.attempts, error = ?d.last_error, "webhook delivery given up: retry window over");
                    "failed"
                } else {
                    d.next_attempt_at_ms = next;
                    tracing::info!(delivery = %d.id, endpoint = %d.endpoint, attempts = d.attempts, error = ?d.last_error, "webhook delivery failed; will retry");
                    "retry"
                }
            }
        };
        self.save(&d, outcome).await;
    }

    async fn save(&self, d: &Delivery, outcome: &str) {
        if let Some(m) = crate::metrics::get() {
            m.webhooks.with_label_values(&[outcome]).inc();
        }
        if let Err(e) = self.store.update_delivery(d).await {
            // The attempt is lost from the record, not the delivery: it stays pending and is tried again.
            tracing::error!(delivery = %d.id, error = %e, "cannot record a webhook attempt");
        }
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
