//! Admission (concurrency leases + rate windows), real-time counters and the usage archive
//! path: Redis counters + outbox in one round trip in hybrid mode; the local spool when
//! Redis is down; a per-instance limiter per `LIMITS_ON_CACHE_DOWN`; a background drain
//! that moves the outbox and the spool into MySQL (idempotent by request id).
#![expect(
    clippy::let_underscore_must_use,
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    reason = "rewritten by the ledger work"
)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::spool::{self, SpoolEntry};
use super::{RouterActor, RouterHandle, unavailable};
use crate::config::{LimitsOnCacheDown, StorageMode};
use crate::domain::limits::{self, Admission, AdmissionRequest, CounterUpdate, Counters};
use crate::domain::usage_event::UsageEvent;
use crate::error::AppError;
use crate::persistence::{ephemeral as queries, usage as usage_queries};

/// Takes a lease and counts the request in the rate window, atomically; also reads the
/// entry `sticky` (a sticky session, when given) in the same round trip.
#[derive(Message)]
#[rtype(result = "Result<(Admission, Option<String>), AppError>")]
pub struct Admit {
    pub request: AdmissionRequest,
    pub sticky: Option<String>,
}

/// Ends a lease (request finished or client gone).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReleaseLease {
    pub scope: String,
    pub lease_id: String,
}

/// Extends a lease still held (long streams).
#[derive(Message)]
#[rtype(result = "Result<bool, AppError>")]
pub struct RenewLease {
    pub scope: String,
    pub lease_id: String,
    pub ttl: Duration,
}

/// Live leases of a scope.
#[derive(Message)]
#[rtype(result = "Result<i64, AppError>")]
pub struct CountLeases {
    pub scope: String,
}

/// Records one request: counters now, archive row through the batched writer.
#[derive(Message)]
#[rtype(result = "Result<(), AppError>")]
pub struct RecordUsage {
    pub event: UsageEvent,
    pub updates: Vec<CounterUpdate>,
    /// The request's lease, released in the same round trip.
    pub release: Option<LeaseRef>,
}

/// A lease to release: its scope and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRef {
    pub scope: String,
    pub lease_id: String,
}

/// Reads counter sets (limits, key-info, reports).
#[derive(Message)]
#[rtype(result = "Result<Vec<Counters>, AppError>")]
pub struct ReadCounters {
    pub names: Vec<String>,
}

/// Moves what waits in the spool and the outbox into the archive now (also run on a timer).
#[derive(Message)]
#[rtype(result = "()")]
pub struct DrainUsage;

/// Usage queue figures for /health, /metrics and tests.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageStats {
    pub recorded: u64,
    pub archived: u64,
    pub spooled: u64,
    pub dropped: u64,
    pub outbox_depth: u64,
    pub spool_depth: u64,
}

#[derive(Message)]
#[rtype(result = "UsageStats")]
pub struct GetUsageStats;

/// Per-instance limiter used while Redis is down (`LIMITS_ON_CACHE_DOWN=local`).
#[derive(Default)]
pub struct LocalLimiter {
    leases: HashMap<String, HashMap<String, Instant>>,
    counters: HashMap<String, Counters>,
}

impl LocalLimiter {
    fn admit(&mut self, req: &AdmissionRequest) -> Admission {
        let now = Instant::now();
        let leases = self.leases.entry(req.lease_scope.clone()).or_default();
        leases.retain(|_, expiry| *expiry > now);
        if req.concurrency_limit > 0 && leases.len() >= req.concurrency_limit as usize {
            return Admission::ConcurrencyExceeded;
        }
        if let Some(w) = &req.window
            && let Some(refusal) = w.check(&self.counters.get(&w.name).copied().unwrap_or_default())
        {
            return refusal;
        }
        let names: Vec<String> = req.cost_limits.iter().map(|l| l.counter.clone()).collect();
        if let Some(refusal) = req.check_costs(&self.read(&names)) {
            return refusal;
        }
        if let Some(w) = &req.window {
            self.counters.entry(w.name.clone()).or_default().requests += 1;
        }
        let leases = self.leases.entry(req.lease_scope.clone()).or_default();
        leases.insert(
            req.lease_id.clone(),
            now + Duration::from_millis(req.lease_ttl_ms),
        );
        Admission::Granted
    }

