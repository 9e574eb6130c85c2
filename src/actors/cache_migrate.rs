//! The Redis commands of the operations commands (`migrate`, `rebuild-cache`, `diagnose`,
//! `check`): bulk counter reads and absolute writes, scans of our key space, server figures,
//! probe records, and `CrsSource`, the read-only connection to a CRS Redis database.

use std::collections::HashMap;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;

use super::cache::CacheHandle;
pub use crate::domain::crs::CrsValue;
use crate::domain::limits::Counters;
use crate::error::CacheError;

/// Time-out for bulk work (scans, pipelines of thousands of commands).
const BULK: Duration = Duration::from_secs(60);
/// Commands per pipeline in bulk writes.
const CHUNK: usize = 500;

/// Prefixes (after the deployment prefix) of the counter sets the relay keeps.
pub const COUNTER_PREFIXES: [&str; 4] =
    ["usage:key:", "usage:model:", "usage:account:", "cost:key:"];

/// A counter set with its absolute value and remaining lifetime (None = forever).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterValue {
    pub name: String,
    pub counters: Counters,
    pub ttl_ms: Option<i64>,
}

/// Figures of the Redis server for `diagnose`.
#[derive(Debug, Clone, Default)]
pub struct RedisFigures {
    pub info: HashMap<String, String>,
    pub maxmemory_policy: Option<String>,
    pub slowlog_len: Option<i64>,
    pub dbsize: i64,
}

