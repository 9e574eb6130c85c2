//! The audit log through the router: MySQL `audit_log` in hybrid and mysql mode, a capped
//! Redis list in redis mode.

use actix::prelude::*;

use super::{RouterActor, RouterHandle, unavailable};
use crate::config::StorageMode;
use crate::domain::audit::{AuditEntry, AuditFilter};
use crate::error::{AppError, CacheError};
use crate::persistence::audit as queries;

/// Appends one (already masked) entry.
#[derive(Message)]
#[rtype(result = "Result<(), AppError>")]
pub struct RecordAudit {
    pub entry: AuditEntry,
}

/// Reads entries, newest first, with the number matching in all.
#[derive(Message)]
#[rtype(result = "Result<(Vec<AuditEntry>, i64), AppError>")]
pub struct ListAudit {
    pub filter: AuditFilter,
}

impl RouterActor {
    fn audit_primary(&self) -> Result<(), AppError> {
        match self.config.mode {
            StorageMode::Redis if !self.redis_up() => Err(unavailable("redis")),
            StorageMode::Hybrid | StorageMode::Mysql if !self.mysql_up() => {
                Err(unavailable("mysql"))
            }
            _ => Ok(()),
        }
    }
}

impl Handler<RecordAudit> for RouterActor {
    type Result = ResponseFuture<Result<(), AppError>>;

    fn handle(&mut self, msg: RecordAudit, _ctx: &mut Self::Context) -> Self::Result {
        if let Err(e) = self.audit_primary() {
            return Box::pin(async move { Err(e) });
        }
        let (mode, store, cache) = (self.config.mode, self.store.clone(), self.cache.clone());
        Box::pin(async move {
            match mode {
                StorageMode::Redis => {
                    let mut entry = msg.entry;
                    entry.id = chrono::Utc::now().timestamp_micros();
                    let json = serde_json::to_string(&entry)
                        .map_err(|e| AppError::Internal(e.to_string()))?;
                    Ok(cache.audit_push(json).await?)
                }
                _ => {
                    store
                        .exec(move |c| Box::pin(queries::insert(c, msg.entry)))
                        .await?;
                    Ok(())
                }
            }
        })
    }
}

impl Handler<ListAudit> for RouterActor {
    type Result = ResponseFuture<Result<(Vec<AuditEntry>, i64), AppError>>;

    fn handle(&mut self, msg: ListAudit, _ctx: &mut Self::Context) -> Self::Result {
        if let Err(e) = self.audit_primary() {
            return Box::pin(async move { Err(e) });
        }
        let (mode, store, cache) = (self.config.mode, self.store.clone(), self.cache.clone());
        let filter = msg.filter;
        Box::pin(async move {
            match mode {
                StorageMode::Redis => {
                    let matching: Vec<AuditEntry> = cache
                        .audit_entries()
                        .await?
                        .iter()
                        .map(|raw| {
                            serde_json::from_str::<AuditEntry>(raw)
                                .map_err(|e| CacheError::Decode(e.to_string()))
                        })
                        .collect::<Result<Vec<_>, _>>()?
                        .into_iter()
                        .filter(|e| filter.matches(e))
                        .collect();
                    let total = i64::try_from(matching.len()).unwrap_or(i64::MAX);
                    let page = matching
                        .into_iter()
                        .skip(usize::try_from(filter.offset).unwrap_or(0))
                        .take(usize::try_from(filter.limit).unwrap_or(0))
                        .collect();
                    Ok((page, total))
                }
                _ => Ok(store
                    .exec(move |c| Box::pin(queries::list(c, filter)))
                    .await?),
            }
        })
    }
}

impl RouterHandle {
    pub async fn record_audit(&self, entry: AuditEntry) -> Result<(), AppError> {
        self.ask(RecordAudit { entry }).await?
    }
    pub async fn list_audit(
        &self,
        filter: AuditFilter,
    ) -> Result<(Vec<AuditEntry>, i64), AppError> {
        self.ask(ListAudit { filter }).await?
    }
}
