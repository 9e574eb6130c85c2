//! The concurrency queue: a request over its key's concurrency limit waits (first come,
//! first served, at most `CONCURRENCY_QUEUE_MAX` per key) up to `CONCURRENCY_QUEUE_WAIT_MS`
//! for a slot instead of answering 429 at once, as CRS does for Claude Code's parallel tool
//! calls. Only the head of a key's line asks for a slot (slots are counted in the shared
//! store, so a slot freed by another instance counts too); a client that goes away drops
//! its request's future and with it its place.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::AppError;

/// How often the head of a line asks again for a slot.
const RETRY_EVERY: Duration = Duration::from_millis(25);

/// Why a request left the line without a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueRefusal {
    /// `max_waiting` requests of this key are waiting already.
    Full,
    /// No slot freed within the wait.
    TimedOut,
}

/// One key's line.
#[derive(Default)]
struct Line {
    /// Held by the head of the line; tokio's mutex hands it over in FIFO order.
    turn: tokio::sync::Mutex<()>,
    waiting: AtomicUsize,
}

/// The lines of every key with waiting requests.
pub struct ConcurrencyQueue {
    wait: Duration,
    max_waiting: usize,
    lines: Mutex<HashMap<String, Arc<Line>>>,
}

/// A place in a line; leaving it (served, refused, or dropped with its request) frees it.
struct Place<'a> {
    queue: &'a ConcurrencyQueue,
    key: String,
    line: Arc<Line>,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        if self.line.waiting.fetch_sub(1, Ordering::AcqRel) == 1
            && let Ok(mut lines) = self.queue.lines.lock()
            && lines.get(&self.key).is_some_and(|l| {
                Arc::ptr_eq(l, &self.line) && l.waiting.load(Ordering::Acquire) == 0
            })
        {
            lines.remove(&self.key);
        }
    }
}

impl ConcurrencyQueue {
    pub fn new(wait: Duration, max_waiting: usize) -> ConcurrencyQueue {
        ConcurrencyQueue {
            wait,
            max_waiting,
            lines: Mutex::new(HashMap::new()),
        }
    }

    /// False when requests over the limit are refused at once.
    pub fn enabled(&self) -> bool {
        !self.wait.is_zero()
    }

    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// Requests of `key` waiting now.
    pub fn waiting(&self, key: &str) -> usize {
        self.lines
            .lock()
            .ok()
            .and_then(|l| l.get(key).map(|l| l.waiting.load(Ordering::Acquire)))
            .unwrap_or(0)
    }

    /// Requests of every key waiting now (`/metrics`).
    pub fn waiting_total(&self) -> usize {
        self.lines.lock().map_or(0, |lines| {
            lines
                .values()
                .map(|l| l.waiting.load(Ordering::Acquire))
                .sum()
        })
    }

    /// Waits in `key`'s line; as its head, calls `attempt` until it yields a value or the
    /// wait runs out.
    pub async fn wait_turn<T, F, Fut>(
        &self,
        key: &str,
        mut attempt: F,
    ) -> Result<Result<T, QueueRefusal>, AppError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>, AppError>>,
    {
        let deadline = Instant::now() + self.wait;
        let line = {
            let mut lines = self
                .lines
                .lock()
                .map_err(|_| AppError::Internal("concurrency queue lock poisoned".into()))?;
            lines.entry(key.to_string()).or_default().clone()
        };
        let before = line.waiting.fetch_add(1, Ordering::AcqRel);
        let _place = Place {
            queue: self,
            key: key.to_string(),
            line: line.clone(),
        };
        if before >= self.max_waiting {
            return Ok(Err(QueueRefusal::Full));
        }
        let Ok(_turn) = tokio::time::timeout_at(deadline, line.turn.lock()).await else {
            return Ok(Err(QueueRefusal::TimedOut));
        };
        loop {
            if let Some(v) = attempt().await? {
                return Ok(Ok(v));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Err(QueueRefusal::TimedOut));
            }
            tokio::time::sleep(RETRY_EVERY.min(deadline - now)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[actix_rt::test]
    async fn waiters_are_served_in_order_and_the_line_is_bounded() {
        let queue = Arc::new(ConcurrencyQueue::new(Duration::from_secs(5), 2));
        let free = Arc::new(AtomicBool::new(false));
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..2 {
            let (q, free, order) = (queue.clone(), free.clone(), order.clone());
            tasks.push(actix_rt::spawn(async move {
                q.wait_turn("k", || {
                    let (free, order) = (free.clone(), order.clone());
                    async move {
                        // One slot per attempt: the first to see it free takes it.
                        if free.swap(false, Ordering::AcqRel) {
                            order.lock().unwrap().push(i);
                            Ok(Some(i))
                        } else {
                            Ok(None)
                        }
                    }
                })
                .await
            }));
            // The first is in line before the second arrives.
            while queue.waiting("k") < i + 1 {
                tokio::task::yield_now().await;
            }
        }
        // A third request finds the line full.
        let third = queue.wait_turn("k", || async { Ok(Some(())) }).await;
        assert_eq!(third.unwrap(), Err(QueueRefusal::Full));
        for _ in 0..2 {
            free.store(true, Ordering::Release);
            while free.load(Ordering::Acquire) {
                tokio::task::yield_now().await;
            }
        }
        for t in tasks {
            assert!(t.await.unwrap().unwrap().is_ok());
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1]);
        assert_eq!(queue.waiting("k"), 0);
        assert!(
            queue.lines.lock().unwrap().is_empty(),
            "empty lines are forgotten"
        );
    }

    #[actix_rt::test]
    async fn the_wait_runs_out_and_a_dropped_waiter_leaves_the_line() {
        let queue = ConcurrencyQueue::new(Duration::from_millis(100), 1);
        let r = queue.wait_turn("k", || async { Ok(None::<()>) }).await;
        assert_eq!(r.unwrap(), Err(QueueRefusal::TimedOut));
        assert_eq!(queue.waiting("k"), 0);
        // A waiter whose request is dropped (client gone) frees its place.
        let waiter = queue.wait_turn("k", || async { Ok(None::<()>) });
        let dropped = tokio::time::timeout(Duration::from_millis(10), waiter).await;
        assert!(dropped.is_err());
        assert_eq!(queue.waiting("k"), 0);
        let r = queue.wait_turn("k", || async { Ok(Some(7)) }).await;
        assert_eq!(r.unwrap(), Ok(7));
    }
}
