//! Every Redis key and channel name of the program, built in one place from the deployment's
//! key prefix (so tests and several deployments can share one Redis), and the Lua scripts.

pub mod scripts;

/// Builds the Redis keys of one deployment.
#[derive(Debug, Clone)]
pub struct KeySpace {
    prefix: String,
}

impl KeySpace {
    pub fn new(prefix: &str) -> Self {
        KeySpace {
            prefix: prefix.to_string(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, rest: std::fmt::Arguments<'_>) -> String {
        let mut out = String::with_capacity(self.prefix.len() + 48);
        out.push_str(&self.prefix);
        match rest.as_str() {
            Some(fixed) => out.push_str(fixed),
            // Writing to a `String` cannot fail.
            None => std::fmt::Write::write_fmt(&mut out, rest).unwrap_or_default(),
        }
        out
    }

    /// A logical name (counter sets, lease scopes) as a Redis key. Joined, not formatted:
    /// every request names several.
    pub fn named(&self, name: &str) -> String {
        [self.prefix.as_str(), name].concat()
    }

    /// Probe record used by `check`.
    pub fn probe(&self, id: &str) -> String {
        self.key(format_args!("probe:{id}"))
    }

    /// Operator account (redis mode).
    pub fn admin_user(&self, username: &str) -> String {
        self.key(format_args!("admin:user:{username}"))
    }

    /// Set of operator usernames (redis mode).
    pub fn admin_index(&self) -> String {
        self.key(format_args!("admin:index"))
    }

    /// Everything under this pattern is a cache of MySQL data (flushed after outages).
    pub fn cache_pattern(&self) -> String {
        self.key(format_args!("cache:*"))
    }

    /// Cached key record by hash (hybrid).
    pub fn cached_key(&self, hash: &str) -> String {
        self.key(format_args!("cache:apikey:{hash}"))
    }

    /// Cached snapshot of every account (hybrid).
    pub fn cached_accounts(&self) -> String {
        self.key(format_args!("cache:accounts"))
    }

    /// Key record (redis mode).
    pub fn api_key(&self, id: &str) -> String {
        self.key(format_args!("apikey:{id}"))
    }

    /// Key hash → id (redis mode).
    pub fn api_key_hash(&self, hash: &str) -> String {
        self.key(format_args!("apikey:hash:{hash}"))
    }

    /// Set of key ids (redis mode).
    pub fn api_key_index(&self) -> String {
        self.key(format_args!("apikey:index"))
    }

    /// Account record (redis mode).
    pub fn account(&self, id: &str) -> String {
        self.key(format_args!("account:{id}"))
    }

    /// Set of account ids (redis mode).
    pub fn account_index(&self) -> String {
        self.key(format_args!("account:index"))
    }

    /// Account group record (redis mode).
    pub fn account_group(&self, id: &str) -> String {
        self.key(format_args!("account_group:{id}"))
    }

    /// Set of account group ids (redis mode).
    pub fn account_group_index(&self) -> String {
        self.key(format_args!("account_group:index"))
    }

    /// A session, token or lock entry with a lifetime.
    pub fn entry(&self, name: &str) -> String {
        self.key(format_args!("entry:{name}"))
    }

    /// Lease set of a scope (sorted set: lease id → expiry ms).
    pub fn leases(&self, scope: &str) -> String {
        self.key(format_args!("lease:{scope}"))
    }

    /// The ledger epoch: its id says which rebuild the counters in Redis come from; missing
    /// means Redis lost them (restart without persistence, FLUSHALL).
    pub fn ledger_epoch(&self) -> String {
        self.key(format_args!("ledger:epoch"))
    }

    /// The instances counting into Redis: instance id → "epoch it caught up with|ms".
    pub fn ledger_instances(&self) -> String {
        self.key(format_args!("ledger:instances"))
    }

    /// Per epoch: where each instance's journal stood in the rebuild's archive snapshot.
    pub fn ledger_boundaries(&self, epoch: &str) -> String {
        self.key(format_args!("ledger:boundaries:{epoch}"))
    }

    /// Bitmap of the journal records of `instance` whose counters are applied (one bit per
    /// sequence number, 65,536 per key).
    pub fn ledger_applied(&self, instance: &str, seq: u64) -> String {
        self.key(format_args!("ledger:applied:{instance}:{}", seq >> 16))
    }

    /// Capped archive of a key's requests (redis mode).
    pub fn usage_records(&self, key_id: &str) -> String {
        self.key(format_args!("usage:records:{key_id}"))
    }

    /// Capped archive of every request (redis mode).
    pub fn usage_archive(&self) -> String {
        self.key(format_args!("usage:archive"))
    }

    /// Capped audit log (redis mode).
    pub fn audit_log(&self) -> String {
        self.key(format_args!("audit:log"))
    }

    /// Pub/sub channel of cache invalidations between relay instances.
    pub fn events_channel(&self) -> String {
        self.key(format_args!("events"))
    }
}
