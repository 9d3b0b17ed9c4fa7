//! PostgreSQL job store: the system of record several replicas share. A `deadpool` pool of `tokio-postgres`
//! connections (TLS through rustls), versioned migrations of its own applied at start under an advisory lock
//! (replicas starting together do not race), and the coordination the replicas need in the database itself:
//! job leases claimed with `FOR UPDATE SKIP LOCKED`, slot counts and tenant caps checked under transaction-scoped
//! advisory locks, webhook deliveries claimed before they are sent, and a registry of live replicas.
//!
//! Why tokio-postgres and not sqlx: the store's SQL is a handful of fixed statements, so compile-time checked
//! queries would buy little and cost a database at build time (or an offline cache) and a much larger build;
//! tokio-postgres is the driver sqlx's own ecosystem measures against, async, and small.

mod cluster;
mod outbox;
mod rows;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use tokio_postgres::error::SqlState;

use self::rows::{INSERT_JOB, UPDATE_JOB, character, insert_params, row_to_job, unfinished, update_params};
use super::row::{AT_BACKEND, FINISHED, JOB_COLUMN_COUNT, JOB_COLUMNS, JobRow};
use super::{Delivery, Event, ExportedJob, Inserted, JobStore, Order, RateTaken, Replica, StoreError, Unfinished};
use crate::video::{Character, Job, now_unix_ms};

/// Migrations in order; the index + 1 is the schema version they bring the database to.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_init.sql"),
    include_str!("migrations/0002_callbacks.sql"),
    include_str!("migrations/0003_totals.sql"),
];

/// The channel a recorded callback is announced on (its payload: the job id).
pub(super) const CALLBACKS_CHANNEL: &str = "sora_shim_callbacks";

/// The advisory lock held while migrating: any constant of our own ("sorashim" in ASCII).
const MIGRATION_LOCK: i64 = 0x736f_7261_7368_696d;

/// How to reach the database.
#[derive(Debug, Clone, PartialEq)]
pub struct PgOptions {
    /// `postgres://user:password@host:port/db?sslmode=…`; never logged (it may hold the password).
    pub url: crate::http::Secret,
    /// Connections per replica.
    pub pool_size: usize,
    /// CA bundle (PEM) the server's certificate is checked against, beside the platform's roots.
    pub ca_file: Option<PathBuf>,
}

pub struct PgStore {
    pool: Pool,
    replica: Replica,
    /// For the LISTEN connection (outside the pool: it stays open and idle).
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) if *db.code() == SqlState::DISK_FULL => StoreError::Full(db.message().to_owned()),
            Some(db) => StoreError::Backend(format!("PostgreSQL: {} ({})", db.message(), db.code().code())),
            None => StoreError::Backend(format!("PostgreSQL: {e}")),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        match e {
            deadpool_postgres::PoolError::Backend(e) => e.into(),
            e => StoreError::Backend(format!("PostgreSQL connection pool: {e}")),
        }
    }
}

