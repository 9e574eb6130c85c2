//! The per-worker hot path. Each HTTP worker gets its own copy of `RouterHandle` with its
//! own `CacheActor` (its own Redis connection) started on the worker's thread. A relayed
//! request then reads what it needs from `HotView` without a message (key cache, account
//! snapshot, whether the counters in Redis are trusted) and makes its admission and
//! recording round trips on its worker's connection: its messages never leave the thread.
//! The router keeps the view current and still answers everything off the common path
//! (a cache miss, an outage, a counter rebuild, mysql mode), exactly as before.

// foldhash: these maps are read and written on every request, and SipHash cost more than the
// rest of their lookups.
use foldhash::HashMap;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;

use super::usage::{LeaseRef, PendingCounters, RecordUsage};
use super::{RouterHandle, RouterParts, ledger::EnsureEpoch};
use crate::actors::cache::CacheHandle;
use crate::actors::cache_ops::{Applied, UsageApply};
use crate::domain::account::Account;
use crate::domain::api_key::ApiKey;
use crate::domain::limits::{Admission, AdmissionRequest, CounterUpdate, LaterCounters};
use crate::error::AppError;

/// Bound on cached key lookups, so random keys cannot grow memory without end.
const KEY_CACHE_CAPACITY: usize = 100_000;

/// A cached key lookup (None = unknown key) and when it was made.
type CachedKey = (Option<Arc<ApiKey>>, Instant);

/// An account list as the scheduler reads it (status changes applied) and when it was read.
struct AccountView {
    accounts: Arc<Vec<Account>>,
    at: Instant,
}

/// What the router shares with every worker. Written by the router, read by the workers
/// without a message; every field is either swapped whole or locked for a few instructions.
pub struct HotView {
    /// Key lookups: hash → record (None = unknown key) and when it was read.
    keys: RwLock<HashMap<String, CachedKey>>,
    key_ttl: Duration,
    accounts: ArcSwapOption<AccountView>,
    /// The ledger epoch while the limit counters in Redis are trusted (the workers then
    /// admit and count there themselves); None sends every admission to the router.
    counting: ArcSwapOption<String>,
    /// Counter deltas summed in process until the router's next flush (the router's own;
    /// each worker sums its own in its tallies).
    pending: Mutex<PendingCounters>,
    recorded: AtomicU64,
    key_hits: AtomicU64,
    key_misses: AtomicU64,
    /// Records left to the replay because their worker's queue was full.
    left_to_replay: AtomicU64,
    /// Every worker's tallies, summed and drained by the router.
    workers: Mutex<Vec<Arc<WorkerLocal>>>,
    /// The number of changes made to `keys` (an entry replaced or dropped; a new entry
    /// changes nothing a worker holds), and the latest of them: a worker whose copies are
    /// older drops the copies of what changed, or all of them when the log does not reach
    /// back that far. A key refreshed after its TTL so drops one copy, not every copy.
    keys_version: AtomicU64,
    key_changes: Mutex<VecDeque<(u64, KeyChange)>>,
    /// Bumped after each change of `accounts` and `counting`: a worker whose copy is of
    /// another version copies again.
    accounts_version: AtomicU64,
    counting_version: AtomicU64,
}

/// What one worker writes on every request, apart from what the other workers write: a
/// cache line written from two cores moves between them on every write (a lock taken, a
/// count added, a shared record's reference count). Aligned so that two workers' never
/// share a line.
#[derive(Default)]
#[repr(align(128))]
pub struct WorkerLocal {
    pending: Mutex<PendingCounters>,
    recorded: AtomicU64,
    key_hits: AtomicU64,
    /// The worker's own copies of what the view publishes, each with the version it was
    /// copied at: a request reads and clones these, not the shared ones.
    keys: Mutex<KeyCopies>,
    accounts: Mutex<Option<(u64, AccountView)>>,
    counting: Mutex<(u64, Option<Arc<String>>)>,
    /// The oldest journal record this worker holds for counting (queued or in its round
    /// trip): the router's replay leaves it and every newer one to the worker.
    held: HeldForCounting,
}

/// The sequence number of the oldest record a worker holds for counting; `u64::MAX` when
/// it holds none. Written only on the worker's thread, read by the router's replay.
pub(super) struct HeldForCounting(AtomicU64);

impl Default for HeldForCounting {
    fn default() -> Self {
        HeldForCounting(AtomicU64::new(u64::MAX))
    }
}

impl HeldForCounting {
    /// The worker takes record `seq` (before it is queued: the replay must never see it
    /// unheld). Records are queued in order, so an older one held keeps the mark.
    fn hold(&self, seq: u64) {
        self.0.fetch_min(seq, Ordering::AcqRel);
    }

    /// A round trip's records are settled: the worker holds only what is still queued,
    /// from `oldest_queued` on (None: nothing).
    fn settle(&self, oldest_queued: Option<u64>) {
        self.0
            .store(oldest_queued.unwrap_or(u64::MAX), Ordering::Release);
    }

