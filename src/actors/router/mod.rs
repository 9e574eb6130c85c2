//! `RouterActor`: receives the requests of the HTTP layer and the CLI, decides per message
//! and per storage mode which backend answers, and applies the fallbacks of SPEC §1 from the
//! `BackendState` the storage actors report. HTTP code talks to it through `RouterHandle`.
//! The data classes live in the files beside this one, one `impl` block each.

mod accounts;
mod activity;
mod admin;
mod audit;
mod ephemeral;
mod groups;
mod hot;
mod keys;
mod ledger;
mod loads;
mod observe;
mod reports;
mod usage;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::dev::ToEnvelope;
use actix::prelude::*;

pub use accounts::{AccountSnapshot, ChangeAccountStatus};
pub use admin::EnsureAdmin;
pub use ephemeral::EntryKind;
pub use hot::HotView;
pub use observe::BackendSample;
pub use usage::{LeaseRef, UsageStats};

use std::sync::Arc;

use crate::ledger::Journal;

use super::cache::CacheEvent;
use crate::domain::account::{Account, StatusChange};
use crate::domain::api_key::ApiKey;
use crate::error::AppError;

use super::cache::CacheHandle;
use super::persistence::PersistenceHandle;
use super::state::{Backend, BackendState, BackendStateChanged};
use crate::config::{Config, StorageMode};

/// Overall health as `/health` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// A backend the mode uses has not been probed yet: its state is unknown, not down.
    Starting,
    Healthy,
    Degraded,
    Unhealthy,
}

/// One backend as `/health` reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackendView {
    pub connected: bool,
    pub latency: Option<String>,
    /// False when the mode does not use this backend.
    pub used: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The router's view of the deployment, for `/health`.
#[derive(Debug, Clone)]
pub struct HealthReport {
    pub status: HealthStatus,
    pub mode: StorageMode,
    pub redis: BackendView,
    pub mysql: BackendView,
    pub uptime: Duration,
    /// Usage events journaled and not archived yet.
    pub usage_backlog: UsageBacklog,
    /// Hybrid: the Redis cache has been flushed since Redis (re)appeared and is read again
    /// (always true in the other modes).
    pub redis_cache_in_use: bool,
}

/// The usage journal's backlog as `/health` reports it.
#[derive(Debug, Clone, Copy, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageBacklog {
    pub events: u64,
    pub bytes: u64,
    pub oldest_seconds: f64,
}

/// Asks for the current health; answered from memory, never waits on a backend.
#[derive(Message)]
#[rtype(result = "HealthReport")]
pub struct GetHealth;

/// Cache hit figures for /metrics and the admin system view.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CacheStats {
    pub key_cache_hits: u64,
    pub key_cache_misses: u64,
    /// Calls (round trips) to Redis and MySQL since start.
    pub redis_calls: u64,
    pub mysql_calls: u64,
    /// Account lists and keys read from storage since start (one read per expiry or change,
    /// however many requests found the item stale at once).
    pub account_list_reads: u64,
    pub key_reads: u64,
}

/// The state of a backend before its first probe reported.
const NOT_PROBED: &str = "not probed yet";

/// How often summed counter deltas are written to Redis.
const COUNTER_FLUSH_INTERVAL: Duration = Duration::from_millis(50);

/// How often expired rows are swept in mysql mode.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