    fn release(&mut self, scope: &str, lease_id: &str) -> bool {
        self.leases
            .get_mut(scope)
            .is_some_and(|l| l.remove(lease_id).is_some())
    }

    fn count(&self, scope: &str) -> i64 {
        let now = Instant::now();
        self.leases
            .get(scope)
            .map_or(0, |l| l.values().filter(|e| **e > now).count() as i64)
    }

    fn add(&mut self, updates: &[CounterUpdate]) {
        for u in updates {
            self.counters
                .entry(u.name.clone())
                .or_default()
                .add(&u.delta);
        }
    }

    fn read(&self, names: &[String]) -> Vec<Counters> {
        names
            .iter()
            .map(|n| self.counters.get(n).copied().unwrap_or_default())
            .collect()
    }
}

impl RouterActor {
    /// True when admissions and counters go to Redis right now.
    fn counters_in_redis(&self) -> bool {
        self.config.mode.uses_redis() && self.redis_up()
    }

    fn spool_entry(&mut self, entry: SpoolEntry) -> Result<(), AppError> {
        match self.spool.append(&entry) {
            Ok(()) => {
                self.usage_stats.spooled += 1;
                Ok(())
            }
            Err(e) => {
                self.usage_stats.dropped += 1;
                log::error!(
                    "usage event {} lost: spool not writable: {e}",
                    entry.event.request_id
                );
                Err(AppError::Internal(format!("spool not writable: {e}")))
            }
        }
    }
}

impl Handler<Admit> for RouterActor {
    type Result = ResponseFuture<Result<(Admission, Option<String>), AppError>>;

    fn handle(&mut self, msg: Admit, _ctx: &mut Self::Context) -> Self::Result {
        let req = msg.request;
        match self.config.mode {
            StorageMode::Mysql => {
                if !self.mysql_up() {
                    return Box::pin(async { Err(unavailable("mysql")) });
                }
                let store = self.store.clone();
                // Nothing to enforce: skip the row-locked transaction (it serialises a key's
                // requests in mysql mode).
                let unlimited = req.concurrency_limit == 0
                    && req.window.is_none()
                    && req.cost_limits.is_empty();
                Box::pin(async move {
                    let admission = if unlimited {
                        Admission::Granted
                    } else {
                        store
                            .exec(move |c| Box::pin(queries::admit(c, req)))
                            .await?
                    };
                    let sticky = match msg.sticky {
                        Some(name) => {
                            store
                                .exec(move |c| Box::pin(queries::get_entry(c, name)))
                                .await?
                        }
                        None => None,
                    };
                    Ok((admission, sticky))
                })
            }
            _ if self.counters_in_redis() => {
                let cache = self.cache.clone();
                Box::pin(
                    async move { Ok(cache.admit_with_sticky(&req, msg.sticky.as_deref()).await?) },
                )
            }
            _ => {
                let answer = match self.config.limits_on_cache_down {
                    LimitsOnCacheDown::Local => Ok(self.local_limiter.admit(&req)),
                    LimitsOnCacheDown::Open => Ok(Admission::Granted),
                    LimitsOnCacheDown::Closed
                        if req.concurrency_limit == 0 && req.window.is_none() && req.cost_limits.is_empty() =>
                    {
                        Ok(Admission::Granted)
                    }
                    LimitsOnCacheDown::Closed => Err(AppError::StorageUnavailable(
                        "storage unavailable: limits cannot be checked right now, try again shortly".into(),
                    )),
                };
                // Sticky sessions are off while Redis is down.
                Box::pin(async move { answer.map(|a| (a, None)) })
            }
        }
    }
}

impl Handler<ReleaseLease> for RouterActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, msg: ReleaseLease, _ctx: &mut Self::Context) -> Self::Result {
        if self.local_limiter.release(&msg.scope, &msg.lease_id) {
            return Box::pin(async {});
        }
        let (store, cache, mode) = (self.store.clone(), self.cache.clone(), self.config.mode);
        // A lease that cannot be released now ends with its TTL.
        Box::pin(async move {
            let _ = match mode {
                StorageMode::Mysql => store
                    .exec(move |c| Box::pin(queries::release_lease(c, msg.scope, msg.lease_id)))
                    .await
                    .map_err(AppError::from),
                _ => cache
                    .release_lease(&msg.scope, &msg.lease_id)
                    .await
                    .map_err(AppError::from),
            };
        })
    }
}