    fn oldest(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }
}

/// How many of the latest key changes the view remembers for the workers catching up.
const KEY_CHANGES_KEPT: usize = 1024;

/// One change of the shared key cache, as the workers' copies must follow it.
enum KeyChange {
    Dropped(String),
    All,
}

/// A worker's copies of cached key lookups (records of its own, so cloning one counts a
/// reference only this worker writes), all dropped when the shared cache changes.
#[derive(Default)]
struct KeyCopies {
    version: u64,
    keys: HashMap<String, CachedKey>,
}

impl HotView {
    pub fn new(key_ttl: Duration) -> Self {
        HotView {
            keys: RwLock::default(),
            key_ttl,
            accounts: ArcSwapOption::empty(),
            counting: ArcSwapOption::empty(),
            pending: Mutex::default(),
            recorded: AtomicU64::new(0),
            key_hits: AtomicU64::new(0),
            key_misses: AtomicU64::new(0),
            left_to_replay: AtomicU64::new(0),
            workers: Mutex::default(),
            keys_version: AtomicU64::new(0),
            key_changes: Mutex::default(),
            accounts_version: AtomicU64::new(0),
            counting_version: AtomicU64::new(0),
        }
    }

    /// New tallies for a worker, counted in every sum from now on.
    fn register_worker(&self) -> Arc<WorkerLocal> {
        let tallies = Arc::new(WorkerLocal::default());
        if let Ok(mut workers) = self.workers.lock() {
            workers.push(tallies.clone());
        }
        tallies
    }

    /// Every worker's tallies (a copy of the list: the router reads it now and then).
    fn workers(&self) -> Vec<Arc<WorkerLocal>> {
        self.workers.lock().map(|w| w.clone()).unwrap_or_default()
    }

    /// The oldest journal record any worker holds for counting (`u64::MAX`: none). A
    /// replay that took it or a newer one would race the worker's own round trip: under
    /// load a worker's queue holds up to a second of records, and a replay counting them
    /// first (with every counter set, record by record) made Redis slower, the queues
    /// longer and the replay larger, until the load eased.
    pub(super) fn oldest_held_for_counting(&self) -> u64 {
        self.workers()
            .iter()
            .map(|w| w.held.oldest())
            .min()
            .unwrap_or(u64::MAX)
    }

    /// A lookup cached within the key TTL: `Some(None)` is a known-unknown key.
    pub(super) fn fresh_key(&self, hash: &str) -> Option<Option<Arc<ApiKey>>> {
        let keys = self.keys.read().ok()?;
        let (key, at) = keys.get(hash)?;
        (at.elapsed() < self.key_ttl).then(|| key.clone())
    }

    /// [`fresh_key`](Self::fresh_key) from `worker`'s copies, which it refreshes from the
    /// shared cache (copying the record) when they are older than its last change.
    fn worker_fresh_key(&self, hash: &str, worker: &WorkerLocal) -> Option<Option<Arc<ApiKey>>> {
        let version = self.keys_version.load(Ordering::Acquire);
        let mut copies = worker.keys.lock().ok()?;
        if copies.version != version {
            self.catch_up(&mut copies);
        }
        if let Some((key, at)) = copies.keys.get(hash)
            && at.elapsed() < self.key_ttl
        {
            return Some(key.clone());
        }
        let (key, at) = {
            let keys = self.keys.read().ok()?;
            let (key, at) = keys.get(hash)?;
            (key.as_deref().cloned().map(Arc::new), *at)
        };
        if at.elapsed() >= self.key_ttl {
            return None;
        }
        if copies.keys.len() >= KEY_CACHE_CAPACITY {
            copies.keys.clear();
        }
        copies.keys.insert(hash.to_string(), (key.clone(), at));
        Some(key)
    }

    /// Drops the copies of every key changed since `copies` were last brought up to date.
    fn catch_up(&self, copies: &mut KeyCopies) {
        let Ok(changes) = self.key_changes.lock() else {
            copies.keys.clear();
            return;
        };
        let reaches_back = changes
            .front()
            .is_some_and(|(number, _)| *number <= copies.version + 1);
        if !reaches_back {
            copies.keys.clear();
        }
        let since = copies.version;
        for (number, change) in changes.iter().filter(|(n, _)| *n > since) {
            match change {
                KeyChange::Dropped(hash) if reaches_back => {
                    copies.keys.remove(hash);
                }
                _ => copies.keys.clear(),
            }
            copies.version = *number;
        }
    }

    /// Logs a change of the shared key cache (made before this call) for the workers.
    fn key_changed(&self, change: KeyChange) {
        if let Ok(mut changes) = self.key_changes.lock() {
            let number = changes.back().map_or(1, |(n, _)| n + 1);
            if changes.len() >= KEY_CHANGES_KEPT {
                changes.pop_front();
            }
            changes.push_back((number, change));
            self.keys_version.store(number, Ordering::Release);
        }
    }

