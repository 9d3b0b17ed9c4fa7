//! The local renderer's slots (`concurrent_renders`), handed out oldest job first.
//!
//! A plain semaphore serves whoever asks first, and after a restart that is whichever resumed task the runtime
//! happens to poll first: a job that was still queued could take the slot of one that was already rendering.
//! Here, jobs the worker found at this backend at start-up ([`RenderQueue::claim`], oldest first) go before any
//! other, and a slot is held for each of them until it is resubmitted; the others are served by creation time.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// A claimed job that has not come back within this long (moved to another backend, say) stops holding a slot.
const CLAIM_HOLD: Duration = Duration::from_secs(60);

/// Who goes first: claimed jobs (in the order claimed), then the rest by creation time; the id breaks ties.
type Key = (u8, i64, String);

pub struct RenderQueue {
    inner: Mutex<Inner>,
}

struct Inner {
    free: usize,
    /// Claimed jobs not yet resubmitted: their place in line, and when they were claimed.
    expected: BTreeMap<String, (Key, Instant)>,
    waiting: BTreeMap<Key, oneshot::Sender<()>>,
    claims: i64,
}

/// A render slot; dropping it hands the slot to the next job in line.
pub struct Slot {
    queue: Arc<RenderQueue>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut inner = self.queue.lock();
        inner.free += 1;
        inner.dispatch();
    }
}

impl RenderQueue {
    pub fn new(slots: usize) -> Arc<RenderQueue> {
        Arc::new(RenderQueue {
            inner: Mutex::new(Inner {
                free: slots.max(1),
                expected: BTreeMap::new(),
                waiting: BTreeMap::new(),
                claims: 0,
            }),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing in the critical sections can panic halfway; a poisoned lock still holds consistent counts.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A job that was at this backend before a restart: it goes ahead of every job not claimed.
    pub fn claim(&self, job_id: &str) {
        let mut inner = self.lock();
        let key = (0, inner.claims, job_id.to_owned());
        inner.claims += 1;
        inner.expected.insert(job_id.to_owned(), (key, Instant::now()));
    }

    /// A job that will not render here after all (finished, failed, deleted): stop holding a slot for it.
    pub fn forget(&self, job_id: &str) {
        let mut inner = self.lock();
        if inner.expected.remove(job_id).is_some() {
            inner.dispatch();
        }
    }

    /// Waits for a slot, in line by the rule above. `None` only if the queue is gone.
    pub async fn acquire(self: &Arc<Self>, job_id: &str, created_at_ms: i64) -> Option<Slot> {
        let (tx, rx) = oneshot::channel();
        {
            let mut inner = self.lock();
            let key = match inner.expected.remove(job_id) {
                Some((key, _)) => key,
                None => (1, created_at_ms, job_id.to_owned()),
            };
            inner.waiting.insert(key, tx);
            inner.dispatch();
        }
        rx.await.ok()?;
        Some(Slot {
            queue: Arc::clone(self),
        })
    }
}

impl Inner {
    /// Hands free slots to the first in line; a slot whose first in line is a claimed job that has not come back
    /// yet stays free for it.
    fn dispatch(&mut self) {
        let now = Instant::now();
        self.expected.retain(|_, (_, at)| now.duration_since(*at) < CLAIM_HOLD);
        while self.free > 0 {
            let first_expected = self.expected.values().map(|(k, _)| k).min();
            let Some(first_waiting) = self.waiting.keys().next() else {
                return;
            };
            if first_expected.is_some_and(|e| e < first_waiting) {
                return;
            }
            let Some((_, tx)) = self.waiting.pop_first() else {
                return;
            };
            self.free -= 1;
            if tx.send(()).is_err() {
                // The render was abandoned while it waited: the slot goes to the next one.
                self.free += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[tokio::test]
    async fn claimed_jobs_go_first_and_their_slot_waits_for_them() {
        let q = RenderQueue::new(1);
        q.claim("was_running");
        // A newer job asks first: it must wait although the slot is free.
        let q2 = Arc::clone(&q);
        let newer = tokio::spawn(async move { q2.acquire("queued", 10).await.map(|_slot| ()) });
        tokio::task::yield_now().await;
        assert!(!newer.is_finished());
        let first = q.acquire("was_running", 20).await.unwrap();
        assert!(!newer.is_finished());
        drop(first);
        newer.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn unclaimed_jobs_are_served_oldest_first() {
        let q = RenderQueue::new(1);
        let busy = q.acquire("a", 1).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for (id, created) in [("newest", 30), ("oldest", 10), ("middle", 20)] {
            let (q, order) = (Arc::clone(&q), Arc::clone(&order));
            tasks.push(tokio::spawn(async move {
                let _slot = q.acquire(id, created).await.unwrap();
                order.lock().unwrap().push(id);
            }));
            tokio::task::yield_now().await;
        }
        drop(busy);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), ["oldest", "middle", "newest"]);
    }

    #[tokio::test]
    async fn a_forgotten_claim_frees_its_slot() {
        let q = RenderQueue::new(1);
        q.claim("gone");
        let q2 = Arc::clone(&q);
        let other = tokio::spawn(async move { q2.acquire("other", 5).await.map(|_slot| ()) });
        tokio::task::yield_now().await;
        assert!(!other.is_finished());
        q.forget("gone");
        other.await.unwrap().unwrap();
    }
}
