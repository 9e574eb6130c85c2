//! Admission (concurrency leases + rate windows + cost limits) and real-time counters: each
//! journaled usage event is counted in Redis in the round trip that releases its lease
//! (the ledger's background work is in `ledger.rs`). While Redis is down, limits follow
//! `LIMITS_ON_CACHE_DOWN` with a per-instance limiter.

// foldhash: these maps are read and written on every request, and SipHash cost more than the
// rest of their lookups.
use foldhash::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::ledger::{ArchiveUsage, EnsureEpoch, ReplayCounters};
use super::{RouterActor, RouterHandle, unavailable};
use crate::actors::cache_ops::{Applied, UsageApply};
use crate::config::{LimitsOnCacheDown, StorageMode};
use crate::domain::limits::{
    Admission, AdmissionRequest, CounterUpdate, Counters, LaterCounters, LaterSets,
};
use crate::domain::usage_event::UsageEvent;
use crate::error::AppError;
use crate::ledger::{CounterContext, Journal, JournalStats};
use crate::persistence::ephemeral as queries;

/// How long an admission waits for the counters to be rebuilt when Redis lost them under it
/// (no epoch) before it falls back to `LIMITS_ON_CACHE_DOWN`.
const REBUILD_WAIT: Duration = Duration::from_secs(3);
/// How long admissions with cost or rate limits wait for counters every live instance has
/// caught up with, while they can be rebuilt (a shorter wait let a key overspend when a
/// rebuild took longer), counted from when the counters stopped being trusted: past it, they
/// no longer wait.
const REBUILD_MAX: Duration = Duration::from_secs(30);

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

/// Live leases of a scope.
#[derive(Message)]
#[rtype(result = "Result<i64, AppError>")]
pub struct CountLeases {
    pub scope: String,
}

/// Counts one request whose event is already in the journal (record `seq`): its counters
/// now, in the round trip that releases its lease; the archive row follows through the
/// archive writer.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RecordUsage {
    pub seq: u64,
    pub event: UsageEvent,
    /// The counters limits read, written with the record.
    pub now: Vec<CounterUpdate>,
    /// The other counters, summed in process and written a few ms later.
    pub later: LaterCounters,
    /// The request's lease, released in the same round trip.
    pub release: Option<LeaseRef>,
}

/// A lease to release: its scope and id, and whether the router granted it (it may then
/// be one of the per-instance limiter's, and is released through the router).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRef {
    pub scope: String,
    pub lease_id: String,
    pub via_router: bool,
}

impl From<LeaseRef> for ReleaseLease {
    fn from(lease: LeaseRef) -> ReleaseLease {
        ReleaseLease {
            scope: lease.scope,
            lease_id: lease.lease_id,
        }
    }
}

/// Counter deltas a worker could not write to Redis: the per-instance limiter sees them
/// until the journal's replay counts their records.
#[derive(Message)]
#[rtype(result = "()")]
pub struct CountLocally {
    pub updates: Vec<CounterUpdate>,
}

/// Reads counter sets (limits, key-info, reports).
#[derive(Message)]
#[rtype(result = "Result<Vec<Counters>, AppError>")]
pub struct ReadCounters {
    pub names: Vec<String>,
}

/// Usage figures for /health, /metrics and tests.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageStats {
    /// Events recorded (journaled) since start.
    pub recorded: u64,
    /// Events this instance wrote into the archive since start.
    pub archived: u64,
    /// Answers served without their usage (journal unwritable, `USAGE_JOURNAL_FULL=serve`).
    pub dropped: u64,
    /// Answers refused because their usage could not be journaled.
    pub rejected: u64,
    /// Times the limit counters were rebuilt or caught up with after Redis lost them.
    pub rebuilds: u64,
    /// Times this instance rebuilt them from the archive (per loss, one instance does).
    pub rebuilt_here: u64,
    /// Records whose counters a replay from the journal wrote to Redis (those the hot path
    /// could not count: Redis was down or lost them, or they waited longer than a tick).
    pub replayed: u64,
    /// Records an HTTP worker left to the replay because its counting queue was full
    /// (`USAGE_QUEUE_MAX_RECORDS`).
    pub left_to_replay: u64,
    /// The limit counters in Redis can be trusted now.
    pub counters_trusted: bool,
    pub journal: JournalStats,
}

#[derive(Message)]
#[rtype(result = "UsageStats")]
pub struct GetUsageStats;