impl PgStore {
    /// Connects and brings the schema up to date (under the migration lock). The worker registers the replica
    /// (its first [`JobStore::heartbeat`]); an offline command never does.
    pub async fn connect(options: &PgOptions, replica: Replica) -> Result<PgStore, StoreError> {
        let config: tokio_postgres::Config = options
            .url
            .expose()
            .parse()
            // The parser's message names the part it could not read, never the password.
            .map_err(|e| StoreError::Backend(format!("the PostgreSQL URL is not valid: {e}")))?;
        let tls = crate::tls::client_config(options.ca_file.as_deref())
            .map_err(|e| StoreError::Backend(format!("PostgreSQL TLS: {e}")))?;
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .create_timeout(Some(Duration::from_secs(10)))
            .wait_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(|e| StoreError::Backend(format!("PostgreSQL connection pool: {e}")))?;
        let store = PgStore {
            pool,
            replica,
            config,
            tls,
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn client(&self) -> Result<Object, StoreError> {
        Ok(self.pool.get().await?)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Held to the end of the transaction: a replica starting at the same time waits here, then finds the
        // schema current.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS sora_shim_schema (version BIGINT NOT NULL)")
            .await?;
        let current: i64 = match tx.query_opt("SELECT version FROM sora_shim_schema", &[]).await? {
            Some(row) => row.try_get(0)?,
            None => {
                tx.execute("INSERT INTO sora_shim_schema (version) VALUES (0)", &[])
                    .await?;
                0
            }
        };
        let known = MIGRATIONS.len() as i64;
        if current > known {
            return Err(StoreError::Backend(format!(
                "database schema version {current} is newer than this binary knows ({known}); refusing to run"
            )));
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            tx.batch_execute(sql).await?;
            tracing::info!(version = i + 1, "PostgreSQL job store migrated");
        }
        tx.execute("UPDATE sora_shim_schema SET version = $1", &[&known])
            .await?;
        tx.commit().await?;
        Ok(())
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

    async fn select_jobs(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<Job>, StoreError> {
        let client = self.client().await?;
        let stmt = client.prepare_cached(sql).await?;
        client.query(&stmt, params).await?.iter().map(row_to_job).collect()
    }

    async fn select_job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1 AND deleted_at IS NULL");
        Ok(self.select_jobs(&sql, &[&id]).await?.into_iter().next())
    }
}

/// A transaction-scoped advisory lock on `what` (a tenant's cap, a backend's slots): held until commit or
/// rollback, so the count and the write it guards are one step for every replica.
async fn lock(tx: &deadpool_postgres::Transaction<'_>, what: &str) -> Result<(), StoreError> {
    tx.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", &[&what])
        .await?;
    Ok(())
}

/// The job the tenant already created with `job`'s idempotency key, if any.
async fn existing(tx: &deadpool_postgres::Transaction<'_>, job: &Job) -> Result<Option<Inserted>, StoreError> {
    let Some(key) = &job.idempotency_key else {
        return Ok(None);
    };
    let sql = format!("SELECT {JOB_COLUMNS}, deleted_at FROM jobs WHERE tenant = $1 AND idempotency_key = $2");
    let Some(found) = tx.query_opt(&sql, &[&job.tenant, key]).await? else {
        return Ok(None);
    };
    let deleted_at: Option<i64> = found.try_get(JOB_COLUMN_COUNT)?;
    let existing = row_to_job(&found)?;
    Ok(Some(match deleted_at {
        Some(_) => Inserted::Deleted(existing.id),
        None => Inserted::Existing(Box::new(existing)),
    }))
}

fn as_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

#[async_trait]
impl JobStore for PgStore {
    async fn insert_job(&self, job: &Job, max_unfinished: Option<u64>) -> Result<Inserted, StoreError> {
        let row = JobRow::from_job(job)?;
        let (owner, _, until) = self.lease();
        let owner = Some(owner);
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // A replay of a key already used is answered whatever the tenant's count.
        if let Some(found) = existing(&tx, job).await? {
            return Ok(found);
        }
        if let Some(max) = max_unfinished {
            lock(&tx, &format!("tenant:{}", job.tenant)).await?;
            let sql = format!(
                "SELECT COUNT(*) FROM jobs WHERE tenant = $1 AND state NOT IN {FINISHED} AND deleted_at IS NULL"
            );
            let n: i64 = tx.query_one(&sql, &[&job.tenant]).await?.try_get(0)?;
            if n >= i64::try_from(max).unwrap_or(i64::MAX) {
                return Ok(Inserted::OverCap);
            }
        }
        // Racing inserts with one key: the second waits for the first to commit, then inserts nothing and
        // finds the first's job.
        let sql = format!("{INSERT_JOB} ON CONFLICT DO NOTHING");
        if tx.execute(&sql, &insert_params(&row, &owner, &until)).await? == 1 {
            outbox::record_event(&tx, job).await?;
            tx.commit().await?;
            return Ok(Inserted::New);
        }
        existing(&tx, job)
            .await?
            .ok_or_else(|| StoreError::Conflict(job.id.clone()))
    }

    async fn get_job(&self, id: &str) -> Result<Option<Job>, StoreError> {
        self.select_job(id).await
    }

    async fn update_job(&self, job: &Job) -> Result<Job, StoreError> {
        let row = JobRow::from_job(job)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        if tx.execute(UPDATE_JOB, &update_params(&row)).await? == 0 {
            return Err(StoreError::Conflict(job.id.clone()));
        }
        // The webhook event is written with the change that finishes the video, or not at all.
        outbox::record_event(&tx, job).await?;
        tx.commit().await?;
        Ok(Job {
            version: job.version + 1,
            ..job.clone()
        })
    }

    async fn delete_job(&self, id: &str, version: i64) -> Result<(), StoreError> {
        let client = self.client().await?;
        let changed = client
            .execute(
                "UPDATE jobs SET deleted_at = $1, assets_json = '[]', version = version + 1 \
                 WHERE id = $2 AND version = $3 AND deleted_at IS NULL",
                &[&crate::video::now_unix(), &id, &version],
            )
            .await?;
        if changed == 0 {
            return Err(StoreError::Conflict(id.to_owned()));
        }
        Ok(())
    }

    async fn list_jobs(
        &self,
        tenant: &str,
        after: Option<&str>,
        limit: usize,
        order: Order,
    ) -> Result<Vec<Job>, StoreError> {
        let (cmp, dir) = match order {
            Order::Asc => (">", "ASC"),
            Order::Desc => ("<", "DESC"),
        };
        let limit = as_limit(limit);
        match after {
            Some(after) => {
                let sql = format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE tenant = $1 AND deleted_at IS NULL \
                     AND seq {cmp} (SELECT seq FROM jobs WHERE id = $2) ORDER BY seq {dir} LIMIT $3"
                );
                self.select_jobs(&sql, &[&tenant, &after, &limit]).await
            }
            None => {
                let sql = format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE tenant = $1 AND deleted_at IS NULL \
                     ORDER BY seq {dir} LIMIT $2"
                );
                self.select_jobs(&sql, &[&tenant, &limit]).await
            }
        }
    }

    async fn export_jobs(
        &self,
        tenant: Option<&str>,
        since: Option<i64>,
        after: i64,
        limit: usize,
    ) -> Result<Vec<(i64, ExportedJob)>, StoreError> {
        let sql = format!(
            "SELECT {JOB_COLUMNS}, seq, deleted_at FROM jobs WHERE seq > $1 AND ($2::TEXT IS NULL OR tenant = $2) \
             AND ($3::BIGINT IS NULL OR created_at >= $3) ORDER BY seq LIMIT $4"
        );
        let client = self.client().await?;
        let rows = client.query(&sql, &[&after, &tenant, &since, &as_limit(limit)]).await?;
        rows.iter()
            .map(|row| {
                let job = row_to_job(row)?;
                let seq: i64 = row.try_get(JOB_COLUMN_COUNT)?;
                let deleted_at: Option<i64> = row.try_get(JOB_COLUMN_COUNT + 1)?;
                Ok((seq, ExportedJob { job, deleted_at }))
            })
            .collect()
    }

    async fn import_job(&self, exported: &ExportedJob) -> Result<bool, StoreError> {
        let row = JobRow::from_job(&exported.job)?;
        let (owner, until) = (None, 0);
        let client = self.client().await?;
        let sql = format!("{INSERT_JOB} ON CONFLICT DO NOTHING");
        let inserted = client.execute(&sql, &insert_params(&row, &owner, &until)).await? == 1;
        if inserted && exported.deleted_at.is_some() {
            client
                .execute(
                    "UPDATE jobs SET deleted_at = $1 WHERE id = $2",
                    &[&exported.deleted_at, &exported.job.id],
                )
                .await?;
        }
        Ok(inserted)
    }

    async fn list_characters(&self, tenant: Option<&str>) -> Result<Vec<Character>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, tenant, name, created_at, video_key FROM characters \
                 WHERE ($1::TEXT IS NULL OR tenant = $1) ORDER BY created_at, id",
                &[&tenant],
            )
            .await?;
        rows.iter().map(character).collect()
    }

    async fn import_character(&self, c: &Character) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "INSERT INTO characters (id, tenant, name, created_at, video_key) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT DO NOTHING",
                &[&c.id, &c.tenant, &c.name, &c.created_at, &c.video_key],
            )
            .await?;
        Ok(n == 1)
    }

    async fn expired_jobs(&self, now: i64, limit: usize) -> Result<Vec<Job>, StoreError> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs WHERE expires_at IS NOT NULL AND expires_at <= $1 \
             AND assets_json <> '[]' AND deleted_at IS NULL ORDER BY expires_at LIMIT $2"
        );
        self.select_jobs(&sql, &[&now, &as_limit(limit)]).await
    }

    async fn unfinished_jobs(&self) -> Result<Vec<Unfinished>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT id, state, backend FROM jobs WHERE state NOT IN {FINISHED} AND deleted_at IS NULL ORDER BY seq"
        );
        client.query(&sql, &[]).await?.iter().map(unfinished).collect()
    }

    async fn shadow_pairs(&self) -> Result<Vec<(Job, Job)>, StoreError> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE shadow_of IS NOT NULL ORDER BY seq ASC");
        let shadows = self.select_jobs(&sql, &[]).await?;
        let mut pairs = Vec::with_capacity(shadows.len());
        for shadow in shadows {
            let Some(primary_id) = shadow.shadow_of.clone() else {
                continue;
            };
            if let Some(primary) = self.select_job(&primary_id).await? {
                pairs.push((primary, shadow));
            }
        }
        Ok(pairs)
    }

    async fn insert_character(&self, c: &Character) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO characters (id, tenant, name, created_at, video_key) VALUES ($1, $2, $3, $4, $5)",
                &[&c.id, &c.tenant, &c.name, &c.created_at, &c.video_key],
            )
            .await?;
        Ok(())
    }

    async fn get_character(&self, id: &str) -> Result<Option<Character>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT id, tenant, name, created_at, video_key FROM characters WHERE id = $1",
                &[&id],
            )
            .await?;
        row.as_ref().map(character).transpose()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client.query_one("SELECT 1", &[]).await?;
        Ok(())
    }

    async fn count_unfinished(&self, tenant: &str) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let sql =
            format!("SELECT COUNT(*) FROM jobs WHERE tenant = $1 AND state NOT IN {FINISHED} AND deleted_at IS NULL");
        let n: i64 = client.query_one(&sql, &[&tenant]).await?.try_get(0)?;
        Ok(n.max(0) as u64)
    }

    async fn queue_depth(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let client = self.client().await?;
        let sql = format!(
            "SELECT state, COUNT(*) FROM jobs WHERE state NOT IN {FINISHED} AND deleted_at IS NULL GROUP BY state"
        );
        client
            .query(&sql, &[])
            .await?
            .iter()
            .map(|r| Ok((r.try_get::<_, String>(0)?, r.try_get::<_, i64>(1)?.max(0) as u64)))
            .collect()
    }

    async fn pending_events(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        let client = self.client().await?;
        outbox::pending_events(&client, limit).await
    }

    async fn fan_out(&self, event: &Event, deliveries: &[Delivery]) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        outbox::fan_out(&mut client, event, deliveries).await
    }

    async fn claim_due_deliveries(
        &self,
        now_ms: i64,
        hold_until_ms: i64,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let mut client = self.client().await?;
        outbox::claim_due_deliveries(&mut client, now_ms, hold_until_ms, limit).await
    }

    async fn update_delivery(&self, delivery: &Delivery) -> Result<(), StoreError> {
        let client = self.client().await?;
        outbox::update_delivery(&client, delivery).await
    }

    async fn list_deliveries(
        &self,
        video_id: Option<&str>,
        state: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Delivery>, StoreError> {
        let client = self.client().await?;
        outbox::list_deliveries(&client, video_id, state, limit).await
    }

    async fn claim_unfinished(&self) -> Result<Vec<Unfinished>, StoreError> {
        let (owner, now, until) = self.lease();
        let client = self.client().await?;
        // Rows another replica is writing right now are skipped, not waited for: they are its (or the next
        // sweep's).
        let sql = format!(
            "WITH mine AS (SELECT id FROM jobs WHERE state NOT IN {FINISHED} AND deleted_at IS NULL \
             AND (lease_owner IS NULL OR lease_owner = $1 OR lease_until_ms < $2) FOR UPDATE SKIP LOCKED) \
             UPDATE jobs j SET lease_owner = $1, lease_until_ms = $3 FROM mine WHERE j.id = mine.id \
             RETURNING j.id, j.state, j.backend, j.seq"
        );
        let rows = client.query(&sql, &[&owner, &now, &until]).await?;
        let mut claimed = rows
            .iter()
            .map(|r| Ok((r.try_get::<_, i64>(3)?, unfinished(r)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        claimed.sort_by_key(|(seq, _)| *seq);
        Ok(claimed.into_iter().map(|(_, u)| u).collect())
    }

    async fn claim_job(&self, id: &str) -> Result<bool, StoreError> {
        let (owner, now, until) = self.lease();
        let client = self.client().await?;
        let sql = format!(
            "UPDATE jobs SET lease_owner = $1, lease_until_ms = $3 WHERE id = $4 AND state NOT IN {FINISHED} \
             AND deleted_at IS NULL AND (lease_owner IS NULL OR lease_owner = $1 OR lease_until_ms < $2)"
        );
        Ok(client.execute(&sql, &[&owner, &now, &until, &id]).await? == 1)
    }

    async fn release_leases(&self) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "UPDATE jobs SET lease_owner = NULL, lease_until_ms = 0 WHERE lease_owner = $1",
                &[&self.replica.id],
            )
            .await?;
        client
            .execute("DELETE FROM replicas WHERE id = $1", &[&self.replica.id])
            .await?;
        Ok(())
    }

    async fn start_submit(&self, job: &Job, max_at_backend: Option<u32>) -> Result<Option<Job>, StoreError> {
        let row = JobRow::from_job(job)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        if let Some(max) = max_at_backend {
            lock(&tx, &format!("backend:{}", job.backend)).await?;
            let sql = format!(
                "SELECT COUNT(*) FROM jobs WHERE backend = $1 AND state IN {AT_BACKEND} AND deleted_at IS NULL \
                 AND id <> $2"
            );
            let n: i64 = tx.query_one(&sql, &[&job.backend, &job.id]).await?.try_get(0)?;
            if n >= i64::from(max) {
                return Ok(None);
            }
        }
        if tx.execute(UPDATE_JOB, &update_params(&row)).await? == 0 {
            return Err(StoreError::Conflict(job.id.clone()));
        }
        tx.commit().await?;
        Ok(Some(Job {
            version: job.version + 1,
            ..job.clone()
        }))
    }

    async fn heartbeat(&self) -> Result<u32, StoreError> {
        self.beat().await
    }

    async fn record_callback(&self, job_id: &str, payload: &serde_json::Value) -> Result<(), StoreError> {
        self.keep_callback(job_id, payload).await
    }

    async fn take_callback(&self, job_id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        self.pop_callback(job_id).await
    }

    fn callback_wakeups(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<String>> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(cluster::listen(self.config.clone(), self.tls.clone(), tx));
        Some(rx)
    }

    async fn take_rate(&self, key: &str, interval_us: i64, burst: u32) -> Result<Option<RateTaken>, StoreError> {
        self.gcra(key, interval_us, burst).await.map(Some)
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
