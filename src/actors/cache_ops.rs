//! The Redis commands of the program, as typed operations on `CacheHandle`: records (redis
//! mode), caches (hybrid), entries with a lifetime, locks, leases, counters and the outbox.

use std::collections::HashMap;

// Maps built for every script call (SipHash cost more than the rest of their lookups).
use foldhash::HashMap as FastMap;
use std::time::Duration;

use redis::AsyncCommands;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::cache::CacheHandle;
use crate::domain::account::Account;
use crate::domain::api_key::ApiKey;
use crate::domain::group::AccountGroup;
use crate::domain::limits::{Admission, AdmissionRequest, CounterUpdate, Counters};
use crate::error::CacheError;
use crate::kv::{KeySpace, scripts};
use crate::ledger::ArchiveBoundary;

/// Newest archive rows kept per key in redis mode.
const RECORDS_PER_KEY: isize = 200;
/// Newest archive rows kept in all in redis mode.
const ARCHIVE_CAP: isize = 100_000;
/// How long the applied-record bitmaps live: longer than any replay can come late.
const APPLIED_BITMAP_TTL_SECS: i64 = 7 * 24 * 3600;
/// Counter sets per fenced rebuild script (each runs atomically: keep them short).
const FENCED_CHUNK: usize = 200;

/// Redis keys of one script call, each named once; a key's index is its place among them.
#[derive(Default)]
struct KeyIndex {
    keys: Vec<String>,
    index: FastMap<String, usize>,
}

impl KeyIndex {
    fn of(&mut self, key: String) -> usize {
        if let Some(i) = self.index.get(&key) {
            return *i;
        }
        self.keys.push(key.clone());
        self.index.insert(key, self.keys.len() - 1);
        self.keys.len() - 1
    }
}

/// The call of `script` with `keys` keys as one `EVALSHA` command, keys and arguments to be
/// added in order. redis-rs's `ScriptInvocation` keeps every key and argument in an
/// allocation of its own and copies them all again into the command it sends; a command
/// keeps them in one buffer. Run it with [`run_script`].
fn evalsha(script: &redis::Script, keys: usize) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(keys);
    cmd
}

/// Runs `call` (made by [`evalsha`] for `script`), loading the script first when Redis does
/// not know it (a restarted or flushed script cache), as `ScriptInvocation` does.
async fn run_script<T: redis::FromRedisValue>(
    c: &mut impl redis::aio::ConnectionLike,
    script: &redis::Script,
    call: &redis::Cmd,
) -> redis::RedisResult<T> {
    match call.query_async(c).await {
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) => {
            script.load_async(c).await?;
            call.query_async(c).await
        }
        answer => answer,
    }
}

/// A script argument before the call is assembled.
enum ScriptArg<'a> {
    Text(&'a str),
    Int(i64),
    /// A key's index in its `KeyIndex`.
    Index(usize),
}

/// One record to apply through `CacheHandle::apply_usage`.
pub struct UsageApply<'a> {
    pub epoch: &'a str,
    pub instance: &'a str,
    pub seq: u64,
    pub updates: &'a [CounterUpdate],
    /// The request's lease: (scope, lease id).
    pub release: Option<(&'a str, &'a str)>,
    /// Redis mode: (key id, event JSON) for the capped archive lists.
    pub archive: Option<(&'a str, &'a str)>,
}

/// What `apply_usage` did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Counted now.
    Now,
    /// Counted earlier (a replay): nothing changed.
    Before,
    /// Redis has no epoch: its counters are gone and must be rebuilt first.
    NoEpoch,
    /// Another epoch is in force: this instance has to catch up with it first.
    OtherEpoch,
}

/// A ledger epoch: its id and, per instance id, where the rebuild found its journal in the
/// archive.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LedgerEpoch {
    pub id: String,
    pub boundaries: HashMap<String, ArchiveBoundary>,
}
/// Newest audit entries kept in redis mode.
const AUDIT_CAP: isize = 10_000;
/// Time-out for bulk work (flush, scans).
const BULK_TIMEOUT: Duration = Duration::from_secs(30);
/// Time-out of the Redis calls off the request path that run all the time (counting round
/// trips, the flush of summed counters, the ledger's announcement); never shorter than
/// `REDIS_TIMEOUT_MS`. They wait out a Redis that stalls for a moment (under load a 2-core
/// machine's Redis was seen answering O(1) commands after up to 250 ms): a counting round
/// trip that gave up after the request path's time-out left its records to be replayed, and
/// two such failures in a row declared Redis down.
pub(crate) const BACKGROUND_TIMEOUT: Duration = Duration::from_secs(2);

fn decode<T: DeserializeOwned>(raw: Option<String>) -> Result<Option<T>, CacheError> {
    raw.map(|s| serde_json::from_str(&s).map_err(|e| CacheError::Decode(e.to_string())))
        .transpose()
}

