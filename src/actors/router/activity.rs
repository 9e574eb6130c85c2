//! Recent activity for the console's dashboard: requests per minute over the last minutes,
//! from the MySQL archive in hybrid and mysql mode (503 while MySQL is down) and from the
//! capped Redis archive list in redis mode.

use actix::prelude::*;
use chrono::{DateTime, Duration, Utc};

use super::{RouterActor, RouterHandle};
use crate::config::StorageMode;
use crate::domain::usage_event::UsageEvent;
use crate::error::{AppError, CacheError};
use crate::persistence::activity as queries;

/// Events read from the Redis archive for the per-minute counts (redis mode).
const ARCHIVE_READ: usize = 100_000;

/// Requests per minute for the `minutes` whole minutes up to now, oldest first.
#[derive(Message)]
#[rtype(result = "Result<Vec<i64>, AppError>")]
pub struct RequestsPerMinute {
    pub minutes: u32,
}

/// Puts `(minutes after since, requests)` pairs into `minutes` buckets (others dropped).
fn buckets(pairs: impl Iterator<Item = (i64, i64)>, minutes: u32) -> Vec<i64> {
    let mut out = vec![0; usize::try_from(minutes).unwrap_or(0)];
    for (minute, n) in pairs {
        if let Some(slot) = usize::try_from(minute).ok().and_then(|m| out.get_mut(m)) {
            *slot += n;
        }
    }
    out
}

/// The start of the oldest bucket: `minutes` whole minutes before the end of this minute.
fn window_start(now: DateTime<Utc>, minutes: u32) -> DateTime<Utc> {
    let this_minute = now.timestamp().div_euclid(60) * 60;
    let start = this_minute - (i64::from(minutes) - 1) * 60;
    DateTime::from_timestamp(start, 0).unwrap_or(now - Duration::minutes(i64::from(minutes)))
}

impl Handler<RequestsPerMinute> for RouterActor {
    type Result = ResponseFuture<Result<Vec<i64>, AppError>>;

    fn handle(&mut self, msg: RequestsPerMinute, _ctx: &mut Self::Context) -> Self::Result {
        if let Err(e) = self.history_primary() {
            return Box::pin(async move { Err(e) });
        }
        let (mode, store, cache) = (self.config.mode, self.store.clone(), self.cache.clone());
        let since = window_start(Utc::now(), msg.minutes);
        Box::pin(async move {
            match mode {
                StorageMode::Redis => {
                    let raw = cache.archive_records(ARCHIVE_READ).await?;
                    let mut pairs = Vec::new();
                    for r in raw {
                        let e = serde_json::from_str::<UsageEvent>(&r)
                            .map_err(|e| AppError::from(CacheError::Decode(e.to_string())))?;
                        if e.created_at >= since {
                            pairs.push(((e.created_at - since).num_minutes(), 1));
                        }
                    }
                    Ok(buckets(pairs.into_iter(), msg.minutes))
                }
                _ => {
                    let naive = since.naive_utc();
                    let pairs = store
                        .exec(move |c| Box::pin(queries::requests_per_minute(c, naive)))
                        .await?;
                    Ok(buckets(pairs.into_iter(), msg.minutes))
                }
            }
        })
    }
}

impl RouterHandle {
    /// Archived requests per minute over the last `minutes` minutes, oldest first.
    pub async fn requests_per_minute(&self, minutes: u32) -> Result<Vec<i64>, AppError> {
        self.ask(RequestsPerMinute { minutes }).await?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_land_in_their_minute_and_strays_are_dropped() {
        let got = buckets([(0, 2), (2, 1), (2, 3), (-1, 9), (3, 7)].into_iter(), 3);
        assert_eq!(got, vec![2, 0, 4]);
    }

    #[test]
    fn the_window_ends_with_the_current_minute() {
        let now = DateTime::from_timestamp(600 + 42, 0).unwrap();
        assert_eq!(window_start(now, 1).timestamp(), 600);
        assert_eq!(window_start(now, 60).timestamp(), 600 - 59 * 60);
    }
}
