//! `claude-relay rebuild-cache`: rebuilds every Redis cache and real-time counter of hybrid
//! mode from MySQL.
//!
//! Counters are rebuilt, not copied: the value of each counter set is its durable baseline
//! (`usage_counters` rows named `import:<set>`, which hold imported history that has no
//! archive rows behind it) plus the contribution of every archived request
//! (`usage_records`, through the same `counter_updates` the relay applies per request).
//! This process's own usage journal is archived first; events still in a running relay's
//! journal are not in the archive yet, so the ledger epoch is dropped at the end: every
//! running relay then rebuilds its limit counters from the archive plus its journal (the
//! same recovery as after a Redis wipe), so no event is counted twice or left out. Day / hour / month sets get the lifetime they would
//! have had (counted from their last request) and are left out once expired; rate windows
//! are short-lived and are not rebuilt. Counter sets in Redis that MySQL does not explain
//! are deleted. Then the key and account caches are flushed and filled again.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use super::ops_support::{self, Progress};
use crate::actors::cache_migrate::CounterValue;
use crate::app::Actors;
use crate::config::{Config, StorageMode};
use crate::domain::limits::{Counters, counter_updates};
use crate::domain::pricing::is_opus;
use crate::persistence::ops::{self as queries, BASELINE_PREFIX};

/// Archive rows read per page.
const PAGE: i64 = 5_000;

/// One counter set being summed up.
#[derive(Debug, Clone, Default)]
pub struct Sum {
    pub counters: Counters,
    /// When the set expires (None = never).
    pub expires_at: Option<DateTime<Utc>>,
}

/// Every counter set the archive explains: name → sum and expiry.
pub async fn archive_sums(
    actors: &Actors,
    config: &Config,
) -> Result<HashMap<String, Sum>, String> {
    let keys = actors
        .router
        .list_keys(true)
        .await
        .map_err(|e| format!("cannot list keys: {e}"))?;
    let weekly: HashMap<String, (u8, u8)> = keys
        .iter()
        .map(|k| (k.id.clone(), (k.weekly_reset_day, k.weekly_reset_hour)))
        .collect();
    let mut sums: HashMap<String, Sum> = HashMap::new();
    let mut after = 0i64;
    let mut progress = Progress::new("archive", 0);
    loop {
        let page = actors
            .store
            .exec_with_timeout(Some(std::time::Duration::from_secs(60)), move |c| {
                Box::pin(queries::archive_page(c, after, PAGE))
            })
            .await
            .map_err(|e| format!("cannot read the usage archive: {e}"))?;
        let Some((last, _)) = page.last() else {
            break;
        };
        after = *last;
        progress.inc(page.len() as u64);
        for (_, e) in &page {
            let w = weekly.get(&e.api_key_id).copied().unwrap_or((1, 0));
            for u in counter_updates(e, config.timezone_offset_hours, is_opus(&e.model), w, None) {
                let s = sums.entry(u.name).or_default();
                s.counters.add(&u.delta);
                let exp = u
                    .ttl_seconds
                    .map(|t| e.created_at + chrono::Duration::seconds(t));
                s.expires_at = match (s.expires_at, exp) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => exp,
                };
            }
        }
        if i64::try_from(page.len()).unwrap_or(i64::MAX) < PAGE {
            break;
        }
    }
    progress.finish();
    Ok(sums)
}

/// The durable baselines (imported history), by counter set name.
pub async fn baselines(actors: &Actors) -> Result<HashMap<String, Sum>, String> {
    let rows = actors
        .store
        .exec(|c| Box::pin(queries::counter_rows(c, BASELINE_PREFIX.to_string())))
        .await
        .map_err(|e| format!("cannot read counter baselines: {e}"))?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            Some((
                r.name.strip_prefix(BASELINE_PREFIX)?.to_string(),
                Sum {
                    counters: r.counters,
                    expires_at: r.expires_at.map(|t| t.and_utc()),
                },
            ))
        })
        .collect())
}