fn encode<T: Serialize>(value: &T) -> Result<String, CacheError> {
    serde_json::to_string(value).map_err(|e| CacheError::Decode(e.to_string()))
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// The LRANGE stop index that returns the first `n` items (at least one).
fn list_stop(n: usize) -> isize {
    isize::try_from(n.max(1)).unwrap_or(isize::MAX) - 1
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl CacheHandle {
    /// PING; the round trip time.
    pub async fn ping(&self) -> Result<Duration, CacheError> {
        let started = std::time::Instant::now();
        self.exec(|mut c| {
            Box::pin(async move { redis::cmd("PING").query_async::<String>(&mut c).await })
        })
        .await?;
        Ok(started.elapsed())
    }

    async fn get_string(&self, key: String) -> Result<Option<String>, CacheError> {
        self.exec(move |mut c| Box::pin(async move { c.get(key).await }))
            .await
    }

    async fn set_string(
        &self,
        key: String,
        value: String,
        ttl: Option<Duration>,
    ) -> Result<(), CacheError> {
        self.exec(move |mut c| {
            Box::pin(async move {
                match ttl {
                    Some(t) => c.pset_ex(key, value, ttl_ms(t)).await,
                    None => c.set(key, value).await,
                }
            })
        })
        .await
    }

    async fn del(&self, keys: Vec<String>) -> Result<usize, CacheError> {
        if keys.is_empty() {
            return Ok(0);
        }
        self.exec(move |mut c| Box::pin(async move { c.del(keys).await }))
            .await
    }

    // ---- operator accounts (redis mode) ----

    /// Stores the operator account unless it exists; true when created.
    pub async fn insert_admin_if_missing(
        &self,
        username: &str,
        password_hash: &str,
    ) -> Result<bool, CacheError> {
        let key = self.keys.admin_user(username);
        let index = self.keys.admin_index();
        let user = username.to_string();
        let value = serde_json::json!({
            "username": username,
            "passwordHash": password_hash,
            "createdAt": chrono::Utc::now().to_rfc3339(),
        })
        .to_string();
        self.exec(move |mut c| {
            Box::pin(async move {
                let created: bool = c.set_nx(key, value).await?;
                let _: () = c.sadd(index, user).await?;
                Ok(created)
            })
        })
        .await
    }

    /// The stored password hash of an operator (redis mode).
    pub async fn admin_password_hash(&self, username: &str) -> Result<Option<String>, CacheError> {
        let raw: Option<serde_json::Value> =
            decode(self.get_string(self.keys.admin_user(username)).await?)?;
        Ok(raw.and_then(|v| v["passwordHash"].as_str().map(str::to_string)))
    }

    /// Replaces an operator's password hash (redis mode).
    pub async fn set_admin_password_hash(
        &self,
        username: &str,
        hash: &str,
    ) -> Result<(), CacheError> {
        let value = serde_json::json!({
            "username": username,
            "passwordHash": hash,
            "updatedAt": chrono::Utc::now().to_rfc3339(),
        })
        .to_string();
        self.set_string(self.keys.admin_user(username), value, None)
            .await
    }

    // ---- key records (redis mode) ----

    /// Writes a key record, its hash mapping and index entry; drops `old_hash`'s mapping.
    pub async fn put_key(&self, key: &ApiKey, old_hash: Option<String>) -> Result<(), CacheError> {
        let record = self.keys.api_key(&key.id);
        let mapping = self.keys.api_key_hash(&key.key_hash);
        let old_mapping = old_hash
            .filter(|h| *h != key.key_hash)
            .map(|h| self.keys.api_key_hash(&h));
        let index = self.keys.api_key_index();
        let id = key.id.clone();
        let value = encode(key)?;
        self.exec(move |mut c| {
            Box::pin(async move {
                let mut pipe = redis::pipe();
                pipe.atomic()
                    .set(record, value)
                    .ignore()
                    .set(mapping, &id)
                    .ignore()
                    .sadd(index, &id)
                    .ignore();
                if let Some(old) = old_mapping {
                    pipe.del(old).ignore();
                }
                pipe.query_async::<()>(&mut c).await
            })
        })
        .await
    }

    pub async fn get_key(&self, id: &str) -> Result<Option<ApiKey>, CacheError> {
        decode(self.get_string(self.keys.api_key(id)).await?)
    }

    pub async fn get_key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>, CacheError> {
        match self.get_string(self.keys.api_key_hash(hash)).await? {
            Some(id) => self.get_key(&id).await,
            None => Ok(None),
        }
    }

    pub async fn list_keys(&self) -> Result<Vec<ApiKey>, CacheError> {
        self.list_records(self.keys.api_key_index(), KeySpace::api_key)
            .await
    }

    /// Every record whose id is in the set `index` (redis mode), skipping ids whose record
    /// is gone.
    async fn list_records<T: DeserializeOwned>(
        &self,
        index: String,
        record_key: fn(&KeySpace, &str) -> String,
    ) -> Result<Vec<T>, CacheError> {
        let keys = self.keys.clone();
        let raw: Vec<Option<String>> = self
            .exec_with_timeout(Some(BULK_TIMEOUT), move |mut c| {
                Box::pin(async move {
                    let ids: Vec<String> = c.smembers(index).await?;
                    if ids.is_empty() {
                        return Ok(Vec::new());
                    }
                    let records: Vec<String> = ids.iter().map(|id| record_key(&keys, id)).collect();
                    redis::cmd("MGET").arg(records).query_async(&mut c).await
                })
            })
            .await?;
        let mut found = Vec::new();
        for s in raw.into_iter().flatten() {
            found.extend(decode::<T>(Some(s))?);
        }
        Ok(found)
    }

    /// Removes a key record, its mapping and index entry.
    pub async fn delete_key(&self, id: &str, hash: &str) -> Result<(), CacheError> {
        let record = self.keys.api_key(id);
        let mapping = self.keys.api_key_hash(hash);
        let index = self.keys.api_key_index();
        let id = id.to_string();
        self.exec(move |mut c| {
            Box::pin(async move {
                redis::pipe()
                    .atomic()
                    .del(record)
                    .ignore()
                    .del(mapping)
                    .ignore()
                    .srem(index, id)
                    .ignore()
                    .query_async::<()>(&mut c)
                    .await
            })
        })
        .await
    }

    // ---- key cache (hybrid) ----

    pub async fn get_cached_key(&self, hash: &str) -> Result<Option<ApiKey>, CacheError> {
        decode(self.get_string(self.keys.cached_key(hash)).await?)
    }

    pub async fn set_cached_key(&self, key: &ApiKey, ttl: Duration) -> Result<(), CacheError> {
        self.set_string(self.keys.cached_key(&key.key_hash), encode(key)?, Some(ttl))
            .await
    }

    pub async fn drop_cached_keys(&self, hashes: &[String]) -> Result<usize, CacheError> {
        self.del(hashes.iter().map(|h| self.keys.cached_key(h)).collect())
            .await
    }

    // ---- accounts ----

    /// Writes an account record and its index entry (redis mode).
    pub async fn put_account(&self, account: &Account) -> Result<(), CacheError> {
        self.put_indexed(
            self.keys.account(&account.id),
            self.keys.account_index(),
            account.id.clone(),
            encode(account)?,
        )
        .await
    }

    pub async fn get_account(&self, id: &str) -> Result<Option<Account>, CacheError> {
        decode(self.get_string(self.keys.account(id)).await?)
    }

    pub async fn list_accounts(&self) -> Result<Vec<Account>, CacheError> {
        self.list_records(self.keys.account_index(), KeySpace::account)
            .await
    }

    pub async fn delete_account(&self, id: &str) -> Result<(), CacheError> {
        self.delete_indexed(
            self.keys.account(id),
            self.keys.account_index(),
            id.to_string(),
        )
        .await
    }

    /// Writes a record and adds its id to the index set, atomically (redis mode).
    async fn put_indexed(
        &self,
        record: String,
        index: String,
        id: String,
        value: String,
    ) -> Result<(), CacheError> {
        self.exec(move |mut c| {
            Box::pin(async move {
                redis::pipe()
                    .atomic()
                    .set(record, value)
                    .ignore()
                    .sadd(index, id)
                    .ignore()
                    .query_async::<()>(&mut c)
                    .await
            })
        })
        .await
    }

    /// Deletes a record and removes its id from the index set, atomically (redis mode).
    async fn delete_indexed(
        &self,
        record: String,
        index: String,
        id: String,
    ) -> Result<(), CacheError> {
        self.exec(move |mut c| {
            Box::pin(async move {
                redis::pipe()
                    .atomic()
                    .del(record)
                    .ignore()
                    .srem(index, id)
                    .ignore()
                    .query_async::<()>(&mut c)
                    .await
            })
        })
        .await
    }

    // ---- account groups (redis mode) ----

    pub async fn put_group(&self, group: &AccountGroup) -> Result<(), CacheError> {
        self.put_indexed(
            self.keys.account_group(&group.id),
            self.keys.account_group_index(),
            group.id.clone(),
            encode(group)?,
        )
        .await
    }

    pub async fn get_group(&self, id: &str) -> Result<Option<AccountGroup>, CacheError> {
        decode(self.get_string(self.keys.account_group(id)).await?)
    }

    pub async fn list_groups(&self) -> Result<Vec<AccountGroup>, CacheError> {
        self.list_records(self.keys.account_group_index(), KeySpace::account_group)
            .await
    }

    pub async fn delete_group(&self, id: &str) -> Result<(), CacheError> {
        self.delete_indexed(
            self.keys.account_group(id),
            self.keys.account_group_index(),
            id.to_string(),
        )
        .await
    }

    /// The cached snapshot of every account (hybrid).
    pub async fn get_cached_accounts(&self) -> Result<Option<Vec<Account>>, CacheError> {
        decode(self.get_string(self.keys.cached_accounts()).await?)
    }

    pub async fn set_cached_accounts(
        &self,
        accounts: &[Account],
        ttl: Duration,
    ) -> Result<(), CacheError> {
        self.set_string(self.keys.cached_accounts(), encode(&accounts)?, Some(ttl))
            .await
    }

    pub async fn drop_cached_accounts(&self) -> Result<usize, CacheError> {
        self.del(vec![self.keys.cached_accounts()]).await
    }

    /// Deletes every cache entry (not records, counters, sessions or leases); returns how many.
    pub async fn flush_caches(&self) -> Result<usize, CacheError> {
        let pattern = self.keys.cache_pattern();
        let beside = self.keys.cached_accounts();
        self.exec_with_timeout(Some(BULK_TIMEOUT), move |mut c| {
            Box::pin(async move {
                let mut cursor: u64 = 0;
                let mut deleted = 0usize;
                loop {
                    // In a cluster, SCAN runs on the node holding the deployment's keys.
                    let scan = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(500)
                        .clone();
                    let (next, batch): (u64, Vec<String>) = c.query_beside(&scan, &beside).await?;
                    if !batch.is_empty() {
                        let n: usize = c.del(batch).await?;
                        deleted += n;
                    }
                    if next == 0 {
                        return Ok(deleted);
                    }
                    cursor = next;
                }
            })
        })
        .await
    }

    // ---- entries with a lifetime: sessions, tokens, locks ----

    pub async fn set_entry(
        &self,
        name: &str,
        value: String,
        ttl: Duration,
    ) -> Result<(), CacheError> {
        self.set_string(self.keys.entry(name), value, Some(ttl))
            .await
    }

    pub async fn get_entry(&self, name: &str) -> Result<Option<String>, CacheError> {
        self.get_string(self.keys.entry(name)).await
    }

    /// Extends a live entry; true when it existed.
    pub async fn touch_entry(&self, name: &str, ttl: Duration) -> Result<bool, CacheError> {
        let key = self.keys.entry(name);
        let ms = i64::try_from(ttl_ms(ttl)).unwrap_or(i64::MAX);
        self.exec(move |mut c| Box::pin(async move { c.pexpire(key, ms).await }))
            .await
    }

    pub async fn delete_entry(&self, name: &str) -> Result<bool, CacheError> {
        Ok(self.del(vec![self.keys.entry(name)]).await? > 0)
    }

    /// Takes a lock unless someone holds it; true when taken.
    pub async fn acquire_lock(
        &self,
        name: &str,
        token: String,
        ttl: Duration,
    ) -> Result<bool, CacheError> {
        let key = self.keys.entry(name);
        let ms = ttl_ms(ttl);
        self.exec(move |mut c| {
            Box::pin(async move {
                let set: Option<String> = redis::cmd("SET")
                    .arg(key)
                    .arg(token)
                    .arg("NX")
                    .arg("PX")
                    .arg(ms)
                    .query_async(&mut c)
                    .await?;
                Ok(set.is_some())
            })
        })
        .await
    }

    /// Releases a lock only if `token` still holds it.
    /// Extends a lock the caller still holds (false: it is gone or someone else's).
    pub async fn renew_lock(
        &self,
        name: &str,
        token: String,
        ttl: Duration,
    ) -> Result<bool, CacheError> {
        let key = self.keys.entry(name);
        let ms = ttl_ms(ttl);
        self.exec(move |mut c| {
            Box::pin(async move {
                let n: i64 = scripts::RENEW_LOCK_SCRIPT
                    .key(key)
                    .arg(token)
                    .arg(ms)
                    .invoke_async(&mut c)
                    .await?;
                Ok(n == 1)
            })
        })
        .await
    }

    pub async fn release_lock(&self, name: &str, token: String) -> Result<bool, CacheError> {
        let key = self.keys.entry(name);
        self.exec(move |mut c| {
            Box::pin(async move {
                let n: i64 = scripts::RELEASE_LOCK_SCRIPT
                    .key(key)
                    .arg(token)
                    .invoke_async(&mut c)
                    .await?;
                Ok(n == 1)
            })
        })
        .await
    }

    // ---- admission and leases ----

    /// Admission (the ADMIT script) plus the sticky-session entry `sticky`, read in the same
    /// round trip and kept alive for `renew_sticky` more (zero: read only). `None` as the
    /// admission: Redis lost its counters (no ledger epoch), nothing was taken.
    pub async fn admit_with_sticky(
        &self,
        req: &AdmissionRequest,
        sticky: Option<&str>,
        renew_sticky: Duration,
        epoch: Option<&str>,
    ) -> Result<(Option<Admission>, Option<String>), CacheError> {
        let sticky_mode = match sticky {
            None => -1,
            Some(_) => i64::try_from(renew_sticky.as_millis()).unwrap_or(i64::MAX),
        };
        if req.concurrency_limit == 0 && req.window.is_none() && req.cost_limits.is_empty() {
            // Nothing to check or take: only the sticky entry, if any, is read (and renewed).
            return self
                .read_sticky(sticky, renew_sticky)
                .await
                .map(|found| (Some(Admission::Granted), found));
        }
        let epoch = epoch.unwrap_or_default().to_string();
        let sticky_key = self.keys.entry(sticky.unwrap_or("sticky:none"));
        let leases = self.keys.leases(&req.lease_scope);
        let window_key = req
            .window
            .as_ref()
            .map(|w| self.keys.named(&w.name))
            .unwrap_or_else(|| self.keys.named("rate:none"));
        let cost_keys: Vec<String> = req
            .cost_limits
            .iter()
            .map(|l| self.keys.named(&l.counter))
            .collect();
        let epoch_key = self.keys.ledger_epoch();
        let req = req.clone();
        self.exec(move |mut c| {
            Box::pin(async move {
                let w = req.window.as_ref();
                let mut call = evalsha(&scripts::ADMIT_SCRIPT, 4 + cost_keys.len());
                call.arg(leases)
                    .arg(window_key)
                    .arg(sticky_key)
                    .arg(epoch_key);
                for k in &cost_keys {
                    call.arg(k);
                }
                call.arg(now_ms())
                    .arg(&req.lease_id)
                    .arg(req.lease_ttl_ms)
                    .arg(req.concurrency_limit)
                    .arg(if w.is_some() { "1" } else { "0" })
                    .arg(w.map_or(0, |w| w.max_requests))
                    .arg(w.map_or(0, |w| w.max_tokens))
                    .arg(w.map_or(0, |w| w.max_cost_micros))
                    .arg(w.map_or(0, |w| w.ttl_seconds))
                    .arg(w.map_or(0, |w| w.resets_in_seconds))
                    .arg(sticky_mode);
                for l in &req.cost_limits {
                    call.arg(l.max_micros);
                }
                call.arg(epoch);
                let (code, retry, sticky): (i64, u64, Option<String>) =
                    run_script(&mut c, &scripts::ADMIT_SCRIPT, &call).await?;
                let admission = match code {
                    -1 | -2 => return Ok((None, sticky)),
                    0 => Admission::Granted,
                    1 => Admission::ConcurrencyExceeded,
                    2 => Admission::RequestsExceeded {
                        retry_after_secs: retry,
                    },
                    3 => Admission::TokensExceeded {
                        retry_after_secs: retry,
                    },
                    4 => Admission::CostExceeded {
                        retry_after_secs: retry,
                    },
                    n => req
                        .cost_limits
                        .get(usize::try_from(n - 5).unwrap_or(usize::MAX))
                        .map_or(Admission::ConcurrencyExceeded, |l| {
                            Admission::CostLimitExceeded(l.kind)
                        }),
                };
                Ok((Some(admission), sticky))
            })
        })
        .await
    }

    /// Reads an entry (`None`: nothing to read, no round trip), renewing its lifetime by
    /// `renew` when non-zero.
    async fn read_sticky(
        &self,
        name: Option<&str>,
        renew: Duration,
    ) -> Result<Option<String>, CacheError> {
        let Some(name) = name else {
            return Ok(None);
        };
        let key = self.keys.entry(name);
        let renew_ms = (!renew.is_zero()).then(|| ttl_ms(renew));
        self.exec(move |mut c| {
            Box::pin(async move {
                match renew_ms {
                    None => c.get(key).await,
                    Some(ms) => c.get_ex(key, redis::Expiry::PX(ms)).await,
                }
            })
        })
        .await
    }

    pub async fn release_lease(&self, scope: &str, lease_id: &str) -> Result<bool, CacheError> {
        let key = self.keys.leases(scope);
        let id = lease_id.to_string();
        self.exec(move |mut c| Box::pin(async move { c.zrem(key, id).await.map(|n: i64| n > 0) }))
            .await
    }

    pub async fn renew_lease(
        &self,
        scope: &str,
        lease_id: &str,
        ttl: Duration,
    ) -> Result<bool, CacheError> {
        let key = self.keys.leases(scope);
        let id = lease_id.to_string();
        let ms = ttl_ms(ttl);
        self.exec(move |mut c| {
            Box::pin(async move {
                let n: i64 = scripts::RENEW_SCRIPT
                    .key(key)
                    .arg(id)
                    .arg(now_ms())
                    .arg(ms)
                    .invoke_async(&mut c)
                    .await?;
                Ok(n == 1)
            })
        })
        .await
    }

    /// Live leases of a scope.
    pub async fn count_leases(&self, scope: &str) -> Result<i64, CacheError> {
        let key = self.keys.leases(scope);
        self.exec(move |mut c| Box::pin(async move { c.zcount(key, now_ms() + 1, "+inf").await }))
            .await
    }

    // ---- counters and the ledger ----

    /// Applies one journal record's counters exactly once (see `kv::scripts::RECORD`) and
    /// releases the request's lease in the same round trip; in redis mode `archive`
    /// (key id, event JSON) also goes to the capped archive lists.
    pub async fn apply_usage(&self, apply: UsageApply<'_>) -> Result<Applied, CacheError> {
        let mut applied = self.apply_usage_batch(std::slice::from_ref(&apply)).await?;
        applied
            .pop()
            .ok_or_else(|| CacheError::Decode("the record script answered nothing".into()))
    }

    /// [`apply_usage`](Self::apply_usage) of several records in one script call (one
    /// round trip, one script run): an answer per record, in order. Records of one epoch go
    /// first through the compact script of the common case, all new; a batch holding a
    /// record applied before (a replay), or records of several epochs, goes through the
    /// script that answers record by record.
    pub async fn apply_usage_batch(
        &self,
        applies: &[UsageApply<'_>],
    ) -> Result<Vec<Applied>, CacheError> {
        if let Some(first) = applies.first()
            && applies.iter().all(|a| a.epoch == first.epoch)
            && let Some(applied) = self.apply_new_usage(first.epoch, applies).await?
        {
            return Ok(applied);
        }
        self.apply_usage_each(applies).await
    }

    /// `kv::scripts::RECORD_NEW`: the records' counter deltas summed per set here, each key
    /// named once. None when a record had been applied before (the script changed nothing).
    async fn apply_new_usage(
        &self,
        epoch: &str,
        applies: &[UsageApply<'_>],
    ) -> Result<Option<Vec<Applied>>, CacheError> {
        let mut keys = KeyIndex::default();
        let mut args: Vec<ScriptArg<'_>> = Vec::with_capacity(8 + 4 * applies.len());
        args.extend([
            ScriptArg::Text(epoch),
            ScriptArg::Int(APPLIED_BITMAP_TTL_SECS),
            ScriptArg::Int(i64::try_from(applies.len()).unwrap_or(i64::MAX)),
        ]);
        let mut sets: Vec<(usize, i64, Counters)> = Vec::new();
        let mut set_of: FastMap<&str, usize> = FastMap::default();
        let mut lists: Vec<(usize, isize, Vec<&str>)> = Vec::new();
        let global_list = self.keys.usage_archive();
        // The records of a batch mostly share their applied bitmap and lease scope: their
        // keys are named once, not per record.
        let mut last_bitmap: Option<(&str, u64, usize)> = None;
        let mut last_scope: Option<(&str, usize)> = None;
        for apply in applies {
            let bitmap = match last_bitmap {
                Some((instance, block, index))
                    if instance == apply.instance && block == apply.seq >> 16 =>
                {
                    index
                }
                _ => {
                    let index = keys.of(self.keys.ledger_applied(apply.instance, apply.seq));
                    last_bitmap = Some((apply.instance, apply.seq >> 16, index));
                    index
                }
            };
            args.push(ScriptArg::Index(bitmap));
            args.push(ScriptArg::Int(
                i64::try_from(apply.seq & 0xFFFF).unwrap_or(0),
            ));
            match apply.release {
                Some((scope, lease_id)) => {
                    let leases = match last_scope {
                        Some((last, index)) if last == scope => index,
                        _ => {
                            let index = keys.of(self.keys.leases(scope));
                            last_scope = Some((scope, index));
                            index
                        }
                    };
                    args.push(ScriptArg::Index(leases));
                    args.push(ScriptArg::Text(lease_id));
                }
                None => args.push(ScriptArg::Int(0)),
            }
            for u in apply.updates {
                let n = *set_of.entry(u.name.as_str()).or_insert_with(|| {
                    let index = keys.of(self.keys.named(&u.name));
                    sets.push((
                        index,
                        u.ttl_seconds.map_or(-1, |t| t.max(1)),
                        Counters::default(),
                    ));
                    sets.len() - 1
                });
                sets[n].2.add(&u.delta);
            }
            if let Some((key_id, event)) = apply.archive {
                for (list, cap) in [
                    (self.keys.usage_records(key_id), RECORDS_PER_KEY),
                    (global_list.clone(), ARCHIVE_CAP),
                ] {
                    let index = keys.of(list);
                    match lists.iter_mut().find(|(i, _, _)| *i == index) {
                        Some((_, _, events)) => events.push(event),
                        None => lists.push((index, cap, vec![event])),
                    }
                }
            }
        }
        args.push(ScriptArg::Int(
            i64::try_from(sets.len()).unwrap_or(i64::MAX),
        ));
        for (index, ttl, sum) in sets {
            args.extend([ScriptArg::Index(index), ScriptArg::Int(ttl)]);
            args.extend(sum.to_array().map(ScriptArg::Int));
        }
        args.push(ScriptArg::Int(
            i64::try_from(lists.len()).unwrap_or(i64::MAX),
        ));
        for (index, cap, events) in lists {
            args.extend([
                ScriptArg::Index(index),
                ScriptArg::Int(i64::try_from(cap).unwrap_or(i64::MAX)),
                ScriptArg::Int(i64::try_from(events.len()).unwrap_or(i64::MAX)),
            ]);
            args.extend(events.into_iter().map(ScriptArg::Text));
        }
        let mut call = evalsha(&scripts::RECORD_NEW_SCRIPT, 1 + keys.keys.len());
        call.arg(self.keys.ledger_epoch());
        for key in keys.keys {
            call.arg(key);
        }
        for arg in args {
            match arg {
                ScriptArg::Text(t) => call.arg(t),
                ScriptArg::Int(n) => call.arg(n),
                // Lua's KEYS[1] is the epoch: the others follow it.
                ScriptArg::Index(i) => call.arg(i + 2),
            };
        }
        let code: i64 = self
            .exec_with_timeout(Some(BACKGROUND_TIMEOUT), move |mut c| {
                Box::pin(
                    async move { run_script(&mut c, &scripts::RECORD_NEW_SCRIPT, &call).await },
                )
            })
            .await?;
        let all = match code {
            0 => Applied::Now,
            -1 => Applied::NoEpoch,
            -2 => Applied::OtherEpoch,
            _ => return Ok(None),
        };
        Ok(Some(vec![all; applies.len()]))
    }

    /// `kv::scripts::RECORD`: every record with its own keys and deltas, answered one by one.
    async fn apply_usage_each(
        &self,
        applies: &[UsageApply<'_>],
    ) -> Result<Vec<Applied>, CacheError> {
        let mut invocation = scripts::RECORD_SCRIPT.key(self.keys.ledger_epoch());
        invocation.arg(applies.len());
        for apply in applies {
            invocation
                .key(self.keys.ledger_applied(apply.instance, apply.seq))
                .key(apply.release.map_or_else(
                    || self.keys.leases("none"),
                    |(scope, _)| self.keys.leases(scope),
                ));
            for u in apply.updates {
                invocation.key(self.keys.named(&u.name));
            }
            if let Some((key_id, _)) = apply.archive {
                invocation
                    .key(self.keys.usage_records(key_id))
                    .key(self.keys.usage_archive());
            }
            invocation
                .arg(apply.epoch)
                .arg(apply.seq & 0xFFFF)
                .arg(apply.release.map_or("", |(_, id)| id))
                .arg(APPLIED_BITMAP_TTL_SECS)
                .arg(apply.updates.len())
                .arg(if apply.archive.is_some() { "1" } else { "0" });
            for u in apply.updates {
                invocation.arg(u.ttl_seconds.map_or(-1, |t| t.max(1)));
                for v in u.delta.to_array() {
                    invocation.arg(v);
                }
            }
            if let Some((_, event)) = apply.archive {
                invocation.arg(event).arg(RECORDS_PER_KEY).arg(ARCHIVE_CAP);
            }
        }
        let codes: Vec<i64> = self
            .exec_with_timeout(Some(BACKGROUND_TIMEOUT), move |mut c| {
                Box::pin(async move { invocation.invoke_async(&mut c).await })
            })
            .await?;
        if codes.len() != applies.len() {
            return Err(CacheError::Decode(format!(
                "the record script answered {} codes for {} records",
                codes.len(),
                applies.len()
            )));
        }
        Ok(codes
            .into_iter()
            .map(|code| match code {
                0 => Applied::Now,
                1 => Applied::Before,
                -1 => Applied::NoEpoch,
                _ => Applied::OtherEpoch,
            })
            .collect())
    }

    /// The ledger epoch in force and, per instance, the last sequence number its rebuild took
    /// from the archive; `None` when Redis holds no epoch (its counters are gone).
    pub async fn ledger_epoch(&self) -> Result<Option<LedgerEpoch>, CacheError> {
        let key = self.keys.ledger_epoch();
        let id: Option<String> = self
            .exec(move |mut c| Box::pin(async move { c.get(key).await }))
            .await?;
        let Some(id) = id else {
            return Ok(None);
        };
        let key = self.keys.ledger_boundaries(&id);
        let fields: HashMap<String, String> = self
            .exec(move |mut c| Box::pin(async move { c.hgetall(key).await }))
            .await?;
        let mut boundaries = HashMap::with_capacity(fields.len());
        for (instance, field) in fields {
            let boundary = ArchiveBoundary::from_field(&field).ok_or_else(|| {
                CacheError::Decode(format!(
                    "ledger epoch {id}: boundary of {instance} unreadable ({field:?})"
                ))
            })?;
            boundaries.insert(instance, boundary);
        }
        Ok(Some(LedgerEpoch { id, boundaries }))
    }

    /// Installs rebuilt limit counters and then a new epoch naming where the rebuild stood
    /// in each instance's journal. The counters are written first: nobody trusts them before
    /// the epoch exists. Every write is fenced by the rebuild lock (`lock`, held by `token`):
    /// false, with nothing more written, when the lock was lost or an epoch appeared.
    pub async fn install_epoch(
        &self,
        epoch: &LedgerEpoch,
        counters: &[crate::actors::cache_migrate::CounterValue],
        lock: &str,
        token: &str,
    ) -> Result<bool, CacheError> {
        let lock = self.keys.entry(lock);
        let epoch_key = self.keys.ledger_epoch();
        for chunk in counters.chunks(FENCED_CHUNK) {
            let mut invocation = scripts::FENCED_COUNTERS_SCRIPT.key(&lock);
            invocation.key(&epoch_key).arg(token);
            for v in chunk {
                invocation.key(self.keys.named(&v.name));
                // As the relay writes them: only the fields that are not zero.
                let fields = v.counters.nonzero_fields();
                invocation
                    .arg(v.ttl_ms.map_or(-1, |ms| ms.max(1)))
                    .arg(fields.len());
                for (field, value) in fields {
                    invocation.arg(field).arg(value);
                }
            }
            let written: i64 = self
                .exec_with_timeout(Some(BULK_TIMEOUT), move |mut c| {
                    Box::pin(async move { invocation.invoke_async(&mut c).await })
                })
                .await?;
            if written == 0 {
                return Ok(false);
            }
        }
        let mut invocation = scripts::FENCED_EPOCH_SCRIPT.key(&lock);
        invocation
            .key(&epoch_key)
            .key(self.keys.ledger_boundaries(&epoch.id))
            .arg(token)
            .arg(&epoch.id);
        for (instance, boundary) in &epoch.boundaries {
            invocation.arg(instance).arg(boundary.to_field());
        }
        let installed: i64 = self
            .exec(move |mut c| Box::pin(async move { invocation.invoke_async(&mut c).await }))
            .await?;
        Ok(installed == 1)
    }

    /// Drops the ledger epoch: every instance rebuilds the limit counters (after
    /// `rebuild-cache` rewrote them from the archive alone).
    pub async fn drop_epoch(&self) -> Result<(), CacheError> {
        let key = self.keys.ledger_epoch();
        self.exec(move |mut c| Box::pin(async move { c.del::<_, ()>(key).await }))
            .await
    }

    /// Adds deltas to counter sets (summed counters, rebuilds, imports): one pipeline.
    pub async fn add_counters(&self, updates: &[CounterUpdate]) -> Result<(), CacheError> {
        let mut pipe = redis::pipe();
        self.push_adds(&mut pipe, updates);
        self.exec_with_timeout(Some(BACKGROUND_TIMEOUT), move |mut c| {
            Box::pin(async move { pipe.query_async::<()>(&mut c).await })
        })
        .await
    }

    fn push_adds(&self, pipe: &mut redis::Pipeline, updates: &[CounterUpdate]) {
        // Each command is built in buffers of its final size: grown an argument at a time,
        // a command cost five or six allocations, and a flush holds a hundred commands.
        let sized = |name: &str, key: &str, rest: usize| {
            let mut cmd = redis::Cmd::with_capacity(4, name.len() + key.len() + rest);
            cmd.arg(name).arg(key);
            cmd
        };
        for u in updates {
            let key = self.keys.named(&u.name);
            for (field, value) in Counters::FIELDS.iter().zip(u.delta.to_array()) {
                if value != 0 {
                    let mut cmd = sized("HINCRBY", &key, field.len() + 20);
                    cmd.arg(*field).arg(value);
                    pipe.add_command(cmd).ignore();
                }
            }
            if let Some(ttl) = u.ttl_seconds {
                let mut cmd = sized("EXPIRE", &key, 20);
                cmd.arg(ttl.max(1));
                pipe.add_command(cmd).ignore();
            }
        }
    }

    /// Current counter sets in the order asked (missing read as zero).
    pub async fn read_counters(&self, names: &[String]) -> Result<Vec<Counters>, CacheError> {
        self.read_counters_after(&[], names).await
    }

    /// Adds `updates` (deltas summed in process), then reads counter sets, in one pipeline:
    /// the values read hold the deltas exactly once, whatever a concurrent flush does.
    pub async fn read_counters_after(
        &self,
        updates: &[CounterUpdate],
        names: &[String],
    ) -> Result<Vec<Counters>, CacheError> {
        let mut pipe = redis::pipe();
        self.push_adds(&mut pipe, updates);
        for n in names {
            pipe.cmd("HMGET")
                .arg(self.keys.named(n))
                .arg(&Counters::FIELDS[..]);
        }
        let raw: Vec<Vec<Option<i64>>> = self
            .exec(move |mut c| Box::pin(async move { pipe.query_async(&mut c).await }))
            .await?;
        Ok(raw
            .into_iter()
            .map(|v| {
                Counters::from_array(std::array::from_fn(|i| {
                    v.get(i).copied().flatten().unwrap_or(0)
                }))
            })
            .collect())
    }

    /// The newest archived events of a key (redis mode), newest first.
    pub async fn recent_records(
        &self,
        key_id: &str,
        limit: usize,
    ) -> Result<Vec<String>, CacheError> {
        let key = self.keys.usage_records(key_id);
        let stop = list_stop(limit);
        self.exec(move |mut c| Box::pin(async move { c.lrange(key, 0, stop).await }))
            .await
    }

    /// `INFO` as field → value (memory, clients, … for /metrics and diagnose): in a cluster,
    /// of the node holding the deployment's keys.
    pub async fn server_info(&self) -> Result<HashMap<String, String>, CacheError> {
        let beside = self.keys.ledger_epoch();
        let text: String = self
            .exec(move |mut c| {
                Box::pin(async move { c.query_beside(&redis::cmd("INFO"), &beside).await })
            })
            .await?;
        Ok(text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.to_string(), v.trim().to_string()))
            .collect())
    }

    /// The newest archived events of every key (redis mode), newest first.
    pub async fn archive_records(&self, limit: usize) -> Result<Vec<String>, CacheError> {
        let key = self.keys.usage_archive();
        let stop = list_stop(limit);
        self.exec_with_timeout(Some(BULK_TIMEOUT), move |mut c| {
            Box::pin(async move { c.lrange(key, 0, stop).await })
        })
        .await
    }

    // ---- audit log (redis mode) ----

    /// Prepends one audit entry (JSON) to the capped audit list.
    pub async fn audit_push(&self, entry: String) -> Result<(), CacheError> {
        let key = self.keys.audit_log();
        self.exec(move |mut c| {
            Box::pin(async move {
                redis::pipe()
                    .lpush(&key, entry)
                    .ignore()
                    .ltrim(&key, 0, AUDIT_CAP - 1)
                    .ignore()
                    .query_async::<()>(&mut c)
                    .await
            })
        })
        .await
    }

    /// Every audit entry kept (JSON), newest first.
    pub async fn audit_entries(&self) -> Result<Vec<String>, CacheError> {
        let key = self.keys.audit_log();
        self.exec_with_timeout(Some(BULK_TIMEOUT), move |mut c| {
            Box::pin(async move { c.lrange(key, 0, -1).await })
        })
        .await
    }

    // ---- invalidation between instances ----

    /// Announces a change to every relay instance sharing this Redis.
    pub async fn publish(&self, message: String) -> Result<(), CacheError> {
        let channel = self.keys.events_channel();
        self.exec(move |mut c| Box::pin(async move { c.publish(channel, message).await }))
            .await
    }
}