    /// A cached record whatever its age (both backends down: a key seen before works on).
    pub(super) fn any_key(&self, hash: &str) -> Option<Arc<ApiKey>> {
        self.keys
            .read()
            .ok()?
            .get(hash)
            .and_then(|(k, _)| k.clone())
    }

    /// Caches a lookup; unknown keys are dropped first when full, then everything stale.
    pub(super) fn remember_key(&self, hash: String, key: Option<ApiKey>) {
        let Ok(mut keys) = self.keys.write() else {
            return;
        };
        let mut change = None;
        if keys.len() >= KEY_CACHE_CAPACITY {
            let ttl = self.key_ttl;
            keys.retain(|_, (k, at)| k.is_some() && at.elapsed() < ttl);
            if keys.len() >= KEY_CACHE_CAPACITY {
                keys.clear();
            }
            change = Some(KeyChange::All);
        }
        let replaced = keys.insert(hash.clone(), (key.map(Arc::new), Instant::now()));
        drop(keys);
        match change {
            Some(all) => self.key_changed(all),
            None if replaced.is_some() => self.key_changed(KeyChange::Dropped(hash)),
            None => {}
        }
    }

    pub(super) fn forget_key(&self, hash: &str) {
        if let Ok(mut keys) = self.keys.write()
            && keys.remove(hash).is_some()
        {
            drop(keys);
            self.key_changed(KeyChange::Dropped(hash.to_string()));
        }
    }

