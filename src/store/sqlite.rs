//! SQLite job store (the single-machine default): WAL journal, versioned migrations from `migrations/`,
//! one writer connection owned by a thread that commits writes in groups ([`writer`]), and a pool of reader
//! connections used on the blocking pool ([`readers`]).

use std::path::Path;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

mod leases;
mod readers;
mod rows;
mod shared;
mod writer;

use self::readers::Readers;
use self::rows::{insert_row, row_to_job, select_job, select_jobs, update_row};
use self::writer::Writer;
use super::row::{AT_BACKEND, FINISHED, JOB_COLUMN_COUNT, JOB_COLUMNS};
use super::{Delivery, Event, ExportedJob, Inserted, JobStore, Order, Replica, StoreError, Unfinished};
use crate::video::{Character, Job, State, now_unix_ms};

/// Migrations in order; the index + 1 is the schema version they bring the database to.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_backend_data.sql"),
    include_str!("migrations/0003_shadow.sql"),
    include_str!("migrations/0004_moderation.sql"),
    include_str!("migrations/0005_webhooks.sql"),
    include_str!("migrations/0006_retention.sql"),
    include_str!("migrations/0007_leases.sql"),
    include_str!("migrations/0008_callbacks.sql"),
    include_str!("migrations/0009_totals.sql"),
    include_str!("migrations/0010_lease_due.sql"),
];

/// How long a job stays leased without renewal when the config does not say (`[store] lease`).
pub const DEFAULT_LEASE: std::time::Duration = std::time::Duration::from_secs(30);

pub struct SqliteStore {
    writer: Writer,
    readers: Readers,
    replica: Replica,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            // A full disk is kept apart: the API answers it 507 storage_full rather than a generic 500.
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::Full(e.to_string()),
            _ => StoreError::Backend(e.to_string()),
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date, as the one process
    /// the data directory's lock allows.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_as(path, Replica::single(DEFAULT_LEASE))
    }

    /// As [`SqliteStore::open`], as `replica` (the contract tests play two processes on one file).
    pub fn open_as(path: &Path, replica: Replica) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Backend(format!("cannot create {}: {e}", dir.display())))?;
        }
        let writer = Connection::open(path)?;
        writer.pragma_update(None, "journal_mode", "WAL")?;
        // FULL, not WAL's usual NORMAL: NORMAL may lose the last commits on power failure, and a job's state
        // (`submitting` above all) must be on disk before the backend is called.
        writer.pragma_update(None, "synchronous", "FULL")?;
        writer.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&writer)?;
        Ok(SqliteStore {
            readers: Readers::open(path)?,
            writer: Writer::start(writer, path)?,
            replica,
        })
    }

    /// This replica's id, and the lease deadline a claim made now gives.
    fn lease(&self) -> (String, i64, i64) {
        let now = now_unix_ms();
        (
            self.replica.id.clone(),
            now,
            now.saturating_add(self.replica.lease_ms()),
        )
    }
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, sql) in MIGRATIONS.iter().enumerate() {
        let version = i as i64 + 1;
        if version <= current {
            continue;
        }
        // The version is set inside the migration's transaction: a crash mid-way leaves it to be rerun whole.
        conn.execute_batch(&format!("BEGIN; {sql}; PRAGMA user_version = {version}; COMMIT;"))?;
    }
    if current > MIGRATIONS.len() as i64 {
        return Err(StoreError::Backend(format!(
            "database schema version {current} is newer than this binary knows ({}); refusing to run",
            MIGRATIONS.len()
        )));
    }
    Ok(())
}

#[async_trait]
impl JobStore for SqliteStore {
    async fn insert_job(&self, job: &Job, max_unfinished: Option<u64>) -> Result<Inserted, StoreError> {
        let job = job.clone();
        let (owner, _, until) = self.lease();
        self.writer
            .write(move |conn| {
                // One writer (see `writer`): nothing is written between these checks and the insert.
                // A replay of a used key is answered before the cap is counted, whatever the tenant's unfinished count.
                if let Some(key) = &job.idempotency_key {
                    let existing: Option<(String, Option<i64>)> = conn
                        .query_row(
                            "SELECT id, deleted_at FROM jobs WHERE tenant = ?1 AND idempotency_key = ?2",
                            params![job.tenant, key],
                            |r| Ok((r.get(0)?, r.get(1)?)),
                        )
                        .optional()?;
                    if let Some((id, Some(_deleted_at))) = existing {
                        return Ok(Inserted::Deleted(id));
                    }
                    if let Some((id, None)) = existing {
                        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1");
                        let found = select_jobs(conn, &sql, &[&id])?;
                        return match found.into_iter().next() {
                            Some(j) => Ok(Inserted::Existing(Box::new(j))),
                            None => Err(StoreError::Missing(id)),
                        };
                    }
                }
                if let Some(max) = max_unfinished
                    && count_unfinished(conn, &job.tenant)? >= max
                {
                    return Ok(Inserted::OverCap);
                }
                insert_row(conn, &job, "", Some(&owner), until)?;
                // A video can be failed from the start (a blocked prompt): its event is due now.
                super::outbox::record_event(conn, &job)?;
                Ok(Inserted::New)
            })
            .await
    }

