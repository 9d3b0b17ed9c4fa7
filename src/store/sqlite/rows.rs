//! Job rows: the one column list, a row read into a [`Job`], a [`Job`] written as a row, and the JSON columns.

use rusqlite::{Connection, Row, params};

use crate::store::StoreError;
use crate::video::{Job, JobError, JobKind, State};

pub(super) const JOB_COLUMNS: &str = "id, tenant, kind, request_json, remixed_from, backend, backend_version, backend_job_id, \
     state, progress, created_at, updated_at, completed_at, expires_at, error_code, error_message, assets_json, \
     idempotency_key, request_hash, attempts, next_attempt_at_ms, version, backend_data, produced_json, \
     submitted_at_ms, shadow_of, created_at_ms, moderation_json";

pub(super) fn row_to_job(row: &Row<'_>) -> Result<Job, StoreError> {
    let id: String = row.get(0)?;
    let corrupt = |reason: String| StoreError::Corrupt { id: id.clone(), reason };
    let kind: String = row.get(2)?;
    let state: String = row.get(8)?;
    let request_json: String = row.get(3)?;
    let assets_json: String = row.get(16)?;
    let error_code: Option<String> = row.get(14)?;
    let error_message: Option<String> = row.get(15)?;
    let progress: i64 = row.get(9)?;
    let attempts: i64 = row.get(19)?;
    let created_at: i64 = row.get(10)?;
    Ok(Job {
        tenant: row.get(1)?,
        kind: JobKind::parse(&kind).ok_or_else(|| corrupt(format!("unknown kind {kind:?}")))?,
        request: serde_json::from_str(&request_json).map_err(|e| corrupt(format!("request: {e}")))?,
        remixed_from: row.get(4)?,
        backend: row.get(5)?,
        backend_version: row.get(6)?,
        backend_job_id: row.get(7)?,
        state: State::parse(&state).ok_or_else(|| corrupt(format!("unknown state {state:?}")))?,
        progress: progress.clamp(0, 100) as u8,
        created_at,
        updated_at: row.get(11)?,
        completed_at: row.get(12)?,
        expires_at: row.get(13)?,
        error: match (error_code, error_message) {
            (Some(code), Some(message)) => Some(JobError { code, message }),
            _ => None,
        },
        assets: serde_json::from_str(&assets_json).map_err(|e| corrupt(format!("assets: {e}")))?,
        idempotency_key: row.get(17)?,
        request_hash: row.get(18)?,
        attempts: attempts.max(0) as u32,
        next_attempt_at_ms: row.get(20)?,
        version: row.get(21)?,
        backend_data: match row.get::<_, Option<String>>(22)? {
            Some(text) => Some(serde_json::from_str(&text).map_err(|e| corrupt(format!("backend_data: {e}")))?),
            None => None,
        },
        produced: match row.get::<_, Option<String>>(23)? {
            Some(text) => Some(serde_json::from_str(&text).map_err(|e| corrupt(format!("produced: {e}")))?),
            None => None,
        },
        submitted_at_ms: row.get(24)?,
        shadow_of: row.get(25)?,
        created_at_ms: row.get::<_, Option<i64>>(26)?.unwrap_or(created_at * 1000),
        moderation: match row.get::<_, Option<String>>(27)? {
            Some(text) => Some(serde_json::from_str(&text).map_err(|e| corrupt(format!("moderation: {e}")))?),
            None => None,
        },
        id,
    })
}

pub(super) fn to_json<T: serde::Serialize>(id: &str, v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt {
        id: id.to_owned(),
        reason: e.to_string(),
    })
}

pub(super) fn opt_json<T: serde::Serialize>(id: &str, v: &Option<T>) -> Result<Option<String>, StoreError> {
    v.as_ref().map(|v| to_json(id, v)).transpose()
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

/// Inserts one job row; `verb` is "" or "OR IGNORE". Returns the rows inserted (0 or 1).
pub(super) fn insert_row(conn: &Connection, job: &Job, verb: &str) -> Result<usize, StoreError> {
    let sql = format!(
        "INSERT {verb} INTO jobs (id, tenant, kind, request_json, remixed_from, backend, backend_version, \
         backend_job_id, state, progress, created_at, updated_at, completed_at, expires_at, error_code, \
         error_message, assets_json, idempotency_key, request_hash, attempts, next_attempt_at_ms, version, \
         backend_data, produced_json, submitted_at_ms, shadow_of, created_at_ms, moderation_json) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, \
         ?23, ?24, ?25, ?26, ?27, ?28)"
    );
    Ok(conn.execute(
        &sql,
        params![
            job.id,
            job.tenant,
            job.kind.as_str(),
            to_json(&job.id, &job.request)?,
            job.remixed_from,
            job.backend,
            job.backend_version,
            job.backend_job_id,
            job.state.as_str(),
            job.progress,
            job.created_at,
            job.updated_at,
            job.completed_at,
            job.expires_at,
            job.error.as_ref().map(|e| e.code.clone()),
            job.error.as_ref().map(|e| e.message.clone()),
            to_json(&job.id, &job.assets)?,
            job.idempotency_key,
            job.request_hash,
            job.attempts,
            job.next_attempt_at_ms,
            job.version,
            opt_json(&job.id, &job.backend_data)?,
            opt_json(&job.id, &job.produced)?,
            job.submitted_at_ms,
            job.shadow_of,
            job.created_at_ms,
            opt_json(&job.id, &job.moderation)?,
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
