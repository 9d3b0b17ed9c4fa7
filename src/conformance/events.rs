//! `webhook.signed_event`: the endpoint's `video.completed` webhook for the source video, as the kit's receiver
//! ([`super::webhook`]) got it: signed with the given secret, OpenAI's event envelope, one id across retries.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::checks::{Checked, Stop};
use super::context::Ctx;
use super::webhook::{Delivery, verify};

/// `webhook.signed_event`.
pub async fn signed_event(ctx: &Ctx) -> Checked<String> {
    let (Some(receiver), Some(secret)) = (ctx.webhooks.as_ref(), ctx.opts.webhook_secret.as_deref()) else {
        return Err(Stop::Skip(
            "needs --webhook-listen and --webhook-secret (and the endpoint configured to deliver there)".into(),
        ));
    };
    let (id, _) = ctx.source().await?;
    let wait = ctx.opts.timeout.min(Duration::from_secs(300));
    let deadline = Instant::now() + wait;
    let mine = loop {
        let mine: Vec<Delivery> = receiver
            .deliveries()
            .into_iter()
            .filter(|d| serde_json::from_slice::<Value>(&d.body).is_ok_and(|v| v["data"]["id"] == id))
            .collect();
        if !mine.is_empty() {
            break mine;
        }
        if Instant::now() > deadline {
            return Err(Stop::Fail(format!(
                "no webhook for {id} reached {} within {} s ({} other deliveries)",
                receiver.addr,
                wait.as_secs(),
                receiver.deliveries().len()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let now = crate::video::now_unix();
    for d in &mine {
        verify(d, secret, now).map_err(Stop::Fail)?;
        let content_type = d
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !content_type.starts_with("application/json") {
            return Err(Stop::Fail(format!(
                "content-type {content_type:?}, expected application/json"
            )));
        }
    }
    let event: Value = serde_json::from_slice(&mine[0].body).map_err(|e| Stop::Fail(e.to_string()))?;
    if event["type"] != "video.completed" {
        return Err(Stop::Fail(format!(
            "type {}, expected \"video.completed\"",
            event["type"]
        )));
    }
    if event["object"] != "event" || event["id"].as_str().is_none_or(|s| s.is_empty()) || !event["created_at"].is_i64()
    {
        return Err(Stop::Fail(format!(
            "not OpenAI's event envelope {{id, object: \"event\", created_at, type, data: {{id}}}}: {event}"
        )));
    }
    // Retries (at-least-once) must repeat the same webhook-id and event id, so receivers can deduplicate.
    let ids: std::collections::BTreeSet<_> = mine.iter().filter_map(|d| d.headers.get("webhook-id")).collect();
    let events: std::collections::BTreeSet<String> = mine
        .iter()
        .filter_map(|d| serde_json::from_slice::<Value>(&d.body).ok())
        .map(|v| v["id"].to_string())
        .collect();
    if ids.len() > 1 || events.len() > 1 {
        return Err(Stop::Fail(format!(
            "{} deliveries of one event carried {} webhook-ids and {} event ids",
            mine.len(),
            ids.len(),
            events.len()
        )));
    }
    Ok(format!("{} signed delivery(ies) of {}", mine.len(), event["id"]))
}
