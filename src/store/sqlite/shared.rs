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

    /// See [`crate::store::JobStore::add_to_total`].
    pub(super) async fn add_total(&self, key: &str, n: u64) -> Result<(), StoreError> {
        if n == 0 {
            return Ok(());
        }
        let key = key.to_owned();
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        self.writer
            .write(move |conn| {
                conn.execute(
                    "INSERT INTO totals (key, n) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET n = n + excluded.n",
                    params![key, n],
                )?;
                Ok(())
            })
            .await
    }

    /// See [`crate::store::JobStore::totals`].
    pub(super) async fn read_totals(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let prefix = prefix.to_owned();
        self.readers
            .read(move |conn| {
                let mut stmt =
                    conn.prepare("SELECT key, n FROM totals WHERE substr(key, 1, length(?1)) = ?1 ORDER BY key")?;
                let rows = stmt.query_map(params![prefix], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }
}