/// Counts an answer whose usage could not be journaled (`rejected`: refused; else served).
#[derive(Message)]
#[rtype(result = "()")]
pub struct UsageNotJournaled {
    pub rejected: bool,
}

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
        let cap = usize::try_from(req.concurrency_limit).unwrap_or(usize::MAX);
        if req.concurrency_limit > 0 && leases.len() >= cap {
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
        if req.concurrency_limit == 0 {
            // Nothing to count leases against: none is taken.
            return Admission::Granted;
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
        self.leases.get(scope).map_or(0, |l| {
            i64::try_from(l.values().filter(|e| **e > now).count()).unwrap_or(i64::MAX)
        })
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

    /// Forgets the outage's counters (Redis has them again); leases end by themselves.
    pub(super) fn clear_counters(&mut self) {
        self.counters.clear();
    }
}

impl RouterActor {
    /// True when admissions and counters go to Redis right now.
    pub(super) fn counters_in_redis(&self) -> bool {
        self.config.mode.uses_redis() && self.redis_up()
    }

    /// True when the limit counters in Redis hold every event this instance knows of
    /// (or will, by replay) and may be read and written.
    pub(super) fn counters_trusted(&self) -> bool {
        self.counters_in_redis() && self.ledger.epoch.is_some() && !self.ledger.busy
    }

    /// Admissions may trust the limit counters of `epoch` (`None`: not now).
    pub(super) fn set_trusted(&mut self, epoch: Option<String>) {
        self.ledger.untrusted_since = match (&epoch, self.ledger.untrusted_since) {
            (Some(_), _) => None,
            (None, since) => Some(since.unwrap_or_else(Instant::now)),
        };
        self.trusted_tx.send_if_modified(|t| {
            let changed = *t != epoch;
            *t = epoch;
            changed
        });
        self.publish_counting();
    }

    /// Tells the workers whether they may admit and count in Redis themselves: while this
    /// instance has caught up with the epoch in force and every live instance trusts it.
    pub(super) fn publish_counting(&self) {
        let trusted = self.trusted_tx.borrow().clone();
        let epoch = trusted
            .as_deref()
            .filter(|e| self.counters_trusted() && self.ledger.epoch.as_deref() == Some(*e));
        self.hot.publish_counting(epoch);
    }

    /// Redis went away: its counters are not ours until we have caught up again.
    pub(super) fn ledger_redis_down(&mut self) {
        self.ledger.epoch = None;
        self.set_trusted(None);
    }

    /// The answer `LIMITS_ON_CACHE_DOWN` gives while Redis cannot decide.
    fn admit_locally(&mut self, req: &AdmissionRequest) -> Result<Admission, AppError> {
        let unlimited =
            req.concurrency_limit == 0 && req.window.is_none() && req.cost_limits.is_empty();
        match self.config.limits_on_cache_down {
            LimitsOnCacheDown::Local => Ok(self.local_limiter.admit(req)),
            LimitsOnCacheDown::Open => Ok(Admission::Granted),
            LimitsOnCacheDown::Closed if unlimited => Ok(Admission::Granted),
            LimitsOnCacheDown::Closed => Err(AppError::StorageUnavailable(
                "storage unavailable: limits cannot be checked right now, try again shortly".into(),
            )),
        }
    }
}

impl Handler<Admit> for RouterActor {
    type Result = ResponseActFuture<Self, Result<(Admission, Option<String>), AppError>>;

    fn handle(&mut self, msg: Admit, _ctx: &mut Self::Context) -> Self::Result {
        let req = msg.request;
        if self.config.mode == StorageMode::Mysql {
            if !self.mysql_up() {
                return Box::pin(fut::ready(Err(unavailable("mysql"))));
            }
            let store = self.store.clone();
            // Nothing to enforce: skip the row-locked transaction (it serialises a key's
            // requests in mysql mode).
            let unlimited =
                req.concurrency_limit == 0 && req.window.is_none() && req.cost_limits.is_empty();
            let work = async move {
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
            };
            return Box::pin(work.into_actor(self));
        }
        if !self.counters_in_redis() {
            // Sticky sessions are off while Redis is down.
            return Box::pin(fut::ready(self.admit_locally(&req).map(|a| (a, None))));
        }
        // While the counters are being rebuilt, wait for them (bounded) rather than admit on
        // counters that miss what Redis lost. Limits check the counters of the epoch every
        // live instance has caught up with (`trusted_tx`), and wait for it as long as a
        // rebuild can make progress.
        let counted = req.window.is_some() || !req.cost_limits.is_empty();
        let rebuildable = self.config.mode == StorageMode::Redis || self.mysql_up();
        let mut trusted = self.trusted_tx.subscribe();
        let left = REBUILD_MAX.saturating_sub(
            self.ledger
                .untrusted_since
                .map_or(Duration::ZERO, |t| t.elapsed()),
        );
        // Admissions that read no counter (no rate window, no cost limit) do not wait: their
        // leases and sticky sessions are not part of the counters, and waiting held every
        // request of such keys for the length of the rebuild (about 1.2 s after a Redis
        // wipe under load, measured with wrk).
        let wait = rebuildable && counted && trusted.borrow().is_none() && !left.is_zero();
        let bound = if counted && rebuildable {
            left
        } else {
            REBUILD_WAIT
        };
        let (cache, me) = (self.cache.clone(), self.me.clone());
        let sticky_ttl = self.config.sticky_session_ttl;
        let request = req.clone();
        let work = async move {
            if wait {
                // Past the wait, admission goes on with whatever Redis says.
                drop(tokio::time::timeout(bound, trusted.wait_for(Option::is_some)).await);
            }
            let epoch = trusted.borrow().clone().filter(|_| counted);
            let first = cache
                .admit_with_sticky(
                    &request,
                    msg.sticky.as_deref(),
                    sticky_ttl,
                    epoch.as_deref(),
                )
                .await?;
            if first.0.is_some() {
                return Ok(first);
            }
            // Redis lost its counters (no epoch) or another instance rebuilt them: catch up,
            // then ask again. `EnsureEpoch` marks them untrusted before it answers.
            if let Some(me) = me
                && me.send(EnsureEpoch).await.is_err()
            {
                log::debug!("router stopped while asking for a counter rebuild");
            }
            drop(
                tokio::time::timeout(bound, trusted.wait_for(|t| t.is_some() && *t != epoch)).await,
            );
            let epoch = trusted.borrow().clone().filter(|_| counted);
            cache
                .admit_with_sticky(
                    &request,
                    msg.sticky.as_deref(),
                    sticky_ttl,
                    epoch.as_deref(),
                )
                .await
        };
        Box::pin(
            work.into_actor(self)
                .map(move |result, act, _| match result {
                    Ok((Some(admission), sticky)) => Ok((admission, sticky)),
                    Ok((None, _)) => act.admit_locally(&req).map(|a| (a, None)),
                    // Redis failed during the call: decide locally, never a 503 for a valid key.
                    Err(e) => {
                        log::warn!("admission in redis failed, deciding locally: {e}");
                        act.admit_locally(&req).map(|a| (a, None))
                    }
                }),
        )
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
            let result = match mode {
                StorageMode::Mysql => store
                    .exec(move |c| Box::pin(queries::release_lease(c, msg.scope, msg.lease_id)))
                    .await
                    .map(|_| ())
                    .map_err(AppError::from),
                _ => cache
                    .release_lease(&msg.scope, &msg.lease_id)
                    .await
                    .map(|_| ())
                    .map_err(AppError::from),
            };
            if let Err(e) = result {
                log::debug!("lease not released now (it ends with its lifetime): {e}");
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
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: RecordUsage, ctx: &mut Self::Context) -> Self::Result {
        let RecordUsage {
            seq,
            event,
            now,
            later,
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
                    if let Err(e) = store
                        .exec(move |c| {
                            Box::pin(queries::release_lease(c, lease.scope, lease.lease_id))
                        })
                        .await
                    {
                        log::debug!("lease not released now (it ends with its lifetime): {e}");
                    }
                });
            }
            // Counters are added with the archive row, in the archive writer's transaction.
            self.kick_archive(ctx);
            return Box::pin(fut::ready(()));
        }
        let Some(epoch) = self
            .ledger
            .epoch
            .clone()
            .filter(|_| self.counters_trusted())
        else {
            // The record stays uncounted in the journal and is replayed later; meanwhile the
            // limits of this instance see it. The lease is no counter: it ends now.
            self.local_limiter.add(&now);
            self.local_limiter.add(&later.updates());
            if let Some(lease) = release {
                ctx.notify(ReleaseLease::from(lease));
            }
            return Box::pin(fut::ready(()));
        };
        // Released again should the round trip fail (it may not have run).
        let release_again = release.clone();
        // Counters that limits read go with the record; the others (per account, model,
        // hour, month…) are summed here and flushed every few ms in one pipeline.
        let archive = (mode == StorageMode::Redis)
            .then(|| serde_json::to_string(&event).ok())
            .flatten();
        let (cache, journal) = (self.cache.clone(), self.journal.clone());
        let key_id = event.api_key_id;
        let work = async move {
            let release = release
                .as_ref()
                .map(|l| (l.scope.as_str(), l.lease_id.as_str()));
            cache
                .apply_usage(UsageApply {
                    epoch: &epoch,
                    instance: journal.instance_id(),
                    seq,
                    updates: &now,
                    release,
                    archive: archive.as_deref().map(|a| (key_id.as_str(), a)),
                })
                .await
                .map_err(|e| (e, now))
        };
        Box::pin(
            work.into_actor(self)
                .map(move |result, act, ctx| match result {
                    Ok(Applied::Now) => {
                        act.journal.mark_counted(&[seq]);
                        act.hot.add_pending_later(later, None);
                    }
                    Ok(Applied::Before) => act.journal.mark_counted(&[seq]),
                    Ok(Applied::NoEpoch | Applied::OtherEpoch) => {
                        act.local_limiter.add(&later.updates());
                        ctx.notify(EnsureEpoch);
                    }
                    Err((e, now)) => {
                        log::warn!("usage counters not written to redis now (replayed later): {e}");
                        act.local_limiter.add(&now);
                        act.local_limiter.add(&later.updates());
                        if let Some(lease) = release_again {
                            ctx.notify(ReleaseLease::from(lease));
                        }
                    }
                }),
        )
    }
}

