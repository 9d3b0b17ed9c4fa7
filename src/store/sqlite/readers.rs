//! Read connections: in WAL mode SQLite serves many readers at once, each seeing the last commit, so reads
//! (lists, exports, the worker's sweeps) get one connection per core instead of queueing behind one.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::Connection;
use tokio::sync::Semaphore;

use crate::store::StoreError;

pub(super) struct Readers {
    idle: Arc<Mutex<Vec<Connection>>>,
    /// One permit per connection: a read waits here, as a task, until a connection is free.
    permits: Arc<Semaphore>,
}

impl Readers {
    /// Opens one read connection per core (at least 2, at most 8) on the database at `path`.
    pub(super) fn open(path: &Path) -> Result<Readers, StoreError> {
        let n = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8);
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            let conn = Connection::open(path)?;
            conn.busy_timeout(std::time::Duration::from_secs(5))?;
            conns.push(conn);
        }
        Ok(Readers {
            idle: Arc::new(Mutex::new(conns)),
            permits: Arc::new(Semaphore::new(n)),
        })
    }

    /// Runs `f` on a free read connection, on the blocking pool.
    pub(super) async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Backend("the store's readers are closed".into()))?;
        let idle = Arc::clone(&self.idle);
        tokio::task::spawn_blocking(move || {
            // A permit guarantees a connection; a Vec of connections cannot be left half-changed by a panic.
            let conn = idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let Some(conn) = conn else {
                return Err(StoreError::Backend("no free read connection".into()));
            };
            // The connection goes back to the pool even if `f` panics.
            let result = catch_unwind(AssertUnwindSafe(|| f(&conn)))
                .unwrap_or_else(|_| Err(StoreError::Backend("a store read panicked".into())));
            idle.lock().unwrap_or_else(PoisonError::into_inner).push(conn);
            drop(permit);
            result
        })
        .await
        .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
    }
}
