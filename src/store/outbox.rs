//! The webhook outbox in SQLite: events written in the transaction that finishes a video, deliveries fanned out
//! from them, and their attempts. Free functions over a connection, called by [`super::sqlite::SqliteStore`].

use rusqlite::{Connection, Row, params};

use super::{Delivery, Event, StoreError};
use crate::video::{Job, new_id};

/// Records the webhook event of a video that has just become completed or failed. Idempotent: a video has one
/// event, whichever write first made it terminal. Shadow jobs have none (clients never see them).
pub(super) fn record_event(conn: &Connection, job: &Job) -> Result<(), StoreError> {
    let Some(kind) = event_kind(job) else {
        return Ok(());
    };
    conn.execute(
        "INSERT OR IGNORE INTO events (id, video_id, tenant, type, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![new_id("evt"), job.id, job.tenant, kind, crate::video::now_unix()],
    )?;
    Ok(())
}

/// The event a job's current state calls for: `video.completed` or `video.failed` once it has finished; none
/// before, and none for a shadow job (clients never see those). The rule both stores follow.
pub(super) fn event_kind(job: &Job) -> Option<&'static str> {
    if !job.state.is_terminal() || job.shadow_of.is_some() {
        return None;
    }
    Some(if job.error.is_some() {
        "video.failed"
    } else {
        "video.completed"
    })
}

fn row_to_event(row: &Row<'_>, at: usize) -> rusqlite::Result<Event> {
    Ok(Event {
        id: row.get(at)?,
        video_id: row.get(at + 1)?,
        tenant: row.get(at + 2)?,
        kind: row.get(at + 3)?,
        created_at: row.get(at + 4)?,
    })
}

pub(super) fn pending_events(conn: &Connection, limit: usize) -> Result<Vec<Event>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, video_id, tenant, type, created_at FROM events WHERE fanned_out = 0 ORDER BY seq LIMIT ?1",
    )?;
    let rows = stmt.query_map(params![limit as i64], |r| row_to_event(r, 0))?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

pub(super) fn fan_out(conn: &Connection, event: &Event, deliveries: &[Delivery]) -> Result<(), StoreError> {
    for d in deliveries {
        conn.execute(
            "INSERT OR IGNORE INTO webhook_deliveries (id, event_id, endpoint, url, state, attempts, \
             next_attempt_at_ms, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                d.id,
                event.id,
                d.endpoint,
                d.url,
                d.state,
                d.attempts,
                d.next_attempt_at_ms,
                d.created_at_ms
            ],
        )?;
    }
    conn.execute("UPDATE events SET fanned_out = 1 WHERE id = ?1", params![event.id])?;
    Ok(())
}

const DELIVERY_COLUMNS: &str = "d.id, d.endpoint, d.url, d.state, d.attempts, d.next_attempt_at_ms, d.created_at_ms, \
     d.last_status, d.last_error, d.delivered_at_ms, e.id, e.video_id, e.tenant, e.type, e.created_at";

fn row_to_delivery(row: &Row<'_>) -> rusqlite::Result<Delivery> {
    let attempts: i64 = row.get(4)?;
    let status: Option<i64> = row.get(7)?;
    Ok(Delivery {
        id: row.get(0)?,
        endpoint: row.get(1)?,
        url: row.get(2)?,
        state: row.get(3)?,
        attempts: attempts.max(0) as u32,
        next_attempt_at_ms: row.get(5)?,
        created_at_ms: row.get(6)?,
        last_status: status.and_then(|s| u16::try_from(s).ok()),
        last_error: row.get(8)?,
        delivered_at_ms: row.get(9)?,
        event: row_to_event(row, 10)?,
    })
}

pub(super) fn claim_due_deliveries(
    conn: &Connection,
    now_ms: i64,
    hold_until_ms: i64,
    limit: usize,
) -> Result<Vec<Delivery>, StoreError> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN events e ON e.id = d.event_id \
         WHERE d.state = 'pending' AND d.next_attempt_at_ms <= ?1 ORDER BY d.next_attempt_at_ms LIMIT ?2"
    );
    let due = {
        let mut stmt = conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(params![now_ms, limit as i64], row_to_delivery)?;
        rows.collect::<Result<Vec<_>, _>>()?
    };
    for d in &due {
        conn.execute(
            "UPDATE webhook_deliveries SET next_attempt_at_ms = ?1 WHERE id = ?2",
            params![hold_until_ms, d.id],
        )?;
    }
    Ok(due)
}

pub(super) fn update_delivery(conn: &Connection, d: &Delivery) -> Result<(), StoreError> {
    let changed = conn.execute(
        "UPDATE webhook_deliveries SET state = ?1, attempts = ?2, next_attempt_at_ms = ?3, last_status = ?4, \
         last_error = ?5, delivered_at_ms = ?6 WHERE id = ?7",
        params![
            d.state,
            d.attempts,
            d.next_attempt_at_ms,
            d.last_status,
            d.last_error,
            d.delivered_at_ms,
            d.id
        ],
    )?;
    if changed == 0 {
        return Err(StoreError::Missing(d.id.clone()));
    }
    Ok(())
}

pub(super) fn list_deliveries(
    conn: &Connection,
    video_id: Option<&str>,
    state: Option<&str>,
    limit: usize,
) -> Result<Vec<Delivery>, StoreError> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d JOIN events e ON e.id = d.event_id \
         WHERE (?1 IS NULL OR e.video_id = ?1) AND (?2 IS NULL OR d.state = ?2) \
         ORDER BY d.created_at_ms DESC, d.id LIMIT ?3"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![video_id, state, limit as i64], row_to_delivery)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}
