//! Job rows in SQLite: a [`JobRow`] read from a statement's row and bound as parameters. The column list and
//! the conversion to and from [`Job`] are the store's shared ones ([`crate::store::row`]).

use rusqlite::{Connection, Row, params};

use crate::store::StoreError;
use crate::store::row::{JOB_COLUMNS, JobRow};
use crate::video::Job;

pub(super) fn row_to_job(row: &Row<'_>) -> Result<Job, StoreError> {
    let r = JobRow {
        id: row.get(0)?,
        tenant: row.get(1)?,
        kind: row.get(2)?,
        request_json: row.get(3)?,
        remixed_from: row.get(4)?,
        backend: row.get(5)?,
        backend_version: row.get(6)?,
        backend_job_id: row.get(7)?,
        state: row.get(8)?,
        progress: row.get(9)?,
        created_at: row.get(10)?,
        updated_at: row.get(11)?,
        completed_at: row.get(12)?,
        expires_at: row.get(13)?,
        error_code: row.get(14)?,
        error_message: row.get(15)?,
        assets_json: row.get(16)?,
        idempotency_key: row.get(17)?,
        request_hash: row.get(18)?,
        attempts: row.get(19)?,
        next_attempt_at_ms: row.get(20)?,
        version: row.get(21)?,
        backend_data: row.get(22)?,
        produced_json: row.get(23)?,
        submitted_at_ms: row.get(24)?,
        shadow_of: row.get(25)?,
        created_at_ms: row.get(26)?,
        moderation_json: row.get(27)?,
    };
    r.into_job()
}

pub(super) fn select_job(conn: &Connection, id: &str) -> Result<Option<Job>, StoreError> {
    let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1 AND deleted_at IS NULL");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![id])?;
    match rows.next()? {
        Some(row) => Ok(Some(row_to_job(row)?)),
        None => Ok(None),
    }
}

/// Inserts one job row, leased to `owner` until `lease_until_ms`; `verb` is "" or "OR IGNORE". Returns the
/// rows inserted (0 or 1).
pub(super) fn insert_row(
    conn: &Connection,
    job: &Job,
    verb: &str,
    owner: Option<&str>,
    lease_until_ms: i64,
) -> Result<usize, StoreError> {
    let r = JobRow::from_job(job)?;
    let sql = format!(
        "INSERT {verb} INTO jobs ({JOB_COLUMNS}, lease_owner, lease_until_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, \
         ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30)"
    );
    Ok(conn.execute(
        &sql,
        params![
            r.id,
            r.tenant,
            r.kind,
            r.request_json,
            r.remixed_from,
            r.backend,
            r.backend_version,
            r.backend_job_id,
            r.state,
            r.progress,
            r.created_at,
            r.updated_at,
            r.completed_at,
            r.expires_at,
            r.error_code,
            r.error_message,
            r.assets_json,
            r.idempotency_key,
            r.request_hash,
            r.attempts,
            r.next_attempt_at_ms,
            r.version,
            r.backend_data,
            r.produced_json,
            r.submitted_at_ms,
            r.shadow_of,
            r.created_at_ms,
            r.moderation_json,
            owner,
            lease_until_ms,
        ],
    )?)
}

/// Writes what a job's progress changes (everything but its identity and creation) if `version` is still the
/// stored one; returns the rows changed (0 or 1).
pub(super) fn update_row(conn: &Connection, job: &Job) -> Result<usize, StoreError> {
    let r = JobRow::from_job(job)?;
    Ok(conn.execute(
        "UPDATE jobs SET backend = ?1, backend_version = ?2, backend_job_id = ?3, state = ?4, progress = ?5, \
         updated_at = ?6, completed_at = ?7, expires_at = ?8, error_code = ?9, error_message = ?10, \
         assets_json = ?11, attempts = ?12, next_attempt_at_ms = ?13, request_json = ?14, backend_data = ?15, \
         produced_json = ?16, submitted_at_ms = ?17, moderation_json = ?18, version = version + 1 \
         WHERE id = ?19 AND version = ?20 AND deleted_at IS NULL",
        params![
            r.backend,
            r.backend_version,
            r.backend_job_id,
            r.state,
            r.progress,
            r.updated_at,
            r.completed_at,
            r.expires_at,
            r.error_code,
            r.error_message,
            r.assets_json,
            r.attempts,
            r.next_attempt_at_ms,
            r.request_json,
            r.backend_data,
            r.produced_json,
            r.submitted_at_ms,
            r.moderation_json,
            r.id,
            r.version,
        ],
    )?)
}

pub(super) fn select_jobs(conn: &Connection, sql: &str, args: &[&dyn rusqlite::ToSql]) -> Result<Vec<Job>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let mut rows = stmt.query(args)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(row_to_job(row)?);
    }
    Ok(out)
}