impl Handler<RenewLease> for RouterActor {
    type Result = ResponseFuture<Result<bool, AppError>>;

    fn handle(&mut self, msg: RenewLease, _ctx: &mut Self::Context) -> Self::Result {
        let (store, cache, mode) = (self.store.clone(), self.cache.clone(), self.config.mode);
        Box::pin(async move {
            match mode {
                StorageMode::Mysql => {
                    let ttl = chrono::Duration::milliseconds(msg.ttl.as_millis() as i64);
                    Ok(store
                        .exec(move |c| {
                            Box::pin(queries::renew_lease(c, msg.scope, msg.lease_id, ttl))
                        })
                        .await?)
                }
                _ => Ok(cache
                    .renew_lease(&msg.scope, &msg.lease_id, msg.ttl)
                    .await?),
            }
        })
    }
}

impl Handler<CountLeases> for RouterActor {
    type Result = ResponseFuture<Result<i64, AppError>>;

    fn handle(&mut self, msg: CountLeases, _ctx: &mut Self::Context) -> Self::Result {
        let local = self.local_limiter.count(&msg.scope);
        let (store, cache, mode, redis) = (
            self.store.clone(),
            self.cache.clone(),
            self.config.mode,
            self.counters_in_redis(),
        );
        Box::pin(async move {
            match mode {
                StorageMode::Mysql => Ok(store
                    .exec(move |c| Box::pin(queries::count_leases(c, msg.scope)))
                    .await?),
                _ if redis => Ok(cache.count_leases(&msg.scope).await? + local),
                _ => Ok(local),
            }
        })
    }
}

impl Handler<RecordUsage> for RouterActor {
    type Result = ResponseActFuture<Self, Result<(), AppError>>;

    fn handle(&mut self, msg: RecordUsage, _ctx: &mut Self::Context) -> Self::Result {
        self.usage_stats.recorded += 1;
        let RecordUsage {
            event,
            updates,
            release,
        } = msg;
        let mode = self.config.mode;
        let release = match release {
            Some(lease) if self.local_limiter.release(&lease.scope, &lease.lease_id) => None,
            other => other,
        };
        if mode == StorageMode::Mysql {
            if let Some(lease) = release {
                let store = self.store.clone();
                actix::spawn(async move {
                    let _ = store
                        .exec(move |c| {
                            Box::pin(queries::release_lease(c, lease.scope, lease.lease_id))
                        })
                        .await;
                });
            }
            // Counters now; the archive row through the spool and the batched writer.
            let result = self.spool_entry(SpoolEntry {
                event,
                counters: None,
            });
            let store = self.store.clone();
            let work = async move {
                result?;
                if !updates.is_empty() {
                    store
                        .exec(move |c| Box::pin(queries::add_counters(c, updates)))
                        .await?;
                }
                Ok(())
            };
            return Box::pin(work.into_actor(self));
        }
        if !self.counters_in_redis() {
            // A Redis lease that cannot be released now ends with its TTL.
            self.local_limiter.add(&updates);
            let result = self.spool_entry(SpoolEntry {
                event,
                counters: Some(updates),
            });
            return Box::pin(fut::ready(result));
        }
        let cache = self.cache.clone();
        let encoded = match serde_json::to_string(&event) {
            Ok(s) => s,
            Err(e) => return Box::pin(fut::ready(Err(AppError::Internal(e.to_string())))),
        };
        let (outbox, archive) = match mode {
            StorageMode::Hybrid => (Some(encoded), None),
            _ => (None, Some((event.api_key_id.clone(), encoded))),
        };
        // Counters that limits read go with the event; the others (per account, model,
        // hour, month…) are summed here and flushed every few ms in one pipeline. The event
        // reaches the outbox in this round trip, with the lease release.
        let (now, later): (Vec<CounterUpdate>, Vec<CounterUpdate>) = updates
            .into_iter()
            .partition(|u| limits::is_limit_counter(&u.name, &event.api_key_id));
        self.pending_counters.add(&later);
        let release = release.map(|l| (l.scope, l.lease_id));
        let work = async move {
            cache
                .record_usage_releasing(&now, outbox, archive, release)
                .await
                .map_err(|_| (event, now))
        };
        Box::pin(work.into_actor(self).map(|result, act, _| match result {
            Ok(()) => Ok(()),
            // Redis failed during the call: the event and its limit counters wait in the
            // spool (the other counters wait in `pending_counters`).
            Err((event, now)) => {
                act.local_limiter.add(&now);
                act.spool_entry(SpoolEntry {
                    event,
                    counters: Some(now),
                })
            }
        }))
    }
}