pub struct RouterActor {
    config: Config,
    cache: CacheHandle,
    store: PersistenceHandle,
    redis: BackendState,
    mysql: BackendState,
    /// Whether each backend has reported its first probe (until then its state is unknown).
    redis_probed: bool,
    mysql_probed: bool,
    /// Callers of `FirstProbes` waiting for both of them.
    probe_waiters: Vec<tokio::sync::oneshot::Sender<()>>,
    started_at: Instant,
    /// What the HTTP workers read without a message (key cache, accounts, counting).
    hot: Arc<HotView>,
    /// Hybrid: the Redis cache may have missed invalidations (after an outage or at start)
    /// and is bypassed until it has been flushed.
    redis_cache_stale: bool,
    flushing: bool,
    account_snapshot: Option<(Vec<Account>, Instant)>,
    /// Account-list reads under way, one at a time (`loads`).
    account_loads: loads::Loads<(), Vec<Account>>,
    /// Key reads under way, one at a time per key hash.
    key_loads: loads::Loads<String, Option<ApiKey>>,
    /// Account state changes not yet written (MySQL down), applied over snapshots.
    status_overrides: HashMap<String, StatusChange>,
    /// Redis mode: account patches (read, change, write back) one at a time, so that one
    /// does not write back a copy read before another's write. MySQL uses the row lock.
    account_patches: Arc<tokio::sync::Mutex<()>>,
    local_limiter: usage::LocalLimiter,
    flushing_counters: bool,
    /// This instance's usage journal (shared with the HTTP workers, which append to it).
    journal: Arc<Journal>,
    ledger: ledger::LedgerState,
    /// The epoch whose limit counters admissions may trust: this instance has caught up
    /// with it and so has every live instance (admissions wait on it while they are
    /// rebuilt); `None` until then.
    trusted_tx: tokio::sync::watch::Sender<Option<String>>,
    usage_stats: UsageStats,
    /// Own address, for background work that reports back.
    me: Option<Addr<RouterActor>>,
}

/// An invalidation could not reach Redis while it counted as up: distrust and flush the
/// Redis cache (a disabled key must not live on there).
#[derive(Message)]
#[rtype(result = "()")]
pub struct MarkCacheStale;

impl Handler<MarkCacheStale> for RouterActor {
    type Result = ();

    fn handle(&mut self, _: MarkCacheStale, ctx: &mut Self::Context) {
        self.redis_cache_stale = true;
        self.refresh_redis_cache(ctx);
    }
}

impl RouterActor {
    pub fn new(
        config: Config,
        cache: CacheHandle,
        store: PersistenceHandle,
        journal: Arc<Journal>,
    ) -> Self {
        let config_key_ttl = config.key_cache_ttl;
        RouterActor {
            config,
            cache,
            store,
            redis: BackendState::down(NOT_PROBED),
            mysql: BackendState::down(NOT_PROBED),
            redis_probed: false,
            mysql_probed: false,
            probe_waiters: Vec::new(),
            started_at: Instant::now(),
            hot: Arc::new(HotView::new(config_key_ttl)),
            redis_cache_stale: true,
            flushing: false,
            account_snapshot: None,
            account_loads: loads::Loads::default(),
            key_loads: loads::Loads::default(),
            status_overrides: HashMap::new(),
            account_patches: Arc::default(),
            local_limiter: usage::LocalLimiter::default(),
            flushing_counters: false,
            journal,
            ledger: ledger::LedgerState::default(),
            trusted_tx: tokio::sync::watch::Sender::new(None),
            usage_stats: UsageStats::default(),
            me: None,
        }
    }

    /// Starts the router on its own thread and returns its handle.
    pub fn spawn(
        config: Config,
        cache: CacheHandle,
        store: PersistenceHandle,
        journal: Arc<Journal>,
    ) -> RouterHandle {
        RouterActor::spawn_on(&Arbiter::new().handle(), config, cache, store, journal)
    }

    /// Starts the router on an existing arbiter (shared with the cache actor).
    pub fn spawn_on(
        arbiter: &ArbiterHandle,
        config: Config,
        cache: CacheHandle,
        store: PersistenceHandle,
        journal: Arc<Journal>,
    ) -> RouterHandle {
        let (offset_hours, mode) = (config.timezone_offset_hours, config.mode);
        let key_cache_ttl = config.key_cache_ttl;
        let queue_max = config.usage_queue_max;
        let router = RouterActor::new(config, cache, store, journal.clone());
        let hot = router.hot.clone();
        let addr = RouterActor::start_in_arbiter(arbiter, move |_| router);
        RouterHandle(Arc::new(RouterParts {
            addr,
            journal,
            offset_hours,
            mode,
            hot,
            key_cache_ttl,
            queue_max,
            worker_cache: None,
            record_queue: None,
            worker_local: None,
        }))
    }

