//! Usage history for reports: the MySQL archive and daily roll-ups in hybrid and mysql mode
//! (503 while MySQL is down), the capped Redis archive lists in redis mode.

use std::collections::BTreeMap;

use actix::prelude::*;
use chrono::NaiveDate;

use super::{RouterActor, RouterHandle, unavailable};
use crate::config::StorageMode;
use crate::domain::limits::Counters;
use crate::domain::usage_event::UsageEvent;
use crate::error::{AppError, CacheError};
use crate::persistence::usage::{self as queries, DailyRow};

/// Events read from the Redis archive for a report (redis mode keeps at most this many).
const ARCHIVE_READ: usize = 100_000;

/// Daily roll-up rows in `from..=to` (local dates), optionally for one key or account.
#[derive(Message)]
#[rtype(result = "Result<Vec<DailyRow>, AppError>")]
pub struct DailyUsage {
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub key_id: Option<String>,
    pub account_id: Option<String>,
}

/// The newest archive rows of a key, newest first.
#[derive(Message)]
#[rtype(result = "Result<Vec<UsageEvent>, AppError>")]
pub struct RecentUsage {
    pub key_id: String,
    pub limit: usize,
}

impl RouterActor {
    pub(super) fn history_primary(&self) -> Result<(), AppError> {
        match self.config.mode {
            StorageMode::Redis if !self.redis_up() => Err(unavailable("redis")),
            StorageMode::Hybrid | StorageMode::Mysql if !self.mysql_up() => {
                Err(unavailable("mysql"))
            }
            _ => Ok(()),
        }
    }
}

fn decode_events(raw: Vec<String>) -> Result<Vec<UsageEvent>, AppError> {
    raw.iter()
        .map(|r| {
            serde_json::from_str::<UsageEvent>(r)
                .map_err(|e| AppError::from(CacheError::Decode(e.to_string())))
        })
        .collect()
}

/// Rolls archive events up per (local date, key, account, model), as `usage_daily` does.
fn roll_up(events: &[UsageEvent], msg: &DailyUsage, offset_hours: i32) -> Vec<DailyRow> {
    let mut rows: BTreeMap<(NaiveDate, &str, &str, &str), Counters> = BTreeMap::new();
    for e in events {
        let date = e.local_date(offset_hours);
        if date < msg.from
            || date > msg.to
            || msg.key_id.as_ref().is_some_and(|k| *k != e.api_key_id)
            || msg.account_id.as_ref().is_some_and(|a| *a != e.account_id)
        {
            continue;
        }
        rows.entry((date, &e.api_key_id, &e.account_id, &e.model))
            .or_default()
            .add(&Counters::of_event(e, 1));
    }
    rows.into_iter()
        .map(|((date, key, account, model), counters)| DailyRow {
            date,
            api_key_id: key.to_string(),
            account_id: account.to_string(),
            model: model.to_string(),
            counters,
        })
        .collect()
}

impl Handler<DailyUsage> for RouterActor {
    type Result = ResponseFuture<Result<Vec<DailyRow>, AppError>>;

    fn handle(&mut self, msg: DailyUsage, _ctx: &mut Self::Context) -> Self::Result {
        if let Err(e) = self.history_primary() {
            return Box::pin(async move { Err(e) });
        }
        let (mode, store, cache) = (self.config.mode, self.store.clone(), self.cache.clone());
        let offset = self.config.timezone_offset_hours;
        Box::pin(async move {
            match mode {
                StorageMode::Redis => {
                    let raw = match &msg.key_id {
                        Some(k) => cache.recent_records(k, ARCHIVE_READ).await?,
                        None => cache.archive_records(ARCHIVE_READ).await?,
                    };
                    Ok(roll_up(&decode_events(raw)?, &msg, offset))
                }
                _ => Ok(store
                    .exec_report(move |c| {
                        Box::pin(queries::daily_rows(
                            c,
                            msg.from,
                            msg.to,
                            msg.key_id,
                            msg.account_id,
                        ))
                    })
                    .await?),
            }
        })
    }
}

impl Handler<RecentUsage> for RouterActor {
    type Result = ResponseFuture<Result<Vec<UsageEvent>, AppError>>;

    fn handle(&mut self, msg: RecentUsage, _ctx: &mut Self::Context) -> Self::Result {
        if let Err(e) = self.history_primary() {
            return Box::pin(async move { Err(e) });
        }
        let (mode, store, cache) = (self.config.mode, self.store.clone(), self.cache.clone());
        Box::pin(async move {
            match mode {
                StorageMode::Redis => {
                    decode_events(cache.recent_records(&msg.key_id, msg.limit).await?)
                }
                _ => Ok(store
                    .exec_report(move |c| {
                        Box::pin(queries::recent_for_key(
                            c,
                            msg.key_id,
                            i64::try_from(msg.limit).unwrap_or(i64::MAX),
                        ))
                    })
                    .await?),
            }
        })
    }
}

impl RouterHandle {
    pub async fn daily_usage(
        &self,
        from: NaiveDate,
        to: NaiveDate,
        key_id: Option<String>,
        account_id: Option<String>,
    ) -> Result<Vec<DailyRow>, AppError> {
        self.ask(DailyUsage {
            from,
            to,
            key_id,
            account_id,
        })
        .await?
    }

    pub async fn recent_usage(
        &self,
        key_id: &str,
        limit: usize,
    ) -> Result<Vec<UsageEvent>, AppError> {
        self.ask(RecentUsage {
            key_id: key_id.to_string(),
            limit,
        })
        .await?
    }
}
