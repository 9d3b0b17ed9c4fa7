//! The webhook outbox in PostgreSQL (the same tables and rules as [`crate::store::outbox`] for SQLite):
//! events written in the transaction that finishes a video, deliveries fanned out from them, and attempts
//! claimed with `FOR UPDATE SKIP LOCKED` so that no two replicas send one delivery at once.

use deadpool_postgres::{GenericClient, Object};
use tokio_postgres::Row;

use crate::store::{Delivery, Event, StoreError};
use crate::video::{Job, new_id};

/// Records the webhook event of a video that has just become completed or failed (once per video).
pub(super) async fn record_event(tx: &impl GenericClient, job: &Job) -> Result<(), StoreError> {
    let Some(kind) = crate::store::outbox::event_kind(job) else {
        return Ok(());
    };
    tx.execute(
        "INSERT INTO events (id, video_id, tenant, type, created_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT DO NOTHING",
        &[&new_id("evt"), &job.id, &job.tenant, &kind, &crate::video::now_unix()],
    )
    .await?;
    Ok(())
}

fn row_to_event(row: &Row, at: usize) -> Result<Event, StoreError> {
    Ok(Event {
        id: row.try_get(at)?,
        video_id: row.try_get(at + 1)?,
        tenant: row.try_get(at + 2)?,
        kind: row.try_get(at + 3)?,
        created_at: row.try_get(at + 4)?,
    })
}

fn limit(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(super) async fn pending_events(client: &Object, n: usize) -> Result<Vec<Event>, StoreError> {
    let rows = client
        .query(
            "SELECT id, video_id, tenant, type, created_at FROM events WHERE NOT fanned_out ORDER BY seq LIMIT $1",
            &[&limit(n)],
        )
        .await?;
    rows.iter().map(|r| row_to_event(r, 0)).collect()
}

/// Records an event's deliveries (one per endpoint: a second replica fanning the same event out at the same
/// time adds nothing) and marks the event fanned out.
pub(super) async fn fan_out(client: &mut Object, event: &Event, deliveries: &[Delivery]) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    for d in deliveries {
        tx.execute(
            "INSERT INTO webhook_deliveries (id, event_id, endpoint, url, state, attempts, next_attempt_at_ms, \
             created_at_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            &[
                &d.id,
                &event.id,
                &d.endpoint,
                &d.url,
                &d.state,
                &i64::from(d.attempts),
                &d.next_attempt_at_ms,
                &d.created_at_ms,
            ],
        )
        .await?;
    }
    tx.execute("UPDATE events SET fanned_out = TRUE WHERE id = $1", &[&event.id])
        .await?;
    tx.commit().await?;
    Ok(())
}

const DELIVERY_COLUMNS: &str = "d.id, d.endpoint, d.url, d.state, d.attempts, d.next_attempt_at_ms, d.created_at_ms, \
     d.last_status, d.last_error, d.delivered_at_ms, e.id, e.video_id, e.tenant, e.type, e.created_at";

fn row_to_delivery(row: &Row) -> Result<Delivery, StoreError> {
    let attempts: i64 = row.try_get(4)?;
    let status: Option<i64> = row.try_get(7)?;
    Ok(Delivery {
        id: row.try_get(0)?,
        endpoint: row.try_get(1)?,
        url: row.try_get(2)?,
        state: row.try_get(3)?,
        attempts: u32::try_from(attempts.max(0)).unwrap_or(u32::MAX),
        next_attempt_at_ms: row.try_get(5)?,
        created_at_ms: row.try_get(6)?,
        last_status: status.and_then(|s| u16::try_from(s).ok()),
        last_error: row.try_get(8)?,
        delivered_at_ms: row.try_get(9)?,
        event: row_to_event(row, 10)?,
    })
}

pub(super) async fn claim_due_deliveries(
    client: &mut Object,
    now_ms: i64,
    hold_until_ms: i64,
    n: usize,
) -> Result<Vec<Delivery>, StoreError> {
    let tx = client.transaction().await?;
    let claimed = tx
        .query(
            "WITH due AS (SELECT id FROM webhook_deliveries WHERE state = 'pending' AND next_attempt_at_ms <= $1 \
             ORDER BY next_attempt_at_ms LIMIT $3 FOR UPDATE SKIP LOCKED) \
             UPDATE webhook_deliveries d SET next_attempt_at_ms = $2 FROM due WHERE d.id = due.id RETURNING d.id",
            &[&now_ms, &hold_until_ms, &limit(n)],
        )
        .await?;
    let ids = claimed
        .iter()
        .map(|r| r.try_get::<_, String>(0))
        .collect::<Result<Vec<_>, _>>()?;
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN events e ON e.id = d.event_id \
         WHERE d.id = ANY($1) ORDER BY d.created_at_ms, d.id"
    );
    let rows = tx.query(&sql, &[&ids]).await?;
    tx.commit().await?;
    rows.iter().map(row_to_delivery).collect()
}

pub(super) async fn update_delivery(client: &Object, d: &Delivery) -> Result<(), StoreError> {
    let changed = client
        .execute(
            "UPDATE webhook_deliveries SET state = $1, attempts = $2, next_attempt_at_ms = $3, last_status = $4, \
             last_error = $5, delivered_at_ms = $6 WHERE id = $7",
            &[
                &d.state,
                &i64::from(d.attempts),
                &d.next_attempt_at_ms,
                &d.last_status.map(i64::from),
                &d.last_error,
                &d.delivered_at_ms,
                &d.id,
            ],
        )
        .await?;
    if changed == 0 {
        return Err(StoreError::Missing(d.id.clone()));
    }
    Ok(())
}

pub(super) async fn list_deliveries(
    client: &Object,
    video_id: Option<&str>,
    state: Option<&str>,
    n: usize,
) -> Result<Vec<Delivery>, StoreError> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN events e ON e.id = d.event_id \
         WHERE ($1::TEXT IS NULL OR e.video_id = $1) AND ($2::TEXT IS NULL OR d.state = $2) \
         ORDER BY d.created_at_ms DESC, d.id LIMIT $3"
    );
    let rows = client.query(&sql, &[&video_id, &state, &limit(n)]).await?;
    rows.iter().map(row_to_delivery).collect()
}
