//! Polling: wait until a condition holds, with a deadline and a useful failure message.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often `eventually` checks.
const STEP: Duration = Duration::from_millis(50);

/// Calls `check` until it returns `Ok`, and returns that value; panics after `timeout` with
/// `what` and the last `Err` (a description of what was seen instead).
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        match check().await {
            Ok(v) => return v,
            Err(last) => {
                if started.elapsed() > timeout {
                    panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
                }
            }
        }
        tokio::time::sleep(STEP).await;
    }
}

/// Blocking form of `eventually` for plain tests.
pub fn eventually_blocking<T>(
    timeout: Duration,
    what: &str,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let started = Instant::now();
    loop {
        match check() {
            Ok(v) => return v,
            Err(last) => {
                if started.elapsed() > timeout {
                    panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
                }
            }
        }
        std::thread::sleep(STEP);
    }
}
