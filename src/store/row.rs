//! A job as a row of column values, shared by every store: the one column list, and the one place where a
//! [`Job`] becomes columns (JSON for its nested parts) and back (a column that does not parse makes the record
//! [`StoreError::Corrupt`], never a panic). Each store only moves these values in and out of its own driver.

use super::StoreError;
use crate::video::{Job, JobError, JobKind, State};

/// The job columns, in [`JobRow`]'s field order.
pub(crate) const JOB_COLUMNS: &str = "id, tenant, kind, request_json, remixed_from, backend, backend_version, backend_job_id, \
     state, progress, created_at, updated_at, completed_at, expires_at, error_code, error_message, assets_json, \
     idempotency_key, request_hash, attempts, next_attempt_at_ms, version, backend_data, produced_json, \
     submitted_at_ms, shadow_of, created_at_ms, moderation_json";

/// How many columns [`JOB_COLUMNS`] names.
pub(crate) const JOB_COLUMN_COUNT: usize = 28;

/// One job's columns, in [`JOB_COLUMNS`] order.
#[derive(Debug, Clone)]
pub(crate) struct JobRow {
    pub id: String,
    pub tenant: String,
    pub kind: String,
    pub request_json: String,
    pub remixed_from: Option<String>,
    pub backend: String,
    pub backend_version: String,
    pub backend_job_id: Option<String>,
    pub state: String,
    pub progress: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub completed_at: Option<i64>,
    pub expires_at: Option<i64>,
    pub error_code: Option<String>,
    pub error_message: Option<String>,
    pub assets_json: String,
    pub idempotency_key: Option<String>,
    pub request_hash: String,
    pub attempts: i64,
    pub next_attempt_at_ms: i64,
    pub version: i64,
    pub backend_data: Option<String>,
    pub produced_json: Option<String>,
    pub submitted_at_ms: Option<i64>,
    pub shadow_of: Option<String>,
    pub created_at_ms: Option<i64>,
    pub moderation_json: Option<String>,
}

fn to_json<T: serde::Serialize>(id: &str, v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt {
        id: id.to_owned(),
        reason: e.to_string(),
    })
}

fn opt_json<T: serde::Serialize>(id: &str, v: &Option<T>) -> Result<Option<String>, StoreError> {
    v.as_ref().map(|v| to_json(id, v)).transpose()
}

impl JobRow {
    pub(crate) fn from_job(job: &Job) -> Result<JobRow, StoreError> {
        Ok(JobRow {
            id: job.id.clone(),
            tenant: job.tenant.clone(),
            kind: job.kind.as_str().to_owned(),
            request_json: to_json(&job.id, &job.request)?,
            remixed_from: job.remixed_from.clone(),
            backend: job.backend.clone(),
            backend_version: job.backend_version.clone(),
            backend_job_id: job.backend_job_id.clone(),
            state: job.state.as_str().to_owned(),
            progress: i64::from(job.progress),
            created_at: job.created_at,
            updated_at: job.updated_at,
            completed_at: job.completed_at,
            expires_at: job.expires_at,
            error_code: job.error.as_ref().map(|e| e.code.clone()),
            error_message: job.error.as_ref().map(|e| e.message.clone()),
            assets_json: to_json(&job.id, &job.assets)?,
            idempotency_key: job.idempotency_key.clone(),
            request_hash: job.request_hash.clone(),
            attempts: i64::from(job.attempts),
            next_attempt_at_ms: job.next_attempt_at_ms,
            version: job.version,
            backend_data: opt_json(&job.id, &job.backend_data)?,
            produced_json: opt_json(&job.id, &job.produced)?,
            submitted_at_ms: job.submitted_at_ms,
            shadow_of: job.shadow_of.clone(),
            created_at_ms: Some(job.created_at_ms),
            moderation_json: opt_json(&job.id, &job.moderation)?,
        })
    }

    pub(crate) fn into_job(self) -> Result<Job, StoreError> {
        let id = self.id;
        let corrupt = |reason: String| StoreError::Corrupt { id: id.clone(), reason };
        fn parse<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, String> {
            serde_json::from_str(text).map_err(|e| format!("{what}: {e}"))
        }
        fn parse_opt<T: serde::de::DeserializeOwned>(text: Option<String>, what: &str) -> Result<Option<T>, String> {
            text.map(|t| parse(&t, what)).transpose()
        }
        let job = Job {
            tenant: self.tenant,
            kind: JobKind::parse(&self.kind).ok_or_else(|| corrupt(format!("unknown kind {:?}", self.kind)))?,
            request: parse(&self.request_json, "request").map_err(corrupt)?,
            remixed_from: self.remixed_from,
            backend: self.backend,
            backend_version: self.backend_version,
            backend_job_id: self.backend_job_id,
            state: State::parse(&self.state).ok_or_else(|| corrupt(format!("unknown state {:?}", self.state)))?,
            progress: self.progress.clamp(0, 100) as u8,
            created_at: self.created_at,
            updated_at: self.updated_at,
            completed_at: self.completed_at,
            expires_at: self.expires_at,
            error: match (self.error_code, self.error_message) {
                (Some(code), Some(message)) => Some(JobError { code, message }),
                _ => None,
            },
            assets: parse(&self.assets_json, "assets").map_err(corrupt)?,
            idempotency_key: self.idempotency_key,
            request_hash: self.request_hash,
            attempts: u32::try_from(self.attempts.max(0)).unwrap_or(u32::MAX),
            next_attempt_at_ms: self.next_attempt_at_ms,
            version: self.version,
            backend_data: parse_opt(self.backend_data, "backend_data").map_err(corrupt)?,
            produced: parse_opt(self.produced_json, "produced").map_err(corrupt)?,
            submitted_at_ms: self.submitted_at_ms,
            shadow_of: self.shadow_of,
            created_at_ms: self.created_at_ms.unwrap_or(self.created_at * 1000),
            moderation: parse_opt(self.moderation_json, "moderation").map_err(corrupt)?,
            id: String::new(),
        };
        Ok(Job { id, ..job })
    }
}

/// The states in which a job holds a slot at its backend (`max_concurrent`), as SQL.
pub(crate) const AT_BACKEND: &str = "('submitting', 'submitted', 'running', 'finalizing')";
/// The states of a finished job, as SQL.
pub(crate) const FINISHED: &str = "('completed', 'failed')";