/// Counter deltas summed in process until the next flush to Redis. Events' later counters
/// are summed by the sets they name and named only when taken.
#[derive(Default)]
pub struct PendingCounters {
    sets: HashMap<String, (Counters, Option<i64>)>,
    later: HashMap<LaterSets, Counters>,
}

impl PendingCounters {
    pub fn add_later(&mut self, later: LaterCounters) {
        self.later.entry(later.sets).or_default().add(&later.delta);
    }

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
        self.sets.is_empty() && self.later.is_empty()
    }

    /// Everything pending, leaving nothing behind.
    pub fn take(&mut self) -> Vec<CounterUpdate> {
        let later: Vec<CounterUpdate> = self
            .later
            .drain()
            .flat_map(|(sets, delta)| sets.updates(delta))
            .collect();
        self.add(&later);
        self.sets
            .drain()
            .map(|(name, (delta, ttl_seconds))| CounterUpdate {
                name,
                delta,
                ttl_seconds,
            })
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
        if self.flushing_counters || self.hot.pending_is_empty() || !self.counters_in_redis() {
            let done = !self.flushing_counters && self.hot.pending_is_empty();
            return Box::pin(fut::ready(done));
        }
        self.flushing_counters = true;
        let updates = self.hot.take_pending();
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
                act.hot.add_pending(&updates);
            }
            act.hot.pending_is_empty()
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
                // The deltas summed in process go to Redis with the read: adding them to
                // what Redis says instead could count a batch a flush writes meanwhile twice.
                let (cache, hot) = (self.cache.clone(), self.hot.clone());
                let pending = self.hot.take_pending();
                let local = self.local_limiter.read(&msg.names);
                Box::pin(async move {
                    let mut values = match cache.read_counters_after(&pending, &msg.names).await {
                        Ok(values) => values,
                        Err(e) => {
                            hot.add_pending(&pending);
                            return Err(e.into());
                        }
                    };
                    for (v, l) in values.iter_mut().zip(&local) {
                        v.add(l);
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

impl Handler<CountLocally> for RouterActor {
    type Result = ();

    fn handle(&mut self, msg: CountLocally, _ctx: &mut Self::Context) {
        self.local_limiter.add(&msg.updates);
    }
}

impl Handler<UsageNotJournaled> for RouterActor {
    type Result = ();

    fn handle(&mut self, msg: UsageNotJournaled, _ctx: &mut Self::Context) {
        if msg.rejected {
            self.usage_stats.rejected += 1;
        } else {
            self.usage_stats.dropped += 1;
        }
    }
}

impl Handler<GetUsageStats> for RouterActor {
    type Result = MessageResult<GetUsageStats>;

    fn handle(&mut self, _: GetUsageStats, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(UsageStats {
            recorded: self.hot.recorded(),
            left_to_replay: self.hot.left_to_replay(),
            counters_trusted: self.counters_trusted() || self.config.mode == StorageMode::Mysql,
            journal: self.journal.stats(),
            ..self.usage_stats
        })
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
    pub async fn release_lease(&self, scope: &str, lease_id: &str) {
        let released = self
            .ask(ReleaseLease {
                scope: scope.to_string(),
                lease_id: lease_id.to_string(),
            })
            .await;
        if let Err(e) = released {
            log::debug!("lease not released (it ends with its lifetime): {e}");
        }
    }
    pub async fn count_leases(&self, scope: &str) -> Result<i64, AppError> {
        self.ask(CountLeases {
            scope: scope.to_string(),
        })
        .await?
    }
    /// The journal every usage event goes through.
    pub fn journal(&self) -> &Arc<Journal> {
        &self.journal
    }
    /// Journals one event (its counters derived from `counters`); the record to count.
    fn journal_event(
        &self,
        event: UsageEvent,
        counters: CounterContext,
        release: Option<LeaseRef>,
    ) -> Result<RecordUsage, (AppError, Option<LeaseRef>)> {
        let (now, later) = crate::domain::limits::record_split(
            &event,
            self.offset_hours,
            counters.opus,
            counters.weekly_reset,
            counters.rate_window_name().as_ref(),
        );
        let seq = match self.journal.append(&event, &counters) {
            Ok(seq) => seq,
            Err(e) => {
                log::error!("usage event {} not journaled: {e}", event.request_id);
                let error = AppError::StorageUnavailable(
                    "storage unavailable: the usage of this answer cannot be recorded right \
                     now, try again shortly"
                        .into(),
                );
                return Err((error, release));
            }
        };
        Ok(RecordUsage {
            seq,
            event,
            now,
            later,
            release,
        })
    }

    /// Journals one event and has it counted without waiting (the hot path); `release` is
    /// the request's lease, released in the counting round trip. Fails only when the
    /// journal cannot be written, and then hands the lease back.
    pub fn record_usage_releasing(
        &self,
        event: UsageEvent,
        counters: CounterContext,
        release: Option<LeaseRef>,
    ) -> Result<(), (AppError, Option<LeaseRef>)> {
        let record = self.journal_event(event, counters, release)?;
        self.count_record(record);
        Ok(())
    }

    /// Journals one event and returns once it is counted (tools and tests: what they read
    /// next includes it). In mysql mode counting is archiving; elsewhere the archive row
    /// follows.
    pub async fn record_usage(
        &self,
        event: UsageEvent,
        counters: CounterContext,
    ) -> Result<(), AppError> {
        let record = self
            .journal_event(event, counters, None)
            .map_err(|(e, _)| e)?;
        let seq = record.seq;
        self.hot.count_recorded(self.worker_local.as_deref());
        self.ask(record).await?;
        if self.mode == StorageMode::Mysql {
            let deadline = Instant::now() + Duration::from_secs(5);
            while self.journal.archived_through() <= seq && Instant::now() < deadline {
                self.ask(ArchiveUsage).await?;
                if self.journal.archived_through() <= seq {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
        Ok(())
    }
    /// Counts an answer whose usage could not be journaled.
    pub fn usage_not_journaled(&self, rejected: bool) {
        self.addr.do_send(UsageNotJournaled { rejected });
    }
    pub async fn read_counters(&self, names: Vec<String>) -> Result<Vec<Counters>, AppError> {
        self.ask(ReadCounters { names }).await?
    }
    /// What the router does every `USAGE_BATCH_INTERVAL_MS`: counts in Redis the journal
    /// records that were not counted yet at the previous call (the newer ones are left to
    /// the hot path); returns after the first pass.
    pub async fn replay_counters(&self) -> Result<(), AppError> {
        self.ask(ReplayCounters).await
    }
    /// Writes pending counters and moves journaled events into the archive now; returns
    /// when nothing this instance journaled waits any more (or after `limit`).
    pub async fn drain_usage(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            self.flush_counters().await;
            if self.ask(ArchiveUsage).await.is_err() || self.ask(ReplayCounters).await.is_err() {
                return false;
            }
            let stats = self.usage_stats().await;
            let archived = stats.journal.unarchived_records == 0;
            let counted = stats.journal.uncounted_records == 0;
            if archived && counted {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
    /// Waits (at most `limit`) until the usage counters can be trusted (Redis holds an
    /// epoch this instance has caught up with), when both backends the mode uses are up;
    /// false when `limit` passed first.
    pub async fn counters_ready(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.usage_stats().await.counters_trusted {
                return true;
            }
            let up = self.health(Duration::from_secs(1)).await.is_some_and(|h| {
                (!h.redis.used || h.redis.connected) && (!h.mysql.used || h.mysql.connected)
            });
            if !up || Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    pub async fn usage_stats(&self) -> UsageStats {
        self.ask(GetUsageStats).await.unwrap_or_default()
    }
}