    async fn get_job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let id = id.to_owned();
        self.readers.read(move |conn| select_job(conn, &id)).await
    }

    async fn update_job(&self, job: &Job) -> Result<Job, StoreError> {
        let mut job = job.clone();
        self.writer
            .write(move |conn| {
                let changed = update_row(conn, &job)?;
                if changed == 0 {
                    return Err(StoreError::Conflict(job.id));
                }
                // The webhook event is written with the change that finishes the video, or not at all.
                super::outbox::record_event(conn, &job)?;
                job.version += 1;
                Ok(job)
            })
            .await
    }

    async fn delete_job(&self, id: &str, version: i64) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.writer
            .write(move |conn| {
                let now = crate::video::now_unix();
                // The record stays (audit, export) but lists no assets: the API removes the files right after.
                let changed = conn.execute(
                    "UPDATE jobs SET deleted_at = ?1, assets_json = '[]', version = version + 1 \
                 WHERE id = ?2 AND version = ?3 AND deleted_at IS NULL",
                    params![now, id, version],
                )?;
                if changed == 0 {
                    return Err(StoreError::Conflict(id));
                }
                Ok(())
            })
            .await
    }

    async fn list_jobs(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
        order: Order,
    ) -> Result<Vec<Job>, StoreError> {
        let (tenant, after) = (tenant.to_owned(), after.map(str::to_owned));
        self.readers
            .read(move |conn| {
                let sql = page_sql(JOB_COLUMNS, order, after.is_some());
                let limit = limit as i64;
                match &after {
                    Some(after) => select_jobs(conn, &sql, &[&tenant, after, &limit]),
                    None => select_jobs(conn, &sql, &[&tenant, &limit]),
                }
            })
            .await
    }

    async fn list_job_ids(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
        order: Order,
    ) -> Result<Vec<String>, StoreError> {
        let (tenant, after) = (tenant.to_owned(), after.map(str::to_owned));
        self.readers
            .read(move |conn| {
                let sql = page_sql("id", order, after.is_some());
                let mut stmt = conn.prepare_cached(&sql)?;
                let limit = limit as i64;
                let ids = match &after {
                    Some(after) => stmt
                        .query_map(params![tenant, after, limit], |r| r.get(0))?
                        .collect::<Result<Vec<String>, _>>()?,
                    None => stmt
                        .query_map(params![tenant, limit], |r| r.get(0))?
                        .collect::<Result<Vec<String>, _>>()?,
                };
                Ok(ids)
            })
            .await
    }

    /// Every shadow job with the primary job it mirrors (a pair whose primary was deleted drops out).
    async fn shadow_pairs(&self) -> Result<Vec<(Job, Job)>, StoreError> {
        self.readers
            .read(move |conn| {
                let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE shadow_of IS NOT NULL ORDER BY seq ASC");
                let shadows = select_jobs(conn, &sql, &[])?;
                let mut pairs = Vec::with_capacity(shadows.len());
                for shadow in shadows {
                    let Some(primary_id) = shadow.shadow_of.clone() else {
                        continue;
                    };
                    if let Some(primary) = select_job(conn, &primary_id)? {
                        pairs.push((primary, shadow));
                    }
                }
                Ok(pairs)
            })
            .await
    }

    async fn export_jobs(
        &self,
        tenant: Option<&str>,
        since: Option<i64>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, ExportedJob)>, StoreError> {
        let tenant = tenant.map(str::to_owned);
        self.readers
            .read(move |conn| {
                let sql = format!(
                    "SELECT {JOB_COLUMNS}, seq, deleted_at FROM jobs WHERE seq > ?1 AND (?2 IS NULL OR tenant = ?2) \
                 AND (?3 IS NULL OR created_at >= ?3) ORDER BY seq LIMIT ?4"
                );
                let mut stmt = conn.prepare_cached(&sql)?;
                let mut rows = stmt.query(params![after, tenant, since, limit as i64])?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    let job = row_to_job(row)?;
                    let seq: i64 = row.get(JOB_COLUMN_COUNT)?;
                    let deleted_at: Option<i64> = row.get(JOB_COLUMN_COUNT + 1)?;
                    out.push((seq, ExportedJob { job, deleted_at }));
                }
                Ok(out)
            })
            .await
    }

    async fn import_job(&self, exported: &ExportedJob) -> Result<bool, StoreError> {
        let exported = exported.clone();
        self.writer
            .write(move |conn| {
                // Imported with no lease (no owner, expired at 0): whichever replica sweeps next claims it.
                let inserted = insert_row(conn, &exported.job, "OR IGNORE", None, 0)? == 1;
                if inserted && exported.deleted_at.is_some() {
                    conn.execute(
                        "UPDATE jobs SET deleted_at = ?1 WHERE id = ?2",
                        params![exported.deleted_at, exported.job.id],
                    )?;
                }
                Ok(inserted)
            })
            .await
    }

    async fn list_characters(&self, tenant: Option<&str>) -> Result<Vec<Character>, StoreError> {
        let tenant = tenant.map(str::to_owned);
        self.readers
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT id, tenant, name, created_at, video_key FROM characters WHERE (?1 IS NULL OR tenant = ?1) \
                 ORDER BY created_at, id",
                )?;
                let rows = stmt.query_map(params![tenant], |r| {
                    Ok(Character {
                        id: r.get(0)?,
                        tenant: r.get(1)?,
                        name: r.get(2)?,
                        created_at: r.get(3)?,
                        video_key: r.get(4)?,
                    })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn import_character(&self, c: &Character) -> Result<bool, StoreError> {
        let c = c.clone();
        self.writer.write(move |conn| {
            let n = conn.execute(
                "INSERT OR IGNORE INTO characters (id, tenant, name, created_at, video_key) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![c.id, c.tenant, c.name, c.created_at, c.video_key],
            )?;
            Ok(n == 1)
        })
        .await
    }

    async fn expired_jobs(&self, now: i64, limit: usize) -> Result<Vec<Job>, StoreError> {
        self.readers
            .read(move |conn| {
                // `assets_json != '[]'` skips videos already swept; the condition is the partial index jobs_expiring's.
                let sql = format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE expires_at IS NOT NULL AND expires_at <= ?1 \
                 AND assets_json != '[]' AND deleted_at IS NULL ORDER BY expires_at LIMIT ?2"
                );
                select_jobs(conn, &sql, &[&now, &(limit as i64)])
            })
            .await
    }

    async fn unfinished_jobs(&self) -> Result<Vec<Unfinished>, StoreError> {
        self.readers
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT id, state, backend FROM jobs WHERE state NOT IN ('completed', 'failed') \
                 AND deleted_at IS NULL ORDER BY seq ASC",
                )?;
                let mut rows = stmt.query([])?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    let id: String = row.get(0)?;
                    let state: String = row.get(1)?;
                    let Some(state) = State::parse(&state) else {
                        return Err(StoreError::Corrupt {
                            id,
                            reason: format!("unknown state {state:?}"),
                        });
                    };
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

    async fn insert_character(&self, c: &Character) -> Result<(), StoreError> {
        let c = c.clone();
        self.writer
            .write(move |conn| {
                conn.execute(
                    "INSERT INTO characters (id, tenant, name, created_at, video_key) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![c.id, c.tenant, c.name, c.created_at, c.video_key],
                )?;
                Ok(())
            })
            .await
    }

    async fn get_character(&self, id: &str) -> Result<Option<Character>, StoreError> {
        let id = id.to_owned();
        self.readers
            .read(move |conn| {
                Ok(conn
                    .query_row(
                        "SELECT id, tenant, name, created_at, video_key FROM characters WHERE id = ?1",
                        params![id],
                        |r| {
                            Ok(Character {
                                id: r.get(0)?,
                                tenant: r.get(1)?,
                                name: r.get(2)?,
                                created_at: r.get(3)?,
                                video_key: r.get(4)?,
                            })
                        },
                    )
                    .optional()?)
            })
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.readers
            .read(|conn| {
                conn.query_row("SELECT 1", [], |_| Ok(()))?;
                Ok(())
            })
            .await
    }

    async fn count_unfinished(&self, tenant: &str) -> Result<u64, StoreError> {
        let tenant = tenant.to_owned();
        self.readers.read(move |conn| count_unfinished(conn, &tenant)).await
    }

    async fn pending_events(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        self.readers
            .read(move |conn| super::outbox::pending_events(conn, limit))
            .await
    }

    async fn fan_out(&self, event: &Event, deliveries: &[Delivery]) -> Result<(), StoreError> {
        let (event, deliveries) = (event.clone(), deliveries.to_vec());
        self.writer
            .write(move |conn| super::outbox::fan_out(conn, &event, &deliveries))
            .await
    }

    async fn claim_due_deliveries(
        &self,
        now_ms: i64,
        hold_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        self.writer
            .write(move |conn| super::outbox::claim_due_deliveries(conn, now_ms, hold_until_ms, limit))
            .await
    }

    async fn update_delivery(&self, delivery: &Delivery) -> Result<(), StoreError> {
        let delivery = delivery.clone();
        self.writer
            .write(move |conn| super::outbox::update_delivery(conn, &delivery))
            .await
    }

    async fn list_deliveries(
        &self,
        video_id: Option<&str>,
        state: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let (video_id, state) = (video_id.map(str::to_owned), state.map(str::to_owned));
        self.readers
            .read(move |conn| super::outbox::list_deliveries(conn, video_id.as_deref(), state.as_deref(), limit))
            .await
    }

    async fn queue_depth(&self) -> Result<Vec<(String, u64)>, StoreError> {
        self.readers
            .read(|conn| {
                let mut stmt = conn.prepare_cached(
                "SELECT state, COUNT(*) FROM jobs WHERE state NOT IN ('completed', 'failed') AND deleted_at IS NULL \
                 GROUP BY state",
            )?;
                let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64)))?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            })
            .await
    }

    async fn claim_unfinished(&self) -> Result<Vec<Unfinished>, StoreError> {
        self.claim_leases().await
    }

    async fn claim_job(&self, id: &str) -> Result<bool, StoreError> {
        self.claim_lease(id).await
    }

    async fn release_leases(&self) -> Result<(), StoreError> {
        self.release_all().await
    }

    async fn start_submit(&self, job: &Job, max_at_backend: Option<u32>) -> Result<Option<Job>, StoreError> {
        let mut job = job.clone();
        self.writer
            .write(move |conn| {
                if let Some(max) = max_at_backend {
                    let sql = format!(
                        "SELECT COUNT(*) FROM jobs WHERE backend = ?1 AND state IN {AT_BACKEND} AND deleted_at IS NULL \
                     AND id != ?2"
                    );
                    let n: i64 = conn.query_row(&sql, params![job.backend, job.id], |r| r.get(0))?;
                    if n >= i64::from(max) {
                        return Ok(None);
                    }
                }
                if update_row(conn, &job)? == 0 {
                    return Err(StoreError::Conflict(job.id));
                }
                job.version += 1;
                Ok(Some(job))
            })
            .await
    }

    async fn heartbeat(&self) -> Result<u32, StoreError> {
        // One process per SQLite store (the data directory's lock).
        Ok(1)
    }

    async fn record_callback(&self, job_id: &str, payload: &serde_json::Value) -> Result<(), StoreError> {
        self.keep_callback(job_id, payload).await
    }

    async fn take_callback(&self, job_id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.pop_callback(job_id).await
    }

    async fn count_toward(&self, key: &str, day: i64, cap: u64) -> Result<bool, StoreError> {
        self.count_day(key, day, cap).await
    }

    async fn add_to_total(&self, key: &str, n: u64) -> Result<(), StoreError> {
        self.add_total(key, n).await
    }

    async fn totals(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        self.read_totals(prefix).await
    }
}

