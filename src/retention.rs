//! Retention: a finished video's assets are kept until its `expires_at` (completion + `[assets] retention`, or
//! the tenant's own `retention`), as the Sora API's were; then this sweeper deletes them from asset storage and
//! empties the job's asset list. The job record stays, for audit and export: it still reads as `completed`
//! with its `expires_at`, and its content answers 404 as expired.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::assets::AssetStore;
use crate::store::{JobStore, StoreError};
use crate::video::now_unix;

/// Jobs handled per sweep round.
const BATCH: usize = 200;

pub struct Sweeper {
    pub store: Arc<dyn JobStore>,
    pub assets: AssetStore,
    pub every: Duration,
    pub shutdown: CancellationToken,
}

impl Sweeper {
    pub async fn run(self) {
        loop {
            match self.sweep().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(videos = n, "retention: deleted the assets of expired videos"),
                Err(e) => tracing::warn!(error = %e, "retention sweep failed; will try again"),
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.every) => {}
            }
        }
    }

    /// Deletes the assets of every video expired by now; returns how many videos.
    pub async fn sweep(&self) -> Result<usize, StoreError> {
        let mut done = 0;
        loop {
            let expired = self.store.expired_jobs(now_unix(), BATCH).await?;
            if expired.is_empty() {
                return Ok(done);
            }
            let round = expired.len();
            for mut job in expired {
                // Files first, then the record: a crash in between leaves a record pointing at missing files,
                // which the next sweep finishes; never files that no record points at.
                for asset in &job.assets {
                    if let Err(e) = self.assets.delete(&asset.key).await {
                        tracing::warn!(job = %job.id, key = %asset.key, error = %e, "cannot delete an expired asset");
                        return Ok(done);
                    }
                }
                job.assets.clear();
                match self.store.update_job(&job).await {
                    Ok(_) => done += 1,
                    // Changed meanwhile (deleted, say): the next round sees its current state.
                    Err(StoreError::Conflict(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            if round < BATCH {
                return Ok(done);
            }
        }
    }
}