/// What the Redis counters must hold: baseline + archive, expired sets left out.
pub async fn target_counters(
    actors: &Actors,
    config: &Config,
) -> Result<Vec<CounterValue>, String> {
    let mut sums = archive_sums(actors, config).await?;
    for (name, b) in baselines(actors).await? {
        let s = sums.entry(name).or_default();
        s.counters.add(&b.counters);
        s.expires_at = match (s.expires_at, b.expires_at) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ if s.counters == b.counters => b.expires_at,
            _ => None,
        };
    }
    let now = Utc::now();
    let mut out: Vec<CounterValue> = sums
        .into_iter()
        .filter_map(|(name, s)| {
            let ttl_ms = match s.expires_at {
                Some(t) => {
                    let ms = (t - now).num_milliseconds();
                    if ms <= 0 {
                        return None;
                    }
                    Some(ms)
                }
                None => None,
            };
            Some(CounterValue {
                name,
                counters: s.counters,
                ttl_ms,
            })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// What one rebuild did.
#[derive(Debug, Default)]
pub struct Rebuilt {
    pub counters: usize,
    pub stale_counters: usize,
    pub cache_entries_flushed: usize,
    pub keys_cached: usize,
    pub accounts_cached: usize,
}

/// Rebuilds counters and caches of a hybrid deployment (actors of the hybrid mode).
pub async fn rebuild(actors: &Actors, config: &Config) -> Result<Rebuilt, String> {
    if !actors
        .router
        .drain_usage(std::time::Duration::from_secs(10))
        .await
    {
        eprintln!(
            "WARNING: usage events of this process's journal are not archived yet; the rebuilt \
             counters do not include them until they are archived: run rebuild-cache again"
        );
    }
    let target = target_counters(actors, config).await?;
    let wanted: HashSet<&str> = target.iter().map(|v| v.name.as_str()).collect();
    let existing = actors
        .cache
        .counter_names()
        .await
        .map_err(|e| format!("cannot scan Redis counters: {e}"))?;
    let stale: Vec<String> = existing
        .into_iter()
        .filter(|n| !wanted.contains(n.as_str()))
        .collect();
    let mut progress = Progress::new("counters", target.len() as u64);
    for chunk in target.chunks(500) {
        actors
            .cache
            .write_counter_values(chunk)
            .await
            .map_err(|e| format!("cannot write Redis counters: {e}"))?;
        progress.inc(chunk.len() as u64);
    }
    progress.finish();
    let stale_counters = actors
        .cache
        .delete_names(&stale)
        .await
        .map_err(|e| format!("cannot delete stale Redis counters: {e}"))?;
    // Running relays rebuild their limit counters from the archive plus their journals.
    actors
        .cache
        .drop_epoch()
        .await
        .map_err(|e| format!("cannot drop the ledger epoch: {e}"))?;
    let cache_entries_flushed = actors
        .cache
        .flush_caches()
        .await
        .map_err(|e| format!("cannot flush the Redis cache: {e}"))?;
    let keys = actors
        .router
        .list_keys(false)
        .await
        .map_err(|e| format!("cannot list keys: {e}"))?;
    let mut keys_cached = 0;
    for k in &keys {
        actors
            .cache
            .set_cached_key(k, config.redis_cache_ttl)
            .await
            .map_err(|e| format!("cannot cache key {}: {e}", k.id))?;
        keys_cached += 1;
    }
    let accounts = actors
        .router
        .list_accounts()
        .await
        .map_err(|e| format!("cannot list accounts: {e}"))?;
    actors
        .cache
        .set_cached_accounts(&accounts, config.redis_cache_ttl)
        .await
        .map_err(|e| format!("cannot cache accounts: {e}"))?;
    Ok(Rebuilt {
        counters: target.len(),
        stale_counters,
        cache_entries_flushed,
        keys_cached,
        accounts_cached: accounts.len(),
    })
}

pub async fn run(config: Config) -> Result<(), String> {
    if config.mode != StorageMode::Hybrid {
        return Err(format!(
            "rebuild-cache rebuilds the Redis side of hybrid mode; DATABASE_TYPE is {}",
            config.mode.as_str()
        ));
    }
    let actors = ops_support::start(&config, None).await?;
    let before = actors
        .cache
        .counter_names()
        .await
        .map(|n| n.len())
        .unwrap_or(0);
    println!("before: {before} counter sets in Redis");
    let r = rebuild(&actors, &config).await?;
    println!(
        "rebuilt: {} counter sets written, {} stale deleted; cache: {} entries flushed, {} keys and {} accounts cached",
        r.counters, r.stale_counters, r.cache_entries_flushed, r.keys_cached, r.accounts_cached
    );
    let after = actors
        .cache
        .counter_names()
        .await
        .map(|n| n.len())
        .unwrap_or(0);
    println!("after: {after} counter sets in Redis");
    Ok(())
}
