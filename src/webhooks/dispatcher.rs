//! Delivery is at-least-once through the outbox in the store: the event is written in the same transaction that
//! finishes the video, fanned out to every endpoint configured for its tenant, and each delivery is retried with
//! exponential backoff and jitter until a 2xx or the end of the endpoint's retry window (72 hours by default, as
//! OpenAI documents). The `webhook-id` and the event id stay the same on every attempt, so receivers can
//! deduplicate. Each attempt runs in its own task with a timeout and a per-endpoint concurrency limit, so a
//! dead endpoint never slows the others; a restart resumes from the store.

use std::sync::Arc;
use std::time::Duration;

use dashmap::{DashMap, DashSet};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{Endpoint, event_body, sign, signing_key};
use crate::live::LiveHandle;
use crate::store::{Delivery, JobStore};
use crate::video::{new_id, now_unix, now_unix_ms};

/// How often the outbox is read.
const TICK: Duration = Duration::from_millis(250);
/// Attempts in flight toward one endpoint at once.
const PER_ENDPOINT: usize = 4;
/// Deliveries read per tick.
const BATCH: usize = 200;
/// How long a claimed delivery stays with the process that claimed it before any process may send it again:
/// far beyond an attempt's timeout and its wait for a per-endpoint turn.
const CLAIM_HOLD: Duration = Duration::from_secs(120);

/// Reads the outbox and delivers, until shutdown.
pub struct Dispatcher {
    store: Arc<dyn JobStore>,
    live: LiveHandle,
    in_flight: DashSet<String>,
    limits: DashMap<String, Arc<Semaphore>>,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

impl Dispatcher {
    pub fn start(
        store: Arc<dyn JobStore>,
        live: LiveHandle,
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
        // Claimed for CLAIM_HOLD: another replica (or this one, should the attempt be lost with its process)
        // sends a delivery again only after that, with the same webhook-id.
        let now = now_unix_ms();
        let hold_until = now + CLAIM_HOLD.as_millis() as i64;
        for delivery in self.store.claim_due_deliveries(now, hold_until, BATCH).await? {
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
