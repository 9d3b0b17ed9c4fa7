//! What one SQLite process keeps that several PostgreSQL replicas share: provider callbacks waiting for their
//! job's next step, and counts per day (the shadow daily cap), both kept across restarts.

use rusqlite::{OptionalExtension, params};

use super::SqliteStore;
use crate::store::StoreError;
use crate::video::now_unix_ms;

impl SqliteStore {
    /// See [`crate::store::JobStore::record_callback`].
    pub(super) async fn keep_callback(&self, job_id: &str, payload: &serde_json::Value) -> Result<(), StoreError> {
        let (job_id, payload) = (job_id.to_owned(), payload.to_string());
        self.writer.write(move |conn| {
            conn.execute(
                "INSERT INTO callbacks (job_id, payload, received_at_ms) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (job_id) DO UPDATE SET payload = excluded.payload, received_at_ms = excluded.received_at_ms",
                params![job_id, payload, now_unix_ms()],
            )?;
            Ok(())
        })
        .await
    }

    /// See [`crate::store::JobStore::take_callback`].
    pub(super) async fn pop_callback(&self, job_id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let job_id = job_id.to_owned();
        self.writer
            .write(move |conn| {
                let text: Option<String> = conn
                    .query_row(
                        "DELETE FROM callbacks WHERE job_id = ?1 RETURNING payload",
                        params![job_id],
                        |r| r.get(0),
                    )
                    .optional()?;
                text.map(|t| {
                    serde_json::from_str(&t).map_err(|e| StoreError::Corrupt {
                        id: job_id.clone(),
                        reason: format!("callback: {e}"),
                    })
                })
                .transpose()
            })
            .await
    }

    /// See [`crate::store::JobStore::count_toward`].
    pub(super) async fn count_day(&self, key: &str, day: i64, cap: u64) -> Result<bool, StoreError> {
        if cap == 0 {
            return Ok(false);
        }
        let key = key.to_owned();
        let cap = i64::try_from(cap).unwrap_or(i64::MAX);
        self.writer
            .write(move |conn| {
                conn.execute("DELETE FROM daily_counts WHERE day < ?1", params![day - 1])?;
                let counted = conn.execute(
                    "INSERT INTO daily_counts (key, day, n) VALUES (?1, ?2, 1) \
                 ON CONFLICT (key, day) DO UPDATE SET n = n + 1 WHERE n < ?3",
                    params![key, day, cap],
                )?;
                Ok(counted == 1)
            })
            .await
    }
}