/// Counter deltas summed in process until the next flush to Redis.
#[derive(Default)]
pub struct PendingCounters {
    sets: HashMap<String, (Counters, Option<i64>)>,
}

impl PendingCounters {
    pub fn add(&mut self, updates: &[CounterUpdate]) {
        for u in updates {
            let entry = self
                .sets
                .entry(u.name.clone())
                .or_insert((Counters::default(), u.ttl_seconds));
            entry.0.add(&u.delta);
            entry.1 = u.ttl_seconds;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.sets.is_empty()
    }

    /// Everything pending, leaving nothing behind.
    pub fn take(&mut self) -> Vec<CounterUpdate> {
        self.sets
            .drain()
            .map(|(name, (delta, ttl_seconds))| CounterUpdate {
                name,
                delta,
                ttl_seconds,
            })
            .collect()
    }

    /// The pending part of each named set (added to what Redis holds when reading).
    pub fn read(&self, names: &[String]) -> Vec<Counters> {
        names
            .iter()
            .map(|n| self.sets.get(n).map(|(c, _)| *c).unwrap_or_default())
            .collect()
    }
}

/// Writes the summed counter deltas to Redis (run on a short timer); answers true when
/// nothing is left pending afterwards.
#[derive(Message)]
#[rtype(result = "bool")]
pub struct FlushCounters;

impl Handler<FlushCounters> for RouterActor {
    type Result = ResponseActFuture<Self, bool>;

    fn handle(&mut self, _: FlushCounters, _ctx: &mut Self::Context) -> Self::Result {
        if self.flushing_counters || self.pending_counters.is_empty() || !self.counters_in_redis() {
            let done = !self.flushing_counters && self.pending_counters.is_empty();
            return Box::pin(fut::ready(done));
        }
        self.flushing_counters = true;
        let updates = self.pending_counters.take();
        let cache = self.cache.clone();
        let work = async move {
            match cache.add_counters(&updates).await {
                Ok(()) => None,
                Err(_) => Some(updates),
            }
        };
        Box::pin(work.into_actor(self).map(|failed, act, _| {
            act.flushing_counters = false;
            if let Some(updates) = failed {
                // Kept for the next flush; limits read them from here meanwhile.
                act.pending_counters.add(&updates);
            }
            act.pending_counters.is_empty()
        }))
    }
}

impl Handler<ReadCounters> for RouterActor {
    type Result = ResponseFuture<Result<Vec<Counters>, AppError>>;