    /// Hybrid: flushes the Redis cache after an outage (or at start) and trusts it again
    /// once done; retried by the probe-driven state changes and the drain timer.
    fn refresh_redis_cache(&mut self, ctx: &mut Context<Self>) {
        if self.config.mode != StorageMode::Hybrid
            || !self.redis_cache_stale
            || self.flushing
            || !self.redis.up
        {
            return;
        }
        self.flushing = true;
        let cache = self.cache.clone();
        ctx.spawn(async move { cache.flush_caches().await }.into_actor(self).map(|r, act, _| {
            act.flushing = false;
            match r {
                Ok(n) => {
                    log::info!("redis cache flushed after reconnect ({n} entries); cache in use again");
                    act.redis_cache_stale = false;
                }
                Err(e) => log::warn!("redis cache flush failed, retrying: {e}"),
            }
        }));
    }

    fn on_event(&mut self, payload: &str) {
        let Ok(event) = serde_json::from_str::<serde_json::Value>(payload) else {
            return;
        };
        // This instance's own change, echoed: applied when it was made. Taken again, it would
        // also drop what was read after it (a key or account list read since is kept).
        if event["from"].as_str() == Some(self.journal.instance_id()) {
            return;
        }
        match event["type"].as_str() {
            Some("keys") => {
                self.key_loads.invalidate();
                for h in event["hashes"].as_array().into_iter().flatten() {
                    if let Some(h) = h.as_str() {
                        self.hot.forget_key(h);
                    }
                }
            }
            Some("accounts") => self.forget_accounts(),
            _ => {}
        }
    }

    fn redis_up(&self) -> bool {
        self.config.mode.uses_redis() && self.redis.up
    }

    fn mysql_up(&self) -> bool {
        self.config.mode.uses_mysql() && self.mysql.up
    }

    /// True once every backend the mode uses has reported its first probe.
    fn probed(&self) -> bool {
        (self.redis_probed || !self.config.mode.uses_redis())
            && (self.mysql_probed || !self.config.mode.uses_mysql())
    }

    fn health(&self) -> HealthReport {
        let mode = self.config.mode;
        let status = match mode {
            _ if !self.probed() => HealthStatus::Starting,
            StorageMode::Hybrid => match (self.redis.up, self.mysql.up) {
                (true, true) => HealthStatus::Healthy,
                (false, false) => HealthStatus::Unhealthy,
                _ => HealthStatus::Degraded,
            },
            StorageMode::Redis if self.redis.up => HealthStatus::Healthy,
            StorageMode::Mysql if self.mysql.up => HealthStatus::Healthy,
            _ => HealthStatus::Unhealthy,
        };
        let journal = self.journal.stats();
        let usage_backlog = UsageBacklog {
            events: journal.unarchived_records,
            bytes: journal.unarchived_bytes,
            oldest_seconds: journal.oldest_unarchived_secs,
        };
        // Usage piling up unarchived is a problem to look at, even with both backends up.
        let stuck =
            journal.oldest_unarchived_secs > self.config.backlog_degraded_after.as_secs_f64();
        // Redis without trusted counters (being rebuilt after it lost them) limits per
        // instance only.
        let counting = !mode.uses_redis() || self.counters_trusted();
        let status = match status {
            HealthStatus::Healthy if stuck || !counting => HealthStatus::Degraded,
            other => other,
        };
        HealthReport {
            status,
            mode,
            redis: view(&self.redis, mode.uses_redis()),
            mysql: view(&self.mysql, mode.uses_mysql()),
            uptime: self.started_at.elapsed(),
            usage_backlog,
            redis_cache_in_use: mode != StorageMode::Hybrid || !self.redis_cache_stale,
        }
    }
}

fn view(state: &BackendState, used: bool) -> BackendView {
    BackendView {
        connected: used && state.up,
        latency: state
            .latency
            .filter(|_| used && state.up)
            .map(format_latency),
        used,
        error: if used && !state.up {
            state.last_error.clone()
        } else {
            None
        },
    }
}

/// "2ms" for whole milliseconds, "0.4ms" below 10 ms.
fn format_latency(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{:.1}ms", ms)
    } else {
        format!("{ms:.0}ms")
    }
}