impl CacheHandle {
    /// Logical names (prefix removed) of our keys matching `pattern` (a glob after the prefix).
    pub async fn scan_names(&self, pattern: &str) -> Result<Vec<String>, CacheError> {
        let prefix = self.keys.prefix().to_string();
        let full = format!("{}{pattern}", escape_glob(&prefix));
        let beside = self.keys.ledger_epoch();
        self.exec_with_timeout(Some(BULK), move |mut c| {
            Box::pin(async move {
                let mut out = Vec::new();
                let mut cursor: u64 = 0;
                loop {
                    // In a cluster, SCAN runs on the node holding the deployment's keys.
                    let scan = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&full)
                        .arg("COUNT")
                        .arg(1000)
                        .clone();
                    let (next, batch): (u64, Vec<String>) = c.query_beside(&scan, &beside).await?;
                    out.extend(
                        batch
                            .into_iter()
                            .filter_map(|k| k.strip_prefix(&prefix).map(str::to_string)),
                    );
                    if next == 0 {
                        out.sort();
                        out.dedup();
                        return Ok(out);
                    }
                    cursor = next;
                }
            })
        })
        .await
    }

    /// Names of every counter set in Redis (hashes under [`COUNTER_PREFIXES`]).
    pub async fn counter_names(&self) -> Result<Vec<String>, CacheError> {
        let mut names = Vec::new();
        for p in COUNTER_PREFIXES {
            names.extend(self.scan_names(&format!("{p}*")).await?);
        }
        Ok(names)
    }

    /// Counter sets with their remaining lifetime, in the order asked (missing read as zero).
    pub async fn read_counter_values(
        &self,
        names: &[String],
    ) -> Result<Vec<CounterValue>, CacheError> {
        let mut out = Vec::with_capacity(names.len());
        for chunk in names.chunks(CHUNK) {
            let mut pipe = redis::pipe();
            for n in chunk {
                let key = self.keys.named(n);
                pipe.cmd("HMGET").arg(&key).arg(&Counters::FIELDS[..]);
                pipe.cmd("PTTL").arg(&key);
            }
            let raw: Vec<redis::Value> = self
                .exec_with_timeout(Some(BULK), move |mut c| {
                    Box::pin(async move { pipe.query_async(&mut c).await })
                })
                .await?;
            for (n, pair) in chunk.iter().zip(raw.chunks(2)) {
                let fields: Vec<Option<i64>> = redis::from_redis_value(pair[0].clone())
                    .map_err(|e| CacheError::Decode(e.to_string()))?;
                let pttl: i64 = redis::from_redis_value(pair[1].clone()).unwrap_or(-2);
                out.push(CounterValue {
                    name: n.clone(),
                    counters: Counters::from_array(std::array::from_fn(|i| {
                        fields.get(i).copied().flatten().unwrap_or(0)
                    })),
                    ttl_ms: (pttl >= 0).then_some(pttl),
                });
            }
        }
        Ok(out)
    }

    /// Replaces counter sets with absolute values (DEL, HSET, PEXPIRE): idempotent.
    pub async fn write_counter_values(&self, values: &[CounterValue]) -> Result<(), CacheError> {
        for chunk in values.chunks(CHUNK) {
            let mut pipe = redis::pipe();
            for v in chunk {
                let key = self.keys.named(&v.name);
                pipe.del(&key).ignore();
                // As the relay writes them: only the fields that are not zero.
                let fields = v.counters.nonzero_fields();
                if fields.is_empty() {
                    continue;
                }
                pipe.hset_multiple(&key, &fields).ignore();
                if let Some(ms) = v.ttl_ms {
                    pipe.pexpire(&key, ms.max(1)).ignore();
                }
            }
            self.exec_with_timeout(Some(BULK), move |mut c| {
                Box::pin(async move { pipe.query_async::<()>(&mut c).await })
            })
            .await?;
        }
        Ok(())
    }

    /// Deletes keys by logical name; returns how many existed.
    pub async fn delete_names(&self, names: &[String]) -> Result<usize, CacheError> {
        let mut deleted = 0;
        for chunk in names.chunks(CHUNK) {
            let keys: Vec<String> = chunk.iter().map(|n| self.keys.named(n)).collect();
            deleted += self
                .exec_with_timeout(Some(BULK), move |mut c| {
                    Box::pin(async move { c.del::<_, usize>(keys).await })
                })
                .await?;
        }
        Ok(deleted)
    }

    /// Usernames of the operators stored in redis mode.
    pub async fn admin_usernames(&self) -> Result<Vec<String>, CacheError> {
        let index = self.keys.admin_index();
        let mut names: Vec<String> = self
            .exec(move |mut c| Box::pin(async move { c.smembers(index).await }))
            .await?;
        names.sort();
        Ok(names)
    }

    /// True when this key space holds redis-mode records (keys, accounts or operators).
    pub async fn has_redis_mode_records(&self) -> Result<bool, CacheError> {
        let keys = vec![
            self.keys.api_key_index(),
            self.keys.account_index(),
            self.keys.admin_index(),
        ];
        let n: i64 = self
            .exec(move |mut c| Box::pin(async move { c.exists(keys).await }))
            .await?;
        Ok(n > 0)
    }

    /// Every archived event of redis mode (the capped global list and the per-key lists),
    /// as stored (JSON), duplicates included.
    pub async fn archived_events(&self) -> Result<Vec<String>, CacheError> {
        let mut lists = vec![self.keys.usage_archive()];
        lists.extend(
            self.scan_names("usage:records:*")
                .await?
                .iter()
                .map(|n| self.keys.named(n)),
        );
        self.exec_with_timeout(Some(BULK), move |mut c| {
            Box::pin(async move {
                let mut out = Vec::new();
                for l in lists {
                    let items: Vec<String> = c.lrange(&l, 0, -1).await?;
                    out.extend(items);
                }
                Ok(out)
            })
        })
        .await
    }

    /// INFO, the eviction policy, the slow log length and the key count.
    /// In a cluster: of the node holding the deployment's keys.
    pub async fn server_figures(&self) -> Result<RedisFigures, CacheError> {
        let beside = self.keys.ledger_epoch();
        self.exec_with_timeout(Some(Duration::from_secs(5)), move |mut c| {
            Box::pin(async move {
                let info: String = c.query_beside(&redis::cmd("INFO"), &beside).await?;
                let info = info
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.to_string(), v.trim().to_string()))
                    .collect();
                // CONFIG and SLOWLOG may be renamed or forbidden on managed Redis.
                let policy: Option<String> = c
                    .query_beside::<Vec<String>>(
                        redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy"),
                        &beside,
                    )
                    .await
                    .ok()
                    .and_then(|v| v.get(1).cloned());
                let slowlog_len: Option<i64> = c
                    .query_beside(redis::cmd("SLOWLOG").arg("LEN"), &beside)
                    .await
                    .ok();
                let dbsize: i64 = c.query_beside(&redis::cmd("DBSIZE"), &beside).await?;
                Ok(RedisFigures {
                    info,
                    maxmemory_policy: policy,
                    slowlog_len,
                    dbsize,
                })
            })
        })
        .await
    }

    /// Writes a probe record with a lifetime (`check`).
    pub async fn probe_set(&self, id: &str, value: &str, ttl: Duration) -> Result<(), CacheError> {
        let key = self.keys.probe(id);
        let value = value.to_string();
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        self.exec(move |mut c| Box::pin(async move { c.pset_ex(key, value, ms).await }))
            .await
    }

    /// Reads a probe record.
    pub async fn probe_get(&self, id: &str) -> Result<Option<String>, CacheError> {
        let key = self.keys.probe(id);
        self.exec(move |mut c| Box::pin(async move { c.get(key).await }))
            .await
    }

    /// Deletes a probe record; true when it existed.
    pub async fn probe_delete(&self, id: &str) -> Result<bool, CacheError> {
        let key = self.keys.probe(id);
        self.exec(move |mut c| Box::pin(async move { c.del::<_, i64>(key).await.map(|n| n > 0) }))
            .await
    }
}