    fn handle(&mut self, msg: ReadCounters, _ctx: &mut Self::Context) -> Self::Result {
        match self.config.mode {
            StorageMode::Mysql => {
                let store = self.store.clone();
                Box::pin(async move {
                    Ok(store
                        .exec(move |c| Box::pin(queries::read_counters(c, msg.names)))
                        .await?)
                })
            }
            _ if self.counters_in_redis() => {
                let cache = self.cache.clone();
                let pending = self.pending_counters.read(&msg.names);
                Box::pin(async move {
                    let mut values = cache.read_counters(&msg.names).await?;
                    for (v, p) in values.iter_mut().zip(&pending) {
                        v.add(p);
                    }
                    Ok(values)
                })
            }
            _ => match self.config.limits_on_cache_down {
                LimitsOnCacheDown::Closed => Box::pin(async { Err(unavailable("redis")) }),
                LimitsOnCacheDown::Open => {
                    let zeros = vec![Counters::default(); msg.names.len()];
                    Box::pin(async move { Ok(zeros) })
                }
                LimitsOnCacheDown::Local => {
                    let values = self.local_limiter.read(&msg.names);
                    Box::pin(async move { Ok(values) })
                }
            },
        }
    }
}

/// What one drain pass did, applied to the actor's state afterwards.
struct DrainOutcome {
    archived: u64,
    outbox_depth: Option<u64>,
}

impl Handler<DrainUsage> for RouterActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: DrainUsage, _ctx: &mut Self::Context) -> Self::Result {
        if self.draining {
            return Box::pin(fut::ready(()));
        }
        if let Err(e) = self.spool.seal() {
            log::error!("cannot seal the usage spool: {e}");
        }
        self.draining = true;
        let mode = self.config.mode;
        let (store, cache) = (self.store.clone(), self.cache.clone());
        let (mysql_ok, redis_ok) = (self.mysql_up(), self.counters_in_redis());
        let files = self.spool.sealed_files();
        let offset = self.config.timezone_offset_hours;
        let batch = self.config.usage_batch_size;
        let work = async move {
            let mut archived = 0u64;
            for file in files {
                let entries = match spool::read_entries(&file) {
                    Ok(e) => e,
                    Err(e) => {
                        log::error!("cannot read spool file {}: {e}", file.display());
                        continue;
                    }
                };
                let needs_counters =
                    mode.uses_redis() && entries.iter().any(|e| e.counters.is_some());
                if (mode.uses_mysql() && !mysql_ok) || (needs_counters && !redis_ok) {
                    // Hybrid with Redis down: archive now, counters when Redis returns.
                    if !(mode == StorageMode::Hybrid && mysql_ok) {
                        continue;
                    }
                }
                if mode.uses_mysql() {
                    let events: Vec<UsageEvent> = entries.iter().map(|e| e.event.clone()).collect();
                    match store
                        .exec_with_timeout(Some(Duration::from_secs(30)), move |c| {
                            Box::pin(usage_queries::insert_batch(c, events, offset))
                        })
                        .await
                    {
                        Ok(n) => archived += n as u64,
                        Err(e) => {
                            log::warn!("usage archive write failed, will retry: {e}");
                            continue;
                        }
                    }
                }
                if needs_counters {
                    if !redis_ok {
                        continue;
                    }
                    let mut failed = false;
                    for entry in &entries {
                        let Some(updates) = &entry.counters else {
                            continue;
                        };
                        let archive = (mode == StorageMode::Redis).then(|| {
                            (
                                entry.event.api_key_id.clone(),
                                serde_json::to_string(&entry.event).unwrap_or_default(),
                            )
                        });
                        if cache.record_usage(updates, None, archive).await.is_err() {
                            failed = true;
                            break;
                        }
                    }
                    if failed {
                        continue;
                    }
                }
                if let Err(e) = std::fs::remove_file(&file) {
                    log::error!("cannot remove replayed spool file {}: {e}", file.display());
                }
            }
            let mut outbox_depth = None;
            if mode == StorageMode::Hybrid && redis_ok {
                if mysql_ok {
                    archived += drain_outbox(&store, &cache, batch, offset).await;
                }
                outbox_depth = cache.outbox_len().await.ok().map(|n| n as u64);
            }
            DrainOutcome {
                archived,
                outbox_depth,
            }
        };
        Box::pin(work.into_actor(self).map(|outcome, act, _| {
            act.draining = false;
            act.usage_stats.archived += outcome.archived;
            if let Some(depth) = outcome.outbox_depth {
                act.usage_stats.outbox_depth = depth;
            }
            act.usage_stats.spool_depth = act.spool.depth() as u64;
        }))
    }
}