/// A tenant's jobs not yet completed or failed.
fn count_unfinished(conn: &Connection, tenant: &str) -> Result<u64, StoreError> {
    let sql = format!("SELECT COUNT(*) FROM jobs WHERE tenant = ?1 AND state NOT IN {FINISHED} AND deleted_at IS NULL");
    let n: i64 = conn.query_row(&sql, params![tenant], |r| r.get(0))?;
    Ok(n.max(0) as u64)
}

/// A page of a tenant's jobs (`columns` of each), in `order` of creation, optionally after the job whose id is the
/// second parameter; the tenant is the first parameter and the limit the last. The cursor's seq is found even if
/// that video was deleted since, so paging goes on; an unknown id gives NULL, which matches nothing: an empty page.
fn page_sql(columns: &str, order: Order, after: bool) -> String {
    let (cmp, dir) = match order {
        Order::Asc => (">", "ASC"),
        Order::Desc => ("<", "DESC"),
    };
    if after {
        format!(
            "SELECT {columns} FROM jobs WHERE tenant = ?1 AND deleted_at IS NULL \
             AND seq {cmp} (SELECT seq FROM jobs WHERE id = ?2) ORDER BY seq {dir} LIMIT ?3"
        )
    } else {
        format!("SELECT {columns} FROM jobs WHERE tenant = ?1 AND deleted_at IS NULL ORDER BY seq {dir} LIMIT ?2")
    }
}