impl Actor for RouterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.me = Some(ctx.address());
        let me = ctx.address().recipient::<BackendStateChanged>();
        if self.config.mode.uses_redis() {
            self.cache.subscribe(me.clone());
            self.cache
                .subscribe_events(ctx.address().recipient::<CacheEvent>());
        }
        if self.config.mode.uses_mysql() {
            self.store.subscribe(me);
        }
        if self.config.mode.uses_redis() {
            ctx.run_interval(COUNTER_FLUSH_INTERVAL, |_, ctx| {
                ctx.notify(usage::FlushCounters)
            });
            ctx.run_interval(ledger::ANNOUNCE_EVERY, |_, ctx| {
                ctx.notify(ledger::AnnounceLedger)
            });
        }
        ctx.run_interval(self.config.usage_batch_interval, |act, ctx| {
            act.kick_archive(ctx);
            if act.counters_trusted() && act.journal.stats().uncounted_records > 0 {
                ctx.notify(ledger::ReplayCounters);
            }
            act.refresh_redis_cache(ctx);
            // Belt and braces: the workers' view follows the router's even if a change
            // slipped past the places that publish it.
            act.publish_counting();
        });
        if let crate::ledger::journal::FsyncPolicy::Interval(every) = self.journal.fsync_policy() {
            ctx.run_interval(every, |act, _| {
                let journal = act.journal.clone();
                // The disk wait happens off the router's thread.
                tokio::task::spawn_blocking(move || {
                    if let Err(e) = journal.sync() {
                        log::error!("cannot force the usage journal to disk: {e}");
                    }
                });
            });
        }
        if self.config.mode == StorageMode::Mysql {
            ctx.run_interval(SWEEP_INTERVAL, |act, ctx| {
                if !act.mysql_up() {
                    return;
                }
                let store = act.store.clone();
                ctx.spawn(
                    async move {
                        let at = chrono::Utc::now();
                        match store
                            .exec(move |c| {
                                Box::pin(crate::persistence::ephemeral::sweep_expired(c, at))
                            })
                            .await
                        {
                            Ok(n) if n > 0 => log::debug!("swept {n} expired rows"),
                            Ok(_) => {}
                            Err(e) => log::warn!("sweeping expired rows failed: {e}"),
                        }
                    }
                    .into_actor(act),
                );
            });
        }
    }
}

impl Handler<BackendStateChanged> for RouterActor {
    type Result = ();

    fn handle(&mut self, msg: BackendStateChanged, ctx: &mut Self::Context) {
        match msg.backend {
            Backend::Redis => self.redis_probed = true,
            Backend::Mysql => self.mysql_probed = true,
        }
        if self.probed() {
            for waiter in self.probe_waiters.drain(..) {
                // A waiter that gave up (time-out) has dropped its receiver: nothing to tell.
                waiter.send(()).ok();
            }
        }
        match msg.backend {
            Backend::Redis => {
                if !msg.state.up {
                    // Invalidations published while Redis is away are lost: distrust the cache.
                    self.redis_cache_stale = true;
                    self.ledger_redis_down();
                }
                let came_back = msg.state.up && !self.redis.up;
                self.redis = msg.state;
                self.publish_counting();
                if came_back {
                    self.refresh_redis_cache(ctx);
                    // Its counters may be gone (restart without persistence): check first.
                    ctx.notify(ledger::EnsureEpoch);
                }
            }
            Backend::Mysql => {
                let came_back = msg.state.up && !self.mysql.up;
                self.mysql = msg.state;
                if came_back {
                    self.kick_archive(ctx);
                    self.write_pending_status_changes(ctx);
                }
            }
        }
    }
}

impl Handler<CacheEvent> for RouterActor {
    type Result = ();

    fn handle(&mut self, msg: CacheEvent, _ctx: &mut Self::Context) {
        self.on_event(&msg.payload);
    }
}

/// Cache figures for /metrics.
#[derive(Message)]
#[rtype(result = "CacheStats")]
pub struct GetCacheStats;