/// Moves the outbox into MySQL in batches under a lock (several instances may drain; a
/// batch is trimmed only after MySQL committed it, and replays are ignored by request id).
async fn drain_outbox(
    store: &crate::actors::persistence::PersistenceHandle,
    cache: &crate::actors::cache::CacheHandle,
    batch: usize,
    offset: i32,
) -> u64 {
    let lock = super::ephemeral::EntryKind::Lock.name("outbox-drain");
    let token = uuid::Uuid::new_v4().to_string();
    if !cache
        .acquire_lock(&lock, token.clone(), Duration::from_secs(60))
        .await
        .unwrap_or(false)
    {
        return 0;
    }
    let mut archived = 0u64;
    for _ in 0..50 {
        let raw = match cache.outbox_peek(batch).await {
            Ok(r) if !r.is_empty() => r,
            _ => break,
        };
        let taken = raw.len();
        let events: Vec<UsageEvent> = raw
            .iter()
            .filter_map(|s| match serde_json::from_str(s) {
                Ok(e) => Some(e),
                Err(e) => {
                    log::error!("unreadable outbox entry skipped: {e}");
                    None
                }
            })
            .collect();
        let result = store
            .exec_with_timeout(Some(Duration::from_secs(30)), move |c| {
                Box::pin(usage_queries::insert_batch(c, events, offset))
            })
            .await;
        match result {
            Ok(n) => archived += n as u64,
            Err(e) => {
                log::warn!("usage archive write failed, outbox kept: {e}");
                break;
            }
        }
        if cache.outbox_trim(taken).await.is_err() || taken < batch {
            break;
        }
    }
    let _ = cache.release_lock(&lock, token).await;
    archived
}

impl Handler<GetUsageStats> for RouterActor {
    type Result = MessageResult<GetUsageStats>;

    fn handle(&mut self, _: GetUsageStats, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.usage_stats)
    }
}

impl RouterHandle {
    pub async fn admit(&self, request: AdmissionRequest) -> Result<Admission, AppError> {
        Ok(self
            .ask(Admit {
                request,
                sticky: None,
            })
            .await??
            .0)
    }
    /// Admission plus the value of the sticky-session entry `sticky` (e.g. `sticky:{hash}`).
    pub async fn admit_with_sticky(
        &self,
        request: AdmissionRequest,
        sticky: Option<String>,
    ) -> Result<(Admission, Option<String>), AppError> {
        self.ask(Admit { request, sticky }).await?
    }
    pub async fn release_lease(&self, scope: &str, lease_id: &str) {
        let _ = self
            .ask(ReleaseLease {
                scope: scope.to_string(),
                lease_id: lease_id.to_string(),
            })
            .await;
    }
    pub async fn renew_lease(
        &self,
        scope: &str,
        lease_id: &str,
        ttl: Duration,
    ) -> Result<bool, AppError> {
        self.ask(RenewLease {
            scope: scope.to_string(),
            lease_id: lease_id.to_string(),
            ttl,
        })
        .await?
    }
    pub async fn count_leases(&self, scope: &str) -> Result<i64, AppError> {
        self.ask(CountLeases {
            scope: scope.to_string(),
        })
        .await?
    }
    pub async fn record_usage(
        &self,
        event: UsageEvent,
        updates: Vec<CounterUpdate>,
    ) -> Result<(), AppError> {
        self.ask(RecordUsage {
            event,
            updates,
            release: None,
        })
        .await?
    }
    /// Records usage and releases the request's lease in the same round trip.
    pub async fn record_usage_releasing(
        &self,
        event: UsageEvent,
        updates: Vec<CounterUpdate>,
        lease: LeaseRef,
    ) -> Result<(), AppError> {
        self.ask(RecordUsage {
            event,
            updates,
            release: Some(lease),
        })
        .await?
    }
    pub async fn read_counters(&self, names: Vec<String>) -> Result<Vec<Counters>, AppError> {
        self.ask(ReadCounters { names }).await?
    }
    /// Writes pending counters and moves queued events into the archive now.
    pub async fn drain_usage(&self) {
        self.flush_counters().await;
        let _ = self.ask(DrainUsage).await;
    }
    /// Writes the counter deltas summed in process to Redis (waits up to 2 s while Redis
    /// answers; returns false when some are still pending).
    pub async fn flush_counters(&self) -> bool {
        for _ in 0..200 {
            match self.ask(FlushCounters).await {
                Ok(true) => return true,
                Ok(false) => tokio::time::sleep(Duration::from_millis(10)).await,
                Err(_) => return false,
            }
        }
        false
    }
    pub async fn usage_stats(&self) -> UsageStats {
        self.ask(GetUsageStats).await.unwrap_or_default()
    }
}
