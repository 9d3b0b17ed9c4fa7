//! Job rows in PostgreSQL: a [`JobRow`] read from a `tokio_postgres` row and bound as parameters. The column
//! list and the conversion to and from [`Job`] are the store's shared ones ([`crate::store::row`]).

use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::store::row::JobRow;
use crate::store::{StoreError, Unfinished};
use crate::video::{Character, Job, State};

pub(super) fn row_to_job(row: &Row) -> Result<Job, StoreError> {
    let r = JobRow {
        id: row.try_get(0)?,
        tenant: row.try_get(1)?,
        kind: row.try_get(2)?,
        request_json: row.try_get(3)?,
        remixed_from: row.try_get(4)?,
        backend: row.try_get(5)?,
        backend_version: row.try_get(6)?,
        backend_job_id: row.try_get(7)?,
        state: row.try_get(8)?,
        progress: row.try_get(9)?,
        created_at: row.try_get(10)?,
        updated_at: row.try_get(11)?,
        completed_at: row.try_get(12)?,
        expires_at: row.try_get(13)?,
        error_code: row.try_get(14)?,
        error_message: row.try_get(15)?,
        assets_json: row.try_get(16)?,
        idempotency_key: row.try_get(17)?,
        request_hash: row.try_get(18)?,
        attempts: row.try_get(19)?,
        next_attempt_at_ms: row.try_get(20)?,
        version: row.try_get(21)?,
        backend_data: row.try_get(22)?,
        produced_json: row.try_get(23)?,
        submitted_at_ms: row.try_get(24)?,
        shadow_of: row.try_get(25)?,
        created_at_ms: row.try_get(26)?,
        moderation_json: row.try_get(27)?,
    };
    r.into_job()
}

/// `INSERT` of every job column plus the lease (`$1` … `$30`), without its conflict clause.
pub(super) const INSERT_JOB: &str = "INSERT INTO jobs (id, tenant, kind, request_json, remixed_from, backend, \
     backend_version, backend_job_id, state, progress, created_at, updated_at, completed_at, expires_at, error_code, \
     error_message, assets_json, idempotency_key, request_hash, attempts, next_attempt_at_ms, version, backend_data, \
     produced_json, submitted_at_ms, shadow_of, created_at_ms, moderation_json, lease_owner, lease_until_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, \
     $24, $25, $26, $27, $28, $29, $30)";

/// The parameters of [`INSERT_JOB`], in order.
pub(super) fn insert_params<'a>(
    r: &'a JobRow,
    owner: &'a Option<String>,
    lease_until_ms: &'a i64,
) -> [&'a (dyn ToSql + Sync); 30] {
    [
        &r.id,
        &r.tenant,
        &r.kind,
        &r.request_json,
        &r.remixed_from,
        &r.backend,
        &r.backend_version,
        &r.backend_job_id,
        &r.state,
        &r.progress,
        &r.created_at,
        &r.updated_at,
        &r.completed_at,
        &r.expires_at,
        &r.error_code,
        &r.error_message,
        &r.assets_json,
        &r.idempotency_key,
        &r.request_hash,
        &r.attempts,
        &r.next_attempt_at_ms,
        &r.version,
        &r.backend_data,
        &r.produced_json,
        &r.submitted_at_ms,
        &r.shadow_of,
        &r.created_at_ms,
        &r.moderation_json,
        owner,
        lease_until_ms,
    ]
}

/// The version-checked `UPDATE` of what a job's progress changes (`$1` … `$20`).
pub(super) const UPDATE_JOB: &str = "UPDATE jobs SET backend = $1, backend_version = $2, backend_job_id = $3, \
     state = $4, progress = $5, updated_at = $6, completed_at = $7, expires_at = $8, error_code = $9, \
     error_message = $10, assets_json = $11, attempts = $12, next_attempt_at_ms = $13, request_json = $14, \
     backend_data = $15, produced_json = $16, submitted_at_ms = $17, moderation_json = $18, version = version + 1 \
     WHERE id = $19 AND version = $20 AND deleted_at IS NULL";

/// The parameters of [`UPDATE_JOB`], in order.
pub(super) fn update_params(r: &JobRow) -> [&(dyn ToSql + Sync); 20] {
    [
        &r.backend,
        &r.backend_version,
        &r.backend_job_id,
        &r.state,
        &r.progress,
        &r.updated_at,
        &r.completed_at,
        &r.expires_at,
        &r.error_code,
        &r.error_message,
        &r.assets_json,
        &r.attempts,
        &r.next_attempt_at_ms,
        &r.request_json,
        &r.backend_data,
        &r.produced_json,
        &r.submitted_at_ms,
        &r.moderation_json,
        &r.id,
        &r.version,
    ]
}

pub(super) fn character(row: &tokio_postgres::Row) -> Result<Character, StoreError> {
    Ok(Character {
        id: row.try_get(0)?,
        tenant: row.try_get(1)?,
        name: row.try_get(2)?,
        created_at: row.try_get(3)?,
        video_key: row.try_get(4)?,
    })
}

pub(super) fn unfinished(row: &tokio_postgres::Row) -> Result<Unfinished, StoreError> {
    let id: String = row.try_get(0)?;
    let state: String = row.try_get(1)?;
    let state = State::parse(&state).ok_or_else(|| StoreError::Corrupt {
        id: id.clone(),
        reason: format!("unknown state {state:?}"),
    })?;
    Ok(Unfinished {
        id,
        state,
        backend: row.try_get(2)?,
    })
}