/// Escapes the glob characters of a literal (the key prefix) for SCAN MATCH.
fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// Read-only connection to the Redis database of a CRS deployment (keys without prefix).
pub struct CrsSource {
    conn: MultiplexedConnection,
}

fn describe(e: &redis::RedisError) -> String {
    if e.is_connection_refusal() {
        "connection refused".into()
    } else if e.is_timeout() {
        "timed out".into()
    } else {
        format!("{:?}: {}", e.kind(), e.detail().unwrap_or_default())
    }
}

impl CrsSource {
    /// Connects to `url` (`redis://[:password@]host:port/db`).
    pub async fn connect(url: &str) -> Result<CrsSource, String> {
        let client =
            redis::Client::open(url).map_err(|e| format!("bad Redis URL: {}", describe(&e)))?;
        let conn = tokio::time::timeout(
            Duration::from_secs(5),
            client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| "connecting to the source Redis timed out".to_string())?
        .map_err(|e| format!("cannot connect to the source Redis: {}", describe(&e)))?;
        Ok(CrsSource { conn })
    }

    /// True when the database looks like a CRS deployment (`apikey:hash_map` or a CRS
    /// account index exists).
    pub async fn looks_like_crs(&mut self) -> Result<bool, String> {
        let n: i64 = self
            .conn
            .exists(&[
                "apikey:hash_map",
                "claude:account:index",
                "claude_console_account:index",
                "session:admin_credentials",
            ])
            .await
            .map_err(|e| describe(&e))?;
        if n > 0 {
            return Ok(true);
        }
        Ok(!self.keys("apikey:*").await?.is_empty())
    }

    /// Every key matching `pattern`, sorted.
    pub async fn keys(&mut self, pattern: &str) -> Result<Vec<String>, String> {
        let mut out = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut self.conn)
                .await
                .map_err(|e| describe(&e))?;
            out.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Reads every key of the database with its value (the importer's snapshot).
    pub async fn snapshot(
        &mut self,
    ) -> Result<std::collections::BTreeMap<String, CrsValue>, String> {
        let keys = self.keys("*").await?;
        let mut out = std::collections::BTreeMap::new();
        for chunk in keys.chunks(CHUNK) {
            let mut pipe = redis::pipe();
            for k in chunk {
                pipe.cmd("TYPE").arg(k);
            }
            let types: Vec<String> = pipe
                .query_async(&mut self.conn)
                .await
                .map_err(|e| describe(&e))?;
            for (k, t) in chunk.iter().zip(types) {
                let v = match t.as_str() {
                    "string" => self
                        .conn
                        .get::<_, Option<String>>(k)
                        .await
                        .map_err(|e| describe(&e))?
                        .map(CrsValue::String),
                    "hash" => Some(CrsValue::Hash(
                        self.conn.hgetall(k).await.map_err(|e| describe(&e))?,
                    )),
                    "set" => Some(CrsValue::Set(
                        self.conn.smembers(k).await.map_err(|e| describe(&e))?,
                    )),
                    "list" => Some(CrsValue::List(
                        self.conn.lrange(k, 0, -1).await.map_err(|e| describe(&e))?,
                    )),
                    "none" => None,
                    other => Some(CrsValue::Other(other.to_string())),
                };
                if let Some(v) = v {
                    out.insert(k.clone(), v);
                }
            }
        }
        Ok(out)
    }
}
