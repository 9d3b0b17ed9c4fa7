//! What replicas share besides the jobs themselves: heartbeats, provider callbacks passed to a job's owner
//! (LISTEN/NOTIFY), request-rate buckets and daily counts.

use std::time::Duration;

use super::{CALLBACKS_CHANNEL, PgStore};

/// How often the LISTEN connection is asked whether it still answers.
const LISTEN_CHECK_EVERY: Duration = Duration::from_secs(30);
use crate::store::{RateTaken, StoreError};
use crate::video::now_unix_ms;

impl PgStore {
    /// Records this replica as alive; counts the live ones (heartbeat within one lease).
    pub(super) async fn beat(&self) -> Result<u32, StoreError> {
        let now = now_unix_ms();
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO replicas (id, host, pid, started_at_ms, heartbeat_at_ms) VALUES ($1, $2, $3, $4, $4) \
                 ON CONFLICT (id) DO UPDATE SET heartbeat_at_ms = $4",
                &[
                    &self.replica.id,
                    &crate::datadir::hostname(),
                    &i64::from(std::process::id()),
                    &now,
                ],
            )
            .await?;
        // A replica silent for longer than a lease has dropped out; its row goes after ten leases.
        let lease = self.replica.lease_ms();
        client
            .execute(
                "DELETE FROM replicas WHERE heartbeat_at_ms < $1",
                &[&now.saturating_sub(lease.saturating_mul(10))],
            )
            .await?;
        let live: i64 = client
            .query_one(
                "SELECT COUNT(*) FROM replicas WHERE heartbeat_at_ms >= $1",
                &[&now.saturating_sub(lease)],
            )
            .await?
            .try_get(0)?;
        Ok(u32::try_from(live.max(1)).unwrap_or(u32::MAX))
    }

    pub(super) async fn keep_callback(&self, job_id: &str, payload: &serde_json::Value) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "INSERT INTO callbacks (job_id, payload, received_at_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (job_id) DO UPDATE SET payload = excluded.payload, received_at_ms = excluded.received_at_ms",
            &[&job_id, &payload.to_string(), &now_unix_ms()],
        )
        .await?;
        // Delivered at commit, so the owner never looks before the row is there.
        tx.execute("SELECT pg_notify($1, $2)", &[&CALLBACKS_CHANNEL, &job_id])
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn pop_callback(&self, job_id: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt("DELETE FROM callbacks WHERE job_id = $1 RETURNING payload", &[&job_id])
            .await?;
        let Some(row) = row else { return Ok(None) };
        let text: String = row.try_get(0)?;
        serde_json::from_str(&text).map(Some).map_err(|e| StoreError::Corrupt {
            id: job_id.to_owned(),
            reason: format!("callback: {e}"),
        })
    }

    /// GCRA (the generic cell rate algorithm, as `governor` runs it in memory) on one row: the request is
    /// allowed when the bucket's theoretical arrival time, moved on by one interval, is at most `burst`
    /// intervals ahead of now. One statement, so two replicas never both take the last request; the
    /// database's clock, so replicas' clocks do not matter.
    pub(super) async fn gcra(&self, key: &str, interval_us: i64, burst: u32) -> Result<RateTaken, StoreError> {
        let window = interval_us.saturating_mul(i64::from(burst));
        let client = self.client().await?;
        // Prepared once per pooled connection: one round trip per request after that.
        let take = client
            .prepare_cached(
                "WITH now AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::bigint AS us), \
                 taken AS ( \
                     INSERT INTO rate_cells AS c (key, tat_us) SELECT $1, now.us + $2 FROM now WHERE $2 <= $3 \
                     ON CONFLICT (key) DO UPDATE SET tat_us = GREATEST(c.tat_us, excluded.tat_us - $2) + $2 \
                     WHERE GREATEST(c.tat_us, excluded.tat_us - $2) + $2 - $3 <= excluded.tat_us - $2 \
                     RETURNING c.tat_us) \
                 SELECT (SELECT tat_us FROM taken), (SELECT us FROM now)",
            )
            .await?;
        let row = client.query_one(&take, &[&key, &interval_us, &window]).await?;
        let taken: Option<i64> = row.try_get(0)?;
        let now_us: i64 = row.try_get(1)?;
        if let Some(tat_us) = taken {
            return Ok(RateTaken {
                allowed: true,
                tat_us,
                now_us,
            });
        }
        // Refused: read the bucket as it is now (the statement's own snapshot may predate the requests that
        // filled it, which would understate the wait).
        let read = client
            .prepare_cached("SELECT tat_us FROM rate_cells WHERE key = $1")
            .await?;
        let tat_us: Option<i64> = client
            .query_opt(&read, &[&key])
            .await?
            .map(|r| r.try_get(0))
            .transpose()?;
        Ok(RateTaken {
            allowed: false,
            tat_us: tat_us.unwrap_or(now_us),
            now_us,
        })
    }

    pub(super) async fn count_day(&self, key: &str, day: i64, cap: u64) -> Result<bool, StoreError> {
        if cap == 0 {
            return Ok(false);
        }
        let cap = i64::try_from(cap).unwrap_or(i64::MAX);
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // Yesterday stays: a replica whose clock is a little behind may still count toward it.
        tx.execute("DELETE FROM daily_counts WHERE day < $1", &[&(day - 1)])
            .await?;
        let counted = tx
            .execute(
                "INSERT INTO daily_counts AS d (key, day, n) VALUES ($1, $2, 1) \
                 ON CONFLICT (key, day) DO UPDATE SET n = d.n + 1 WHERE d.n < $3",
                &[&key, &day, &cap],
            )
            .await?;
        tx.commit().await?;
        Ok(counted == 1)
    }

    pub(super) async fn add_total(&self, key: &str, n: u64) -> Result<(), StoreError> {
        if n == 0 {
            return Ok(());
        }
        let n = i64::try_from(n).unwrap_or(i64::MAX);
        self.client()
            .await?
            .execute(
                "INSERT INTO totals AS t (key, n) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET n = t.n + excluded.n",
                &[&key, &n],
            )
            .await?;
        Ok(())
    }

    pub(super) async fn read_totals(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT key, n FROM totals WHERE left(key, char_length($1)) = $1 ORDER BY key",
                &[&prefix],
            )
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<_, String>(0)?, r.try_get::<_, i64>(1)?.max(0) as u64)))
            .collect()
    }
}