    /// Counts a key lookup, in `worker`'s tallies when a worker made it.
    pub(super) fn count_key_lookup(&self, hit: bool, worker: Option<&WorkerLocal>) {
        let counter = match (hit, worker) {
            (true, Some(w)) => &w.key_hits,
            (true, None) => &self.key_hits,
            (false, _) => &self.key_misses,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// (hits, misses) of key lookups since start.
    pub(super) fn key_lookups(&self) -> (u64, u64) {
        let worker_hits: u64 = self
            .workers()
            .iter()
            .map(|w| w.key_hits.load(Ordering::Relaxed))
            .sum();
        (
            self.key_hits.load(Ordering::Relaxed) + worker_hits,
            self.key_misses.load(Ordering::Relaxed),
        )
    }

    /// The account list, when it was published within `ttl`.
    fn fresh_accounts(&self, ttl: Duration) -> Option<Arc<Vec<Account>>> {
        let view = self.accounts.load();
        let view = view.as_ref()?;
        (view.at.elapsed() < ttl).then(|| view.accounts.clone())
    }

    /// [`fresh_accounts`](Self::fresh_accounts) from `worker`'s copy, which it refreshes
    /// (copying the list) when it is older than the last one published.
    fn worker_fresh_accounts(
        &self,
        ttl: Duration,
        worker: &WorkerLocal,
    ) -> Option<Arc<Vec<Account>>> {
        let version = self.accounts_version.load(Ordering::Acquire);
        let mut copy = worker.accounts.lock().ok()?;
        if copy.as_ref().is_none_or(|(v, _)| *v != version) {
            let published = self.accounts.load();
            let view = published.as_ref()?;
            *copy = Some((
                version,
                AccountView {
                    accounts: Arc::new(Vec::clone(&view.accounts)),
                    at: view.at,
                },
            ));
        }
        let (_, view) = copy.as_ref()?;
        (view.at.elapsed() < ttl).then(|| view.accounts.clone())
    }

    /// Publishes the account list the scheduler reads (taken at `at`).
    pub(super) fn publish_accounts(&self, accounts: Arc<Vec<Account>>, at: Instant) {
        self.accounts
            .store(Some(Arc::new(AccountView { accounts, at })));
        self.accounts_version.fetch_add(1, Ordering::Release);
    }

    /// The account list changed: workers ask the router until it is published again.
    pub(super) fn clear_accounts(&self) {
        self.accounts.store(None);
        self.accounts_version.fetch_add(1, Ordering::Release);
    }

    /// Trusted counters under `epoch` (or none): whether workers count in Redis themselves.
    pub(super) fn publish_counting(&self, epoch: Option<&str>) {
        let current = self.counting.load();
        if current.as_deref().map(String::as_str) != epoch {
            self.counting.store(epoch.map(|e| Arc::new(e.to_string())));
            self.counting_version.fetch_add(1, Ordering::Release);
        }
    }

    /// The trusted epoch as `worker`'s copy, refreshed when another was published since.
    fn worker_counting_epoch(&self, worker: &WorkerLocal) -> Option<Arc<String>> {
        let version = self.counting_version.load(Ordering::Acquire);
        let mut copy = worker.counting.lock().ok()?;
        if copy.0 != version {
            let epoch = self.counting.load();
            *copy = (version, epoch.as_deref().map(|e| Arc::new(e.clone())));
        }
        copy.1.clone()
    }

    pub(super) fn add_pending(&self, updates: &[CounterUpdate]) {
        if let Ok(mut p) = self.pending.lock() {
            p.add(updates);
        }
    }

    /// Sums an event's later counters, in `worker`'s tallies when a worker counted it.
    pub(super) fn add_pending_later(&self, later: LaterCounters, worker: Option<&WorkerLocal>) {
        let pending = worker.map_or(&self.pending, |w| &w.pending);
        if let Ok(mut p) = pending.lock() {
            p.add_later(later);
        }
    }

    /// Everything pending, the router's and every worker's, summed by counter set and
    /// leaving nothing behind.
    pub(super) fn take_pending(&self) -> Vec<CounterUpdate> {
        let mut all = self
            .pending
            .lock()
            .map(|mut p| std::mem::take(&mut *p))
            .unwrap_or_default();
        for worker in self.workers() {
            if let Ok(mut p) = worker.pending.lock() {
                all.add(&p.take());
            }
        }
        all.take()
    }

    pub(super) fn pending_is_empty(&self) -> bool {
        let empty = |p: &Mutex<PendingCounters>| p.lock().map(|p| p.is_empty()).unwrap_or(true);
        empty(&self.pending) && self.workers().iter().all(|w| empty(&w.pending))
    }

    /// Counts a recorded event, in `worker`'s tallies when a worker recorded it.
    pub(super) fn count_recorded(&self, worker: Option<&WorkerLocal>) {
        worker
            .map_or(&self.recorded, |w| &w.recorded)
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a record left to the replay (its worker's queue was full): rare, and only
    /// under a load the workers' counting cannot keep up with.
    fn count_left_to_replay(&self) {
        self.left_to_replay.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn left_to_replay(&self) -> u64 {
        self.left_to_replay.load(Ordering::Relaxed)
    }

    pub(super) fn recorded(&self) -> u64 {
        let by_workers: u64 = self
            .workers()
            .iter()
            .map(|w| w.recorded.load(Ordering::Relaxed))
            .sum();
        self.recorded.load(Ordering::Relaxed) + by_workers
    }
}

impl RouterHandle {
    /// This handle for one HTTP worker: its hot-path round trips go to `cache`, a cache
    /// actor on the worker's own thread.
    pub fn for_worker(&self, cache: CacheHandle) -> RouterHandle {
        RouterHandle(Arc::new(RouterParts {
            worker_cache: Some(cache),
            record_queue: Some(Arc::default()),
            worker_local: Some(self.hot.register_worker()),
            ..RouterParts::clone(self)
        }))
    }

    /// The worker's own cache actor while the limit counters in Redis are trusted, with
    /// the epoch they are under.
    fn worker_counting(&self) -> Option<(&CacheHandle, Arc<String>)> {
        let cache = self.worker_cache.as_ref()?;
        let worker = self.worker_local.as_deref()?;
        Some((cache, self.hot.worker_counting_epoch(worker)?))
    }

    /// A key by the hash of its secret: from the shared cache when fresh, else the router.
    pub async fn find_key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>, AppError> {
        Ok(self
            .find_shared_key_by_hash(hash)
            .await?
            .map(Arc::unwrap_or_clone))
    }

    /// [`find_key_by_hash`](Self::find_key_by_hash) without copying the record out of the
    /// shared cache (the relay's path: a key has some forty fields).
    pub async fn find_shared_key_by_hash(
        &self,
        hash: &str,
    ) -> Result<Option<Arc<ApiKey>>, AppError> {
        let cached = match self.worker_local.as_deref() {
            Some(worker) => self.hot.worker_fresh_key(hash, worker),
            None => self.hot.fresh_key(hash),
        };
        if let Some(found) = cached {
            self.hot
                .count_key_lookup(true, self.worker_local.as_deref());
            return Ok(found);
        }
        let found = self
            .ask(super::keys::FindKeyByHash {
                hash: hash.to_string(),
            })
            .await??;
        Ok(found.map(Arc::new))
    }

    /// The accounts the scheduler chooses from: the published list when fresh, else the
    /// router's answer (which publishes it again).
    pub async fn scheduling_accounts(&self) -> Result<Arc<Vec<Account>>, AppError> {
        let cached = match self.worker_local.as_deref() {
            Some(worker) => self.hot.worker_fresh_accounts(self.key_cache_ttl, worker),
            None => self.hot.fresh_accounts(self.key_cache_ttl),
        };
        if let Some(accounts) = cached {
            return Ok(accounts);
        }
        self.account_snapshot().await.map(Arc::new)
    }

    /// Admission plus the value of the sticky-session entry `sticky`; `renew_sticky` is how
    /// long a found sticky entry lives on. On the worker's connection while the counters
    /// are trusted, else (and whenever that fails) through the router. The lease it grants
    /// says which way it went, so it is released the same way.
    pub async fn admit_for_request(
        &self,
        request: AdmissionRequest,
        sticky: Option<String>,
        renew_sticky: Duration,
    ) -> Result<(Admission, Option<String>, bool), AppError> {
        if let Some((cache, epoch)) = self.worker_counting() {
            // Limits are checked against the counters of the epoch every instance trusts.
            let counted = request.window.is_some() || !request.cost_limits.is_empty();
            let epoch = counted.then_some(epoch.as_str());
            if let Ok((Some(answer), found)) = cache
                .admit_with_sticky(&request, sticky.as_deref(), renew_sticky, epoch)
                .await
            {
                return Ok((answer, found, false));
            }
        }
        let (answer, found) = self.ask(super::usage::Admit { request, sticky }).await??;
        Ok((answer, found, true))
    }

    /// Ends a lease the way it was granted.
    pub async fn end_lease(&self, lease: &LeaseRef) {
        if !lease.via_router
            && let Some(cache) = &self.worker_cache
            && cache
                .release_lease(&lease.scope, &lease.lease_id)
                .await
                .is_ok()
        {
            return;
        }
        self.release_lease(&lease.scope, &lease.lease_id).await;
    }

    /// Counts a journaled record on the worker's connection when it can (and the lease
    /// was granted there); anything else goes to the router, which counts it or leaves
    /// it for the replay. Records that arrive while a counting round trip is under way
    /// wait for it and go together in the next one (one script run for all of them).
    pub(super) fn count_record(&self, record: RecordUsage) {
        self.hot.count_recorded(self.worker_local.as_deref());
        let via_router = record.release.as_ref().is_some_and(|l| l.via_router);
        let worker = self.worker_counting().filter(|_| !via_router);
        let (Some((cache, epoch)), Some(queue)) = (worker, self.record_queue.as_ref()) else {
            self.addr.do_send(record);
            return;
        };
        // Redis mode keeps the newest events in Redis too.
        let archive = (self.mode == crate::config::StorageMode::Redis)
            .then(|| serde_json::to_string(&record.event).ok())
            .flatten();
        if let Some(local) = self.worker_local.as_deref() {
            // Held before it is queued. Should the queue be full, it holds an older record,
            // so the mark does not move.
            local.held.hold(record.seq);
        }
        let queued = QueuedRecord {
            epoch,
            record,
            archive,
        };
        match queue.push_within(queued, self.queue_max) {
            Ok(true) => {
                let (cache, router, queue) = (cache.clone(), self.clone(), queue.clone());
                actix::spawn(async move { router.count_queued(&cache, &queue).await });
            }
            Ok(false) => {}
            Err(full) => self.leave_to_replay(full.record),
        }
    }

    /// A record the worker's queue has no room for: it stays uncounted in the journal, and
    /// the replay applies all its counter sets once no worker holds an older one. Its lease
    /// is released now. The queue is bounded because its records live in memory (about
    /// 2 KB each): when redis-server was starved of CPU, a worker fell a second behind, and
    /// RSS passed 150 MB in redis mode.
    fn leave_to_replay(&self, record: RecordUsage) {
        self.hot.count_left_to_replay();
        if let Some(lease) = record.release {
            let router = self.clone();
            actix::spawn(async move { router.end_lease(&lease).await });
        }
    }

    /// Counts the worker's queued records, a batch per round trip, until none is left.
    async fn count_queued(&self, cache: &CacheHandle, queue: &RecordQueue) {
        let mut busy = false;
        loop {
            if busy {
                // Under load (the last batch carried several records) the next one waits a
                // moment to gather more: a round trip costs Redis far more than a record.
                actix_rt::time::sleep(BATCH_LINGER).await;
            }
            let Some(batch) = queue.next_batch(RECORDS_PER_BATCH) else {
                break;
            };
            busy = lingers_after(batch.len());
            let applies: Vec<UsageApply<'_>> = batch
                .iter()
                .map(|q| UsageApply {
                    epoch: q.epoch.as_str(),
                    instance: self.journal.instance_id(),
                    seq: q.record.seq,
                    updates: &q.record.now,
                    release: q
                        .record
                        .release
                        .as_ref()
                        .map(|l| (l.scope.as_str(), l.lease_id.as_str())),
                    archive: q
                        .archive
                        .as_deref()
                        .map(|a| (q.record.event.api_key_id.as_str(), a)),
                })
                .collect();
            let applied = cache.apply_usage_batch(&applies).await;
            drop(applies);
            match applied {
                Ok(codes) => {
                    for (q, code) in batch.into_iter().zip(codes) {
                        self.after_counting(q.record, Ok(code));
                    }
                }
                Err(e) => {
                    log::warn!("usage counters not written to redis now (replayed later): {e}");
                    for q in batch {
                        self.after_counting(q.record, Err(()));
                    }
                }
            }
            // The batch is settled (counted, or left uncounted for the replay): the worker
            // now holds only what is queued. Records are queued on this thread, in order.
            if let Some(local) = self.worker_local.as_deref() {
                local.held.settle(queue.first(|q| q.record.seq));
            }
        }
    }

    /// What follows one record's counting round trip (`Err`: the round trip failed).
    fn after_counting(&self, record: RecordUsage, applied: Result<Applied, ()>) {
        let RecordUsage {
            seq,
            now,
            later,
            release,
            ..
        } = record;
        match applied {
            Ok(Applied::Now) => {
                self.journal.mark_counted(&[seq]);
                self.hot
                    .add_pending_later(later, self.worker_local.as_deref());
            }
            Ok(Applied::Before) => self.journal.mark_counted(&[seq]),
            Ok(Applied::NoEpoch | Applied::OtherEpoch) => {
                // Redis lost its counters (or another epoch began): the record stays
                // uncounted in the journal and is replayed once the router caught up.
                self.hot.publish_counting(None);
                self.addr.do_send(super::usage::CountLocally {
                    updates: later.updates(),
                });
                self.addr.do_send(EnsureEpoch);
            }
            Err(()) => {
                let mut all = now;
                all.extend(later.updates());
                self.addr
                    .do_send(super::usage::CountLocally { updates: all });
                // The script may not have run: the lease is released on its own.
                if let Some(lease) = release {
                    self.addr.do_send(super::usage::ReleaseLease::from(lease));
                }
            }
        }
    }
}

/// Most records one counting round trip carries. A script run holds Redis for about a
/// microsecond per record: 256 keeps that under a third of a millisecond, and lets a
/// worker whose thread is saturated (a round trip then waits several milliseconds for
/// its turn) count 10,000 records a second with round trips of up to 25 ms.
const RECORDS_PER_BATCH: usize = 256;
/// How long a worker under load lets records gather before its next counting round trip.
/// It delays counters and lease releases by about this much, never an answer.
const BATCH_LINGER: Duration = Duration::from_millis(1);

/// Whether the counting round trip after one of `records` waits `BATCH_LINGER` first: after
/// a batch of several (under load), so that the next gathers more; not after a full one,
/// which left more behind: a worker whose round trips are slow (its thread saturated) would
/// fall behind for good.
fn lingers_after(records: usize) -> bool {
    records > 1 && records < RECORDS_PER_BATCH
}

/// A journaled record waiting for its worker's counting round trip.
pub(super) struct QueuedRecord {
    epoch: Arc<String>,
    record: RecordUsage,
    /// Redis mode: the event as JSON for the capped archive lists.
    archive: Option<String>,
}

/// A worker's records waiting to be counted, and whether a round trip is under way.
pub(super) type RecordQueue = BatchQueue<QueuedRecord>;

/// Items queued by one side and taken in batches by the other, and whether a taker is under
/// way. Taking a batch costs the batch, not the queue: under load a worker's queue can hold
/// thousands of records (its counting round trips wait for its saturated thread), and a
/// `Vec` split at the front copied all the rest for every batch, then grew it again.
pub(super) struct BatchQueue<T> {
    inner: Mutex<(VecDeque<T>, bool)>,
}

impl<T> Default for BatchQueue<T> {
    fn default() -> Self {
        BatchQueue {
            inner: Mutex::new((VecDeque::new(), false)),
        }
    }
}

impl<T> BatchQueue<T> {
    /// Queues an item; true when no taker is under way (the caller starts one).
    #[cfg(test)]
    fn push(&self, item: T) -> bool {
        self.push_within(item, usize::MAX).unwrap_or(false)
    }

    /// Queues an item unless `max` wait already (`Err` gives it back); `Ok(true)` when no
    /// taker is under way (the caller starts one). One lock for the check and the push.
    fn push_within(&self, item: T, max: usize) -> Result<bool, T> {
        let Ok(mut inner) = self.inner.lock() else {
            return Err(item);
        };
        if inner.0.len() >= max {
            return Err(item);
        }
        inner.0.push_back(item);
        let start = !inner.1;
        inner.1 = true;
        Ok(start)
    }

    /// What `read` makes of the oldest item queued (None when the queue is empty).
    fn first<R>(&self, read: impl FnOnce(&T) -> R) -> Option<R> {
        self.inner.lock().ok()?.0.front().map(read)
    }

    /// The oldest `max` items at most; None (and no taker under way) when none is left.
    fn next_batch(&self, max: usize) -> Option<Vec<T>> {
        let mut inner = self.inner.lock().ok()?;
        if inner.0.is_empty() {
            inner.1 = false;
            return None;
        }
        let take = inner.0.len().min(max);
        Some(inner.0.drain(..take).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use std::sync::Arc;
    use std::time::Instant;

    use super::{HotView, WorkerLocal};
    use crate::domain::api_key::ApiKey;
    use crate::domain::limits::record_split_tests::event;
    use crate::domain::limits::{CounterUpdate, Counters, record_split};

    fn key(id: &str) -> ApiKey {
        ApiKey::new(id.into(), format!("name of {id}"), format!("hash of {id}"))
    }

    /// The record a worker finds for `hash` (None: not cached or stale).
    fn found(hot: &HotView, worker: &WorkerLocal, hash: &str) -> Option<Arc<ApiKey>> {
        hot.worker_fresh_key(hash, worker).flatten()
    }

    #[test]
    fn the_replay_bound_is_the_oldest_record_any_worker_holds_for_counting() {
        let hot = HotView::new(Duration::from_secs(60));
        assert_eq!(hot.oldest_held_for_counting(), u64::MAX, "no worker yet");
        let (a, b) = (hot.register_worker(), hot.register_worker());
        assert_eq!(hot.oldest_held_for_counting(), u64::MAX, "nothing held");
        a.held.hold(10);
        a.held.hold(12);
        b.held.hold(11);
        assert_eq!(hot.oldest_held_for_counting(), 10);
        // a's round trip with 10 and 12 settled; 14 was queued meanwhile.
        a.held.hold(14);
        a.held.settle(Some(14));
        assert_eq!(hot.oldest_held_for_counting(), 11);
        b.held.settle(None);
        assert_eq!(hot.oldest_held_for_counting(), 14);
        a.held.settle(None);
        assert_eq!(hot.oldest_held_for_counting(), u64::MAX);
    }

    #[test]
    fn a_batch_queue_shows_its_oldest_item_until_it_is_taken() {
        let queue = super::BatchQueue::default();
        assert_eq!(queue.first(|n: &u64| *n), None);
        assert!(queue.push(5), "the first item starts a taker");
        assert!(!queue.push(6), "a taker is under way");
        assert_eq!(queue.push_within(7, 2), Err(7), "two wait already");
        assert_eq!(queue.first(|n| *n), Some(5));
        assert_eq!(queue.next_batch(1), Some(vec![5]));
        assert_eq!(queue.first(|n| *n), Some(6));
        assert_eq!(queue.next_batch(8), Some(vec![6]));
        assert_eq!(queue.first(|n| *n), None);
        assert_eq!(queue.next_batch(8), None);
    }

    #[test]
    fn a_worker_follows_every_change_of_the_shared_key_cache_with_copies_of_its_own() {
        let hot = HotView::new(Duration::from_secs(60));
        let worker = hot.register_worker();
        hot.remember_key("ha".into(), Some(key("a")));
        hot.remember_key("hb".into(), Some(key("b")));
        hot.remember_key("hu".into(), None);
        let a = found(&hot, &worker, "ha").expect("a is cached");
        let b = found(&hot, &worker, "hb").expect("b is cached");
        assert_eq!(a.id, "a");
        assert_eq!(
            hot.worker_fresh_key("hu", &worker),
            Some(None),
            "known unknown"
        );
        assert_eq!(hot.worker_fresh_key("hx", &worker), None, "never looked up");
        // The worker's own record, not the shared one: cloning it counts only its reference.
        let shared = hot.fresh_key("ha").flatten().expect("shared a");
        assert!(!Arc::ptr_eq(&a, &shared));
        assert!(Arc::ptr_eq(
            &a,
            &found(&hot, &worker, "ha").expect("a again")
        ));

        // A new key changes nothing the worker holds; a replaced one drops its copy alone.
        hot.remember_key("hc".into(), Some(key("c")));
        let mut changed = key("a");
        changed.name = "renamed".into();
        hot.remember_key("ha".into(), Some(changed));
        assert_eq!(
            found(&hot, &worker, "ha")
                .map(|k| k.name.clone())
                .as_deref(),
            Some("renamed")
        );
        assert!(Arc::ptr_eq(
            &b,
            &found(&hot, &worker, "hb").expect("b kept")
        ));
        assert_eq!(
            found(&hot, &worker, "hc").map(|k| k.id.clone()).as_deref(),
            Some("c")
        );

        // An unknown key that becomes known, and a forgotten key.
        hot.remember_key("hu".into(), Some(key("u")));
        hot.forget_key("hb");
        assert_eq!(
            found(&hot, &worker, "hu").map(|k| k.id.clone()).as_deref(),
            Some("u")
        );
        assert_eq!(hot.worker_fresh_key("hb", &worker), None);

        // More changes than the log keeps: the worker starts over from the shared cache.
        let c = found(&hot, &worker, "hc").expect("c");
        // (the first of these is a new entry, the others replace it: one change each)
        for _ in 0..=super::KEY_CHANGES_KEPT + 1 {
            hot.remember_key("hz".into(), None);
        }
        let c_again = found(&hot, &worker, "hc").expect("c after the log overflowed");
        assert!(!Arc::ptr_eq(&c, &c_again));
        assert_eq!(c.id, c_again.id);
        assert_eq!(hot.worker_fresh_key("hb", &worker), None);
    }

    #[test]
    fn a_worker_copies_the_account_list_and_the_epoch_each_time_they_are_published() {
        let hot = HotView::new(Duration::from_secs(60));
        let worker = hot.register_worker();
        let ttl = Duration::from_secs(60);
        assert!(
            hot.worker_fresh_accounts(ttl, &worker).is_none(),
            "none published"
        );
        let list = |ids: &[&str]| {
            let now = chrono::Utc::now();
            Arc::new(
                ids.iter()
                    .map(|id| {
                        crate::service::accounts::blank(
                            (*id).into(),
                            crate::domain::account::AccountType::ClaudeConsole,
                            now,
                        )
                    })
                    .collect::<Vec<_>>(),
            )
        };
        let names = |l: Option<Arc<Vec<crate::domain::account::Account>>>| {
            l.map(|l| l.iter().map(|a| a.name.clone()).collect::<Vec<_>>())
        };
        let published = list(&["one"]);
        hot.publish_accounts(published.clone(), Instant::now());
        let copy = hot.worker_fresh_accounts(ttl, &worker).expect("published");
        assert!(
            !Arc::ptr_eq(&copy, &published),
            "a copy of the worker's own"
        );
        assert_eq!(names(Some(copy.clone())), Some(vec!["one".to_string()]));
        let again = hot.worker_fresh_accounts(ttl, &worker).expect("still");
        assert!(Arc::ptr_eq(&copy, &again), "copied once per publication");
        hot.publish_accounts(list(&["one", "two"]), Instant::now());
        assert_eq!(
            names(hot.worker_fresh_accounts(ttl, &worker)),
            Some(vec!["one".to_string(), "two".to_string()])
        );
        hot.clear_accounts();
        assert!(hot.worker_fresh_accounts(ttl, &worker).is_none(), "cleared");
        hot.publish_accounts(list(&["three"]), Instant::now() - Duration::from_secs(61));
        assert!(hot.worker_fresh_accounts(ttl, &worker).is_none(), "stale");

        // The epoch the worker counts under follows each publication.
        assert_eq!(hot.worker_counting_epoch(&worker), None);
        for published in [Some("e1"), None, Some("e2"), Some("e2")] {
            hot.publish_counting(published);
            let epoch = hot.worker_counting_epoch(&worker);
            assert_eq!(epoch.as_deref().map(String::as_str), published);
        }
    }

    fn by_name(updates: Vec<CounterUpdate>) -> std::collections::BTreeMap<String, Counters> {
        updates.into_iter().map(|u| (u.name, u.delta)).collect()
    }

    #[test]
    fn the_router_sums_and_drains_every_workers_tallies() {
        let hot = HotView::new(Duration::from_secs(60));
        let (one, two) = (hot.register_worker(), hot.register_worker());
        let later = |input| {
            record_split(
                &event(5, input, "a1", "claude-sonnet-4"),
                0,
                false,
                (1, 0),
                None,
            )
            .1
        };
        hot.add_pending_later(later(10), Some(&one));
        hot.add_pending_later(later(20), Some(&two));
        hot.add_pending_later(later(30), None);
        for worker in [Some(&*one), Some(&*two), Some(&*two), None] {
            hot.count_recorded(worker);
            hot.count_key_lookup(true, worker);
        }
        hot.count_key_lookup(false, None);
        assert_eq!(hot.recorded(), 4);
        assert_eq!(hot.key_lookups(), (4, 1));
        assert!(!hot.pending_is_empty());

        // The same sets, summed once each: as if one worker had counted all three events.
        let alone = HotView::new(Duration::from_secs(60));
        for input in [10, 20, 30] {
            alone.add_pending_later(later(input), None);
        }
        let summed = by_name(hot.take_pending());
        assert!(!summed.is_empty());
        assert_eq!(summed, by_name(alone.take_pending()));
        let key_total = summed
            .iter()
            .find(|(name, _)| name.contains("k1") && name.ends_with("total"))
            .map(|(_, c)| *c);
        assert_eq!(key_total.map(|c| c.input_tokens), Some(60), "{summed:?}");
        assert!(hot.pending_is_empty());
        assert!(hot.take_pending().is_empty());
    }

    #[test]
    fn a_counting_round_trip_lingers_only_after_a_partial_batch_of_several() {
        use super::{RECORDS_PER_BATCH, lingers_after};
        assert!(!lingers_after(1), "a lone record: no load, no wait");
        assert!(lingers_after(2));
        assert!(lingers_after(RECORDS_PER_BATCH - 1));
        assert!(
            !lingers_after(RECORDS_PER_BATCH),
            "a full batch left more behind"
        );
    }

    #[test]
    fn a_batch_queue_hands_out_its_items_in_order_and_a_batch_at_most() {
        use super::BatchQueue;
        let queue = BatchQueue::default();
        assert!(queue.push(0), "the first item starts a taker");
        for n in 1..1000 {
            assert!(!queue.push(n), "a taker is under way");
        }
        let mut taken = Vec::new();
        while let Some(batch) = queue.next_batch(256) {
            assert!(!batch.is_empty() && batch.len() <= 256, "{}", batch.len());
            if taken.len() == 256 {
                // Items queued while batches are taken come after the others.
                assert!(!queue.push(1000));
            }
            taken.extend(batch);
        }
        assert_eq!(taken, (0..=1000).collect::<Vec<_>>());
        assert!(
            queue.push(1001),
            "the queue ran empty: the next item starts a taker"
        );
        assert_eq!(queue.next_batch(256), Some(vec![1001]));
        assert_eq!(queue.next_batch(256), None);
    }
}