impl Handler<GetCacheStats> for RouterActor {
    type Result = MessageResult<GetCacheStats>;

    fn handle(&mut self, _: GetCacheStats, _ctx: &mut Self::Context) -> Self::Result {
        let (key_cache_hits, key_cache_misses) = self.hot.key_lookups();
        MessageResult(CacheStats {
            key_cache_hits,
            key_cache_misses,
            redis_calls: self.cache.calls(),
            mysql_calls: self.store.calls(),
            account_list_reads: self.account_loads.begun(),
            key_reads: self.key_loads.begun(),
        })
    }
}

/// Resolves once every backend the mode uses has reported its first probe (up or down).
#[derive(Message)]
#[rtype(result = "()")]
pub struct FirstProbes;

impl Handler<FirstProbes> for RouterActor {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: FirstProbes, _ctx: &mut Self::Context) -> Self::Result {
        if self.probed() {
            return Box::pin(async {});
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.probe_waiters.push(tx);
        Box::pin(async move {
            // The router stopping drops the sender: nothing more to wait for either.
            rx.await.ok();
        })
    }
}

impl Handler<GetHealth> for RouterActor {
    type Result = MessageResult<GetHealth>;

    fn handle(&mut self, _: GetHealth, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.health())
    }
}

/// Cloneable access to the router for HTTP handlers and commands. An HTTP worker's copy
/// (`for_worker`) also carries the worker's own cache actor for the hot path (`hot.rs`).
/// A clone is one reference count: a relayed request clones its handle several times
/// (lease guards, usage recording, spawned follow-ups), and each actor address inside
/// would otherwise allocate on every clone.
#[derive(Clone)]
pub struct RouterHandle(Arc<RouterParts>);

impl std::ops::Deref for RouterHandle {
    type Target = RouterParts;

    fn deref(&self) -> &RouterParts {
        &self.0
    }
}

/// What a [`RouterHandle`] holds.
#[derive(Clone)]
pub struct RouterParts {
    pub(crate) addr: Addr<RouterActor>,
    journal: Arc<Journal>,
    /// `TIMEZONE_OFFSET`: counter sets are named by local day and month.
    offset_hours: i32,
    mode: StorageMode,
    hot: Arc<HotView>,
    key_cache_ttl: Duration,
    worker_cache: Option<CacheHandle>,
    /// `USAGE_QUEUE_MAX_RECORDS`: past this many in `record_queue`, records wait in the
    /// journal for the replay.
    queue_max: usize,
    /// The worker's records waiting for their counting round trip (`hot.rs`).
    record_queue: Option<Arc<hot::RecordQueue>>,
    /// The worker's own tallies (counts and counter sums), kept apart from the others'.
    worker_local: Option<Arc<hot::WorkerLocal>>,
}

impl RouterHandle {
    /// Sends a message to the router; a stopped router is an internal error.
    pub(crate) async fn ask<M>(&self, msg: M) -> Result<M::Result, AppError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        RouterActor: Handler<M>,
        <RouterActor as Actor>::Context: ToEnvelope<RouterActor, M>,
    {
        self.addr
            .send(msg)
            .await
            .map_err(|_| AppError::Internal("router stopped".into()))
    }

    pub async fn cache_stats(&self) -> CacheStats {
        self.ask(GetCacheStats).await.unwrap_or_default()
    }

    /// Waits (at most `limit`) until every backend the mode uses has been probed once;
    /// false when `limit` passed first.
    pub async fn first_probes(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.addr.send(FirstProbes))
            .await
            .is_ok_and(|sent| sent.is_ok())
    }

    /// The current health, or `None` when the router did not answer within `limit`.
    pub async fn health(&self, limit: Duration) -> Option<HealthReport> {
        tokio::time::timeout(limit, self.addr.send(GetHealth))
            .await
            .ok()?
            .ok()
    }
}

/// The 503 answer when a backend the operation needs is down.
pub(crate) fn unavailable(backend: &str) -> AppError {
    AppError::StorageUnavailable(format!(
        "storage unavailable: {backend} is not reachable, try again shortly"
    ))
}