/// Keeps one connection LISTENing on [`CALLBACKS_CHANNEL`] and passes each job id on, reconnecting after a
/// failure, until the receiver is dropped. A notification missed while reconnecting costs only latency: the
/// owner also looks for a waiting callback at each of its polls.
pub(super) async fn listen(
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    tx: tokio::sync::mpsc::UnboundedSender<String>,
) {
    use futures_util::StreamExt;
    // An idle connection that a network fault or a failover cut silently would otherwise pass for alive for
    // hours (the OS's default keepalive): probe it, and ask the server now and then.
    let mut config = config;
    config.keepalives_idle(Duration::from_secs(30));
    let mut retry = Duration::from_secs(1);
    while !tx.is_closed() {
        match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                let (found, mut notifications) = tokio::sync::mpsc::unbounded_channel::<String>();
                // The connection object delivers notifications; it must be polled for the client to work at all.
                let driver = tokio::spawn(async move {
                    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                                let _ = found.send(n.payload().to_owned());
                            }
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "PostgreSQL LISTEN connection failed; reconnecting");
                                break;
                            }
                        }
                    }
                });
                if let Err(e) = client.batch_execute(&format!("LISTEN {CALLBACKS_CHANNEL}")).await {
                    tracing::warn!(error = %e, "cannot LISTEN for provider callbacks");
                } else {
                    retry = Duration::from_secs(1);
                    let mut check =
                        tokio::time::interval_at(tokio::time::Instant::now() + LISTEN_CHECK_EVERY, LISTEN_CHECK_EVERY);
                    loop {
                        tokio::select! {
                            _ = tx.closed() => break,
                            id = notifications.recv() => match id {
                                Some(id) => { let _ = tx.send(id); }
                                None => break,
                            },
                            _ = check.tick() => {
                                let alive = tokio::time::timeout(Duration::from_secs(10), client.simple_query("SELECT 1"));
                                if !matches!(alive.await, Ok(Ok(_))) {
                                    tracing::warn!("PostgreSQL LISTEN connection stopped answering; reconnecting");
                                    break;
                                }
                            }
                        }
                    }
                }
                driver.abort();
            }
            Err(e) => tracing::warn!(error = %e, "cannot open the PostgreSQL LISTEN connection; retrying"),
        }
        tokio::select! {
            _ = tx.closed() => return,
            _ = tokio::time::sleep(retry) => {}
        }
        retry = (retry * 2).min(Duration::from_secs(30));
    }
}
