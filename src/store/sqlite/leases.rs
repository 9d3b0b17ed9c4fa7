//! Leases on unfinished jobs (which process drives each, until when), kept as PostgreSQL keeps them so that both
//! stores answer the same contract: a sweep takes and renews them, a step takes one, a graceful stop gives them
//! all back.

use rusqlite::params;

use super::SqliteStore;
use crate::store::row::FINISHED;
use crate::store::{StoreError, Unfinished};
use crate::video::State;

/// Leases taken or renewed per write by a sweep: the longest a sweep holds the writer at a time.
const CLAIM_CHUNK: usize = 512;

impl SqliteStore {
    /// See [`crate::store::JobStore::claim_unfinished`].
    pub(super) async fn claim_leases(&self) -> Result<Vec<Unfinished>, StoreError> {
        // Only the leases that are due are written (free, run out, or this replica's with less than two thirds
        // of a lease left), found through an index on the deadline, a chunk per write. One statement that
        // renewed every held lease rewrote every unfinished row each sweep: with tens of thousands in flight it
        // held the writer for a tenth of a second every five, which was the whole p99 of a create under load.
        // A lease taken or renewed lasts a whole lease, so one renewed when two thirds are left is renewed again
        // (by the sweep a third of a lease later at the latest) well before it runs out.
        let renew_margin = self.replica.lease_ms().saturating_mul(2) / 3;
        loop {
            let (owner, now, until) = self.lease();
            let due = now.saturating_add(renew_margin);
            let changed = self
                .writer
                .write(move |conn| {
                    let sql = format!(
                        "UPDATE jobs SET lease_owner = ?1, lease_until_ms = ?3 WHERE id IN (SELECT id FROM jobs \
                         WHERE state NOT IN {FINISHED} AND deleted_at IS NULL AND lease_until_ms < ?4 \
                         AND (lease_owner IS NULL OR lease_owner = ?1 OR lease_until_ms < ?2) LIMIT ?5)"
                    );
                    let mut stmt = conn.prepare_cached(&sql)?;
                    Ok(stmt.execute(params![owner, now, until, due, CLAIM_CHUNK])?)
                })
                .await?;
            if changed < CLAIM_CHUNK {
                break;
            }
        }
        let owner = self.replica.id.clone();
        self.readers
            .read(move |conn| {
                let sql = format!(
                    "SELECT id, state, backend FROM jobs WHERE state NOT IN {FINISHED} AND deleted_at IS NULL \
                     AND lease_owner = ?1 ORDER BY seq"
                );
                let mut stmt = conn.prepare_cached(&sql)?;
                let mut rows = stmt.query(params![owner])?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    let id: String = row.get(0)?;
                    let state: String = row.get(1)?;
                    let state = State::parse(&state).ok_or_else(|| StoreError::Corrupt {
                        id: id.clone(),
                        reason: format!("unknown state {state:?}"),
                    })?;
                    out.push(Unfinished {
                        id,
                        state,
                        backend: row.get(2)?,
                    });
                }
                Ok(out)
            })
            .await
    }

    /// See [`crate::store::JobStore::claim_job`].
    pub(super) async fn claim_lease(&self, id: &str) -> Result<bool, StoreError> {
        let (owner, now, until) = self.lease();
        let id = id.to_owned();
        self.writer
            .write(move |conn| {
                let sql = format!(
                    "UPDATE jobs SET lease_owner = ?1, lease_until_ms = ?3 WHERE id = ?4 AND state NOT IN {FINISHED} \
                 AND deleted_at IS NULL AND (lease_owner IS NULL OR lease_owner = ?1 OR lease_until_ms < ?2)"
                );
                Ok(conn.execute(&sql, params![owner, now, until, id])? == 1)
            })
            .await
    }

    /// See [`crate::store::JobStore::release_leases`].
    pub(super) async fn release_all(&self) -> Result<(), StoreError> {
        let owner = self.replica.id.clone();
        self.writer
            .write(move |conn| {
                conn.execute(
                    "UPDATE jobs SET lease_owner = NULL, lease_until_ms = 0 WHERE lease_owner = ?1",
                    params![owner],
                )?;
                Ok(())
            })
            .await
    }
}
