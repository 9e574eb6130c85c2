//! The ledger's announcement: which epoch each instance counting into Redis has caught up
//! with, so that limit counters are trusted only once every live instance's events are in
//! them (after a wipe, a rebuild holds the archive; each instance adds its own journal's
//! tail when it catches up).

use std::time::Duration;

use super::cache::CacheHandle;
use crate::error::CacheError;
use crate::kv::scripts;

/// What an announcement learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announced {
    /// The epoch in force (`None`: Redis lost its counters).
    pub epoch: Option<String>,
    /// Live instances that have not caught up with it.
    pub behind: u64,
    /// The `run_id` of the server holding the ledger: it changes when a failover promotes a
    /// replica or the server restarts, either of which may have lost the last writes.
    pub server: Option<String>,
}

impl CacheHandle {
    /// Records that `instance` has caught up with `epoch` ("" for none); an instance not
    /// heard of for `live` is not waited for, one not heard of for `forget` is dropped.
    pub async fn announce_ledger(
        &self,
        instance: &str,
        epoch: Option<&str>,
        live: Duration,
        forget: Duration,
    ) -> Result<Announced, CacheError> {
        let keys = (self.keys.ledger_epoch(), self.keys.ledger_instances());
        let args = (
            instance.to_string(),
            epoch.unwrap_or_default().to_string(),
            chrono::Utc::now().timestamp_millis(),
            i64::try_from(live.as_millis()).unwrap_or(i64::MAX),
            i64::try_from(forget.as_millis()).unwrap_or(i64::MAX),
        );
        let (epoch, behind, info): (Option<String>, u64, String) = self
            .exec_with_timeout(Some(super::cache_ops::BACKGROUND_TIMEOUT), move |mut c| {
                Box::pin(async move {
                    let (epoch, behind) = scripts::ANNOUNCE_SCRIPT
                        .key(&keys.0)
                        .key(keys.1)
                        .arg(args.0)
                        .arg(args.1)
                        .arg(args.2)
                        .arg(args.3)
                        .arg(args.4)
                        .invoke_async(&mut c)
                        .await?;
                    let info: String = c
                        .query_beside(redis::cmd("INFO").arg("server"), &keys.0)
                        .await?;
                    Ok((epoch, behind, info))
                })
            })
            .await?;
        let server = info
            .lines()
            .find_map(|l| l.trim().strip_prefix("run_id:"))
            .map(str::to_string);
        Ok(Announced {
            epoch,
            behind,
            server,
        })
    }
}
