//! The usage ledger's background work on the router: the archive writer (journal → MySQL,
//! once per event, checkpoint after each commit), counter replays (journal → Redis, once per
//! event by a bit per journal record), and `EnsureEpoch`: when Redis has lost the counters
//! (no ledger epoch) one instance rebuilds the limit counters from a consistent archive
//! snapshot and every instance counts again what came after its boundary.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::RouterActor;
use crate::actors::cache::CacheHandle;
use crate::actors::cache_migrate::CounterValue;
use crate::actors::cache_ops::{Applied, LedgerEpoch, UsageApply};
use crate::actors::persistence::PersistenceHandle;
use crate::config::StorageMode;
use crate::domain::limits::CounterUpdate;
use crate::domain::pricing::is_opus;
use crate::ledger::{ArchiveBoundary, CounterContext, Journal, JournalRecord};
use crate::persistence::usage::ArchiveItem;
use crate::persistence::{ledger as ledger_queries, usage as usage_queries};

/// Batches one archive pass may write before it lets other work run.
const ARCHIVE_BATCHES_PER_PASS: usize = 25;
/// Records one counter replay pass applies.
const REPLAY_PER_PASS: usize = 2_000;
/// Records a replay counts per round trip. A record of a replay carries all its counter
/// sets (sixteen, not the two limits read): a batch holding one applied before goes through
/// the record-by-record script with about 120 arguments per record, which Redis parses at
/// some 0.3 µs each; 32 keep such a script run near a millisecond.
const REPLAY_BATCH: usize = 32;
/// Rows read back from the archive per page when catching up with a new epoch.
const CATCH_UP_PAGE: i64 = 5_000;
/// Records of this instance applied again when Redis returns with its epoch: at most this
/// many, and only those of the last `RECOUNT_WINDOW` (far more than any replication lag at a
/// failover, far less than the applied bits live).
const RECOUNT_AFTER_OUTAGE: u64 = 20_000;
const RECOUNT_WINDOW: Duration = Duration::from_secs(600);

/// How often an instance counting into Redis says which epoch it has caught up with.
pub const ANNOUNCE_EVERY: Duration = Duration::from_millis(250);
/// An instance not heard of for this long is not waited for (stopped, or cut off from Redis:
/// it catches up when it is back).
const LIVE_FOR: Duration = Duration::from_secs(2);
/// Lifetime of the rebuild lock, renewed every third of it while the rebuild runs.
const REBUILD_LOCK_TTL: Duration = Duration::from_secs(3);
/// Announcements of instances gone this long are deleted.
const FORGET_AFTER: Duration = Duration::from_secs(3600);
/// A new epoch's counters are trusted only once it is this old: by then every live instance
/// has announced itself again (a wipe took the announcements with the counters).
const EPOCH_GRACE: Duration = Duration::from_millis(1_000);

/// Moves what waits in the journal into the archive now (also run on a timer).
#[derive(Message)]
#[rtype(result = "()")]
pub struct ArchiveUsage;

/// Applies the counters of journal records Redis does not have yet (after an outage, a
/// restart, or a rebuild): those journaled before the previous `ReplayCounters`. The newer
/// ones are most likely still on their way through the hot path.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ReplayCounters;

/// The next pass of a replay that found more records than one pass takes, under the same
/// bound: a bound moved at each pass would reach records the hot path is counting now, and
/// under load the passes would follow the hot path for good, counting every record twice
/// (once in vain) and tripling what Redis spends.
#[derive(Message)]
#[rtype(result = "()")]
struct ReplayMore {
    below: u64,
}

/// Makes sure Redis holds a ledger epoch this instance has caught up with: rebuilds the
/// limit counters when Redis lost them, catches up when another instance rebuilt them.
#[derive(Message)]
#[rtype(result = "()")]
pub struct EnsureEpoch;

/// Says in Redis which epoch this instance has caught up with, and trusts the epoch's limit
/// counters for admissions once every live instance has (each adds its own journal's tail
/// when it catches up: before that, the counters miss what it served).
#[derive(Message)]
#[rtype(result = "()")]
pub struct AnnounceLedger;

/// The ledger's standing with Redis.
#[derive(Default)]
pub struct LedgerState {
    /// The epoch this instance has caught up with; `None` until then.
    pub epoch: Option<String>,
    /// An `EnsureEpoch` is running.
    pub busy: bool,
    pub archiving: bool,
    pub replaying: bool,
    pub announcing: bool,
    /// Since when admissions have not trusted the counters (`None` while they do).
    pub untrusted_since: Option<Instant>,
    /// Records below this were appended before the last `ReplayCounters` (the newer ones
    /// are most likely still on their way through `RecordUsage`).
    pub replay_below: u64,
    /// The `run_id` of the Redis server the last announcement reached.
    pub server: Option<String>,
}

/// Counts this instance's newest records again: the Redis server changed (a failover or a
/// restart) and may lack the last writes the old one acknowledged.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RecountRecent;

impl RouterActor {
    /// Starts an archive pass unless one is running (each recorded event asks for one, so
    /// the archive trails the answers by about one MySQL transaction).
    pub(super) fn kick_archive(&mut self, ctx: &mut Context<Self>) {
        if !self.ledger.archiving && self.config.mode.uses_mysql() && self.mysql_up() {
            ctx.notify(ArchiveUsage);
        }
    }
}

impl Handler<ArchiveUsage> for RouterActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: ArchiveUsage, _ctx: &mut Self::Context) -> Self::Result {
        if self.ledger.archiving || !self.config.mode.uses_mysql() || !self.mysql_up() {
            return Box::pin(fut::ready(()));
        }
        self.ledger.archiving = true;
        let work = archive_pass(
            self.journal.clone(),
            self.store.clone(),
            self.config.usage_batch_size,
            self.config.timezone_offset_hours,
            self.config.mode == StorageMode::Mysql,
        );
        Box::pin(work.into_actor(self).map(|(archived, more), act, ctx| {
            act.ledger.archiving = false;
            act.usage_stats.archived += archived;
            if more {
                ctx.notify(ArchiveUsage);
            }
        }))
    }
}

/// Moves journal records into MySQL in batches, advancing the checkpoint only after each
/// commit; returns how many rows were new and whether more records are waiting. The next
/// batch is read and decoded from the journal while MySQL writes the current one (the two
/// run on different cores).
async fn archive_pass(
    journal: Arc<Journal>,
    store: PersistenceHandle,
    batch: usize,
    offset: i32,
    with_counters: bool,
) -> (u64, bool) {
    let read = |from: u64| {
        let reader = journal.clone();
        tokio::task::spawn_blocking(move || reader.read(from, batch))
    };
    let mut archived = 0u64;
    let mut next_read = Some(read(journal.archived_through()));
    for _ in 0..ARCHIVE_BATCHES_PER_PASS {
        let Some(reading) = next_read.take() else {
            return (archived, false);
        };
        let records = match reading.await {
            Ok(r) => r,
            Err(e) => {
                log::error!("journal read task failed: {e}");
                return (archived, false);
            }
        };
        let Some(last) = records.last() else {
            return (archived, false);
        };
        let next = last.seq + 1;
        let full = records.len() >= batch;
        // Read ahead only when a full batch suggests more is waiting.
        next_read = full.then(|| read(next));
        let oldest = full.then_some(last.event.created_at);
        let instance: Arc<str> = Arc::from(journal.instance_id());
        let items: Vec<ArchiveItem> = records
            .into_iter()
            .map(|r| ArchiveItem {
                counters: if with_counters {
                    r.counter_updates(offset)
                } else {
                    Vec::new()
                },
                journal: Some((instance.clone(), r.seq)),
                event: r.event,
            })
            .collect();
        match store
            .exec_archive(Duration::from_secs(30), move |c| {
                Box::pin(usage_queries::insert_journal_batch(c, items, offset))
            })
            .await
        {
            Ok(n) => archived += u64::try_from(n).unwrap_or(0),
            Err(e) => {
                log::warn!("usage archive write failed, the journal keeps the events: {e}");
                return (archived, false);
            }
        }
        if let Err(e) = journal.set_archived(next, oldest) {
            log::error!("cannot save the journal checkpoint: {e}");
        }
        if !full {
            return (archived, false);
        }
    }
    (archived, true)
}

impl Handler<ReplayCounters> for RouterActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: ReplayCounters, _ctx: &mut Self::Context) -> Self::Result {
        let below = std::mem::replace(&mut self.ledger.replay_below, self.journal.next_seq());
        self.replay_pass(below)
    }
}

impl Handler<ReplayMore> for RouterActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, msg: ReplayMore, _ctx: &mut Self::Context) -> Self::Result {
        self.replay_pass(msg.below)
    }
}

impl RouterActor {
    /// The records a replay may take are below this: below its tick's bound `below`, and
    /// older than any record a worker holds for counting, however old that one is.
    fn replay_bound(&self, below: u64) -> u64 {
        below.min(self.hot.oldest_held_for_counting())
    }

    /// Applies the counters of up to `REPLAY_PER_PASS` uncounted records below `below`,
    /// and asks for the next pass while some are left.
    fn replay_pass(&mut self, below: u64) -> ResponseActFuture<Self, ()> {
        if self.ledger.replaying || !self.counters_trusted() {
            return Box::pin(fut::ready(()));
        }
        let Some(epoch) = self.ledger.epoch.clone() else {
            return Box::pin(fut::ready(()));
        };
        let bound = self.replay_bound(below);
        let seqs: Vec<u64> = self
            .journal
            .uncounted(REPLAY_PER_PASS)
            .into_iter()
            .filter(|s| *s < bound)
            .collect();
        if seqs.is_empty() {
            if let Err(e) = self.journal.save_counted() {
                log::error!("cannot save the journal checkpoint: {e}");
            }
            return Box::pin(fut::ready(()));
        }
        self.ledger.replaying = true;
        let work = replay_counters(
            self.journal.clone(),
            self.cache.clone(),
            epoch,
            seqs,
            self.config.timezone_offset_hours,
            self.config.mode == StorageMode::Redis,
            true,
        );
        Box::pin(work.into_actor(self).map(move |replayed, act, ctx| {
            act.ledger.replaying = false;
            act.usage_stats.replayed += replayed.counted;
            if let Err(e) = act.journal.save_counted() {
                log::error!("cannot save the journal checkpoint: {e}");
            }
            match replayed.last {
                Some(Applied::NoEpoch | Applied::OtherEpoch) => ctx.notify(EnsureEpoch),
                Some(_)
                    if act
                        .journal
                        .uncounted(1)
                        .first()
                        .is_some_and(|s| *s < act.replay_bound(below)) =>
                {
                    ctx.notify(ReplayMore { below });
                }
                _ => {}
            }
        }))
    }
}

/// What a replay did: how the last application went (`None` when Redis failed), and how
/// many records it counted that Redis did not have.
struct Replayed {
    last: Option<Applied>,
    counted: u64,
}

/// Applies the counters of the journal records `seqs` (ascending) exactly once each; with
/// `limits` false it leaves out the limit counters (a rebuild already holds them) and
/// applies only the counter sets limits do not read.
async fn replay_counters(
    journal: Arc<Journal>,
    cache: CacheHandle,
    epoch: String,
    seqs: Vec<u64>,
    offset: i32,
    archive_in_redis: bool,
    limits: bool,
) -> Replayed {
    let mut replayed = Replayed {
        last: Some(Applied::Before),
        counted: 0,
    };
    let wanted: HashSet<u64> = seqs.iter().copied().collect();
    let Some(first) = seqs.first().copied() else {
        return replayed;
    };
    let span = seqs.last().map_or(1, |l| l - first + 1);
    let reader = journal.clone();
    let Ok(read) = tokio::task::spawn_blocking(move || {
        reader.read(first, usize::try_from(span).unwrap_or(usize::MAX))
    })
    .await
    else {
        replayed.last = None;
        return replayed;
    };
    let records: Vec<JournalRecord> = read
        .into_iter()
        .filter(|r| wanted.contains(&r.seq))
        .collect();
    // Records the journal no longer has (unreadable): nothing can be replayed for them.
    let found: HashSet<u64> = records.iter().map(|r| r.seq).collect();
    let missing: Vec<u64> = seqs
        .iter()
        .copied()
        .filter(|s| !found.contains(s))
        .collect();
    journal.mark_counted(&missing);
    // Records counted meanwhile (by the hot path's round trip) need nothing.
    let records: Vec<JournalRecord> = records
        .into_iter()
        .filter(|r| journal.is_uncounted(r.seq))
        .collect();
    for chunk in records.chunks(REPLAY_BATCH) {
        let prepared: Vec<(Vec<CounterUpdate>, Option<String>)> = chunk
            .iter()
            .map(|r| {
                let mut updates = r.counter_updates(offset);
                if !limits {
                    updates.retain(|u| {
                        !crate::domain::limits::is_limit_counter(&u.name, &r.event.api_key_id)
                    });
                }
                let event = archive_in_redis
                    .then(|| serde_json::to_string(&r.event).ok())
                    .flatten();
                (updates, event)
            })
            .collect();
        let applies: Vec<UsageApply<'_>> = chunk
            .iter()
            .zip(&prepared)
            .map(|(r, (updates, event))| UsageApply {
                epoch: &epoch,
                instance: journal.instance_id(),
                seq: r.seq,
                updates,
                release: None,
                archive: event.as_deref().map(|e| (r.event.api_key_id.as_str(), e)),
            })
            .collect();
        let codes = match cache.apply_usage_batch(&applies).await {
            Ok(codes) => codes,
            Err(e) => {
                log::warn!("counter replay paused, redis failed: {e}");
                replayed.last = None;
                return replayed;
            }
        };
        let mut applied = Vec::with_capacity(chunk.len());
        for (r, code) in chunk.iter().zip(codes) {
            replayed.last = Some(code);
            match code {
                Applied::Now | Applied::Before => {
                    applied.push(r.seq);
                    replayed.counted += u64::from(code == Applied::Now);
                }
                Applied::NoEpoch | Applied::OtherEpoch => break,
            }
        }
        journal.mark_counted(&applied);
        if applied.len() < chunk.len() {
            return replayed;
        }
    }
    replayed
}

impl Handler<EnsureEpoch> for RouterActor {
    type Result = ();

    fn handle(&mut self, _: EnsureEpoch, ctx: &mut Self::Context) {
        if self.ledger.busy || !self.counters_in_redis() {
            return;
        }
        self.ledger.busy = true;
        // No epoch yet: starting, or back from a Redis outage (perhaps a failover).
        let returning = self.ledger.epoch.is_none();
        self.set_trusted(None);
        let work = ensure_epoch(
            self.cache.clone(),
            self.store.clone(),
            self.journal.clone(),
            self.config.mode,
            self.config.timezone_offset_hours,
            returning,
        );
        ctx.spawn(work.into_actor(self).map(|outcome, act, ctx| {
            act.ledger.busy = false;
            match outcome {
                Ok(caught_up) => {
                    if caught_up.recounted {
                        act.usage_stats.rebuilds += 1;
                    }
                    if caught_up.built_here {
                        act.usage_stats.rebuilt_here += 1;
                    }
                    act.ledger.epoch = Some(caught_up.id);
                    act.local_limiter.clear_counters();
                    // Trusted for admissions once every live instance has caught up too.
                    ctx.notify(AnnounceLedger);
                    ctx.notify(ReplayCounters);
                }
                Err(e) => {
                    log::warn!("usage counters in redis not usable yet ({e}); retrying");
                    act.ledger.epoch = None;
                    // Several attempts can fail before one succeeds (Redis back, then the
                    // announcement, each asks for one): a retry left from an earlier failure
                    // must not run once caught up. It would distrust the counters for the
                    // length of a needless check and flip health to degraded meanwhile.
                    ctx.run_later(Duration::from_millis(500), |act, ctx| {
                        if act.ledger.epoch.is_none() {
                            ctx.notify(EnsureEpoch);
                        }
                    });
                }
            }
        }));
    }
}

impl Handler<AnnounceLedger> for RouterActor {
    type Result = ();

    fn handle(&mut self, _: AnnounceLedger, ctx: &mut Self::Context) {
        if self.ledger.announcing || !self.counters_in_redis() {
            return;
        }
        self.ledger.announcing = true;
        let mine = self.ledger.epoch.clone().filter(|_| !self.ledger.busy);
        let asked_with = mine.clone();
        let (cache, journal) = (self.cache.clone(), self.journal.clone());
        let work = async move {
            cache
                .announce_ledger(
                    journal.instance_id(),
                    mine.as_deref(),
                    LIVE_FOR,
                    FORGET_AFTER,
                )
                .await
        };
        ctx.spawn(work.into_actor(self).map(move |result, act, ctx| {
            act.ledger.announcing = false;
            // Redis failures are the health probe's business.
            let Ok(seen) = result else { return };
            if let Some(server) = seen.server.clone() {
                let changed = act.ledger.server.as_ref().is_some_and(|s| *s != server);
                act.ledger.server = Some(server);
                if changed {
                    ctx.notify(RecountRecent);
                }
            }
            // What Redis said predates a catch-up that ended meanwhile (it may not hold the
            // new epoch yet): the next announcement asks again.
            if act.ledger.busy || act.ledger.epoch != asked_with {
                return;
            }
            let ours = act.ledger.epoch.clone();
            if seen.epoch.is_none() {
                // Redis lost its counters: have them rebuilt now (under a lock, one instance
                // rebuilds; the others catch up), not only when an admission finds out;
                // admissions that wait for trust would otherwise wait for nothing.
                act.set_trusted(None);
                ctx.notify(EnsureEpoch);
                return;
            }
            if seen.epoch != ours {
                // Another instance rebuilt them: catch up (an idle instance learns it here).
                act.set_trusted(None);
                ctx.notify(EnsureEpoch);
                return;
            }
            let settled = ours.as_deref().is_some_and(|e| epoch_age(e) >= EPOCH_GRACE);
            let trusted = seen.behind == 0 && settled && act.counters_trusted();
            act.set_trusted(ours.filter(|_| trusted));
        }));
    }
}

impl Handler<RecountRecent> for RouterActor {
    type Result = ();

    fn handle(&mut self, _: RecountRecent, ctx: &mut Self::Context) {
        let Some(ours) = self.ledger.epoch.clone() else {
            // Not caught up: `EnsureEpoch` recounts when it is.
            return;
        };
        log::warn!(
            "the redis server changed (failover or restart): counting this instance's newest \
             usage records again, once each"
        );
        let (cache, journal) = (self.cache.clone(), self.journal.clone());
        let work = async move {
            match cache.ledger_epoch().await {
                Ok(Some(epoch)) if epoch.id == ours => {
                    recount_recent(&journal, &epoch).await;
                    true
                }
                // Gone or another epoch: the announcement finds out and catches up.
                Ok(_) => true,
                Err(e) => {
                    log::debug!("recount postponed, redis failed: {e}");
                    false
                }
            }
        };
        ctx.spawn(work.into_actor(self).map(|done, _, ctx| {
            if done {
                ctx.notify(ReplayCounters);
            } else {
                ctx.run_later(Duration::from_millis(500), |_, ctx| {
                    ctx.notify(RecountRecent)
                });
            }
        }));
    }
}

/// How long ago epoch `id` was made (its id starts with its creation time in ms); an id
/// without one is old.
fn epoch_age(id: &str) -> Duration {
    id.split_once('-')
        .and_then(|(ms, _)| ms.parse::<i64>().ok())
        .map_or(Duration::MAX, |ms| {
            let age = chrono::Utc::now().timestamp_millis().saturating_sub(ms);
            Duration::from_millis(u64::try_from(age).unwrap_or(0))
        })
}

/// Redis came back with the epoch this instance counts into, perhaps from a replica promoted
/// while it was away, which may lack the old master's last writes: marks our newest records
/// to be applied again (once each, by their applied bits). Only records after our boundary
/// in the epoch qualify: those before it came into the counters by the rebuild, without bits.
async fn recount_recent(journal: &Arc<Journal>, epoch: &LedgerEpoch) {
    let boundary = epoch
        .boundaries
        .get(journal.instance_id())
        .map_or(0, |b| b.seq);
    let from = journal
        .next_seq()
        .saturating_sub(RECOUNT_AFTER_OUTAGE)
        .max(boundary + 1);
    let since = chrono::Utc::now()
        - chrono::Duration::from_std(RECOUNT_WINDOW).unwrap_or(chrono::Duration::zero());
    let reader = journal.clone();
    let read = tokio::task::spawn_blocking(move || {
        reader.read(
            from,
            usize::try_from(RECOUNT_AFTER_OUTAGE).unwrap_or(usize::MAX),
        )
    })
    .await;
    let seqs: Vec<u64> = read
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.event.created_at >= since)
        .map(|r| r.seq)
        .collect();
    journal.recount(&seqs);
}

/// The epoch an instance caught up with.
struct EpochCaughtUp {
    id: String,
    /// This instance had to recount (a rebuild happened since it last looked).
    recounted: bool,
    /// This instance rebuilt the counters (one of all the instances does, per loss).
    built_here: bool,
}

/// Finds (or makes) the epoch in force and catches this instance up with it.
async fn ensure_epoch(
    cache: CacheHandle,
    store: PersistenceHandle,
    journal: Arc<Journal>,
    mode: StorageMode,
    offset: i32,
    returning: bool,
) -> Result<EpochCaughtUp, String> {
    let (epoch, built_here) = match cache.ledger_epoch().await.map_err(|e| e.to_string())? {
        Some(e) => (e, false),
        None => rebuild_epoch(&cache, &store, mode, offset).await?,
    };
    if journal.epoch().as_deref() == Some(epoch.id.as_str()) {
        if returning {
            recount_recent(&journal, &epoch).await;
        }
        return Ok(EpochCaughtUp {
            id: epoch.id,
            recounted: false,
            built_here,
        });
    }
    // A new epoch: its counters hold the archive up to our boundary; everything of ours
    // after it is counted again, exactly once (the applied bits are per epoch-less seq, so
    // what we counted into this epoch already stays counted).
    let archived = epoch
        .boundaries
        .get(journal.instance_id())
        .copied()
        .unwrap_or_default();
    let boundary = archived.seq;
    log::info!(
        "usage counters: epoch {} in force; counting this instance's events after #{boundary} again",
        epoch.id
    );
    // Ours that the rebuild's archive snapshot holds but that were never counted anywhere
    // (served while Redis was away or before the first epoch): the snapshot has their limit
    // counters; the other counter sets (account, model, hour, month) get them now.
    let covered: Vec<u64> = journal
        .uncounted(usize::MAX)
        .into_iter()
        .filter(|s| *s <= boundary)
        .collect();
    if !covered.is_empty() {
        match replay_counters(
            journal.clone(),
            cache.clone(),
            epoch.id.clone(),
            covered,
            offset,
            false,
            false,
        )
        .await
        .last
        {
            Some(Applied::Now | Applied::Before) => {}
            Some(other) => return Err(format!("epoch changed during catch-up ({other:?})")),
            None => return Err("redis failed during the catch-up".into()),
        }
    }
    journal.recount_from(boundary + 1);
    if mode.uses_mysql() {
        let mut after = archived;
        loop {
            let instance = journal.instance_id().to_string();
            let rows = store
                .exec(move |c| {
                    Box::pin(ledger_queries::rows_after(
                        c,
                        instance,
                        after,
                        CATCH_UP_PAGE,
                    ))
                })
                .await
                .map_err(|e| e.to_string())?;
            let Some(last) = rows.last().map(|r| ArchiveBoundary {
                seq: r.seq,
                row_id: r.row_id,
            }) else {
                break;
            };
            for row in &rows {
                let record = JournalRecord {
                    seq: row.seq,
                    counters: CounterContext {
                        opus: is_opus(&row.event.model),
                        weekly_reset: row.weekly_reset,
                        rate_window: None,
                    },
                    event: row.event.clone(),
                };
                let updates = record.counter_updates(offset);
                match cache
                    .apply_usage(UsageApply {
                        epoch: &epoch.id,
                        instance: journal.instance_id(),
                        seq: row.seq,
                        updates: &updates,
                        release: None,
                        archive: None,
                    })
                    .await
                    .map_err(|e| e.to_string())?
                {
                    Applied::Now | Applied::Before => journal.mark_counted(&[row.seq]),
                    other => return Err(format!("epoch changed during catch-up ({other:?})")),
                }
            }
            if i64::try_from(rows.len()).unwrap_or(0) < CATCH_UP_PAGE {
                break;
            }
            after = last;
        }
    }
    // The rest of our journal after the boundary (not archived when the snapshot was taken)
    // is counted before the counters are trusted: admissions in between would see less than
    // was served (a key over its daily limit was served again after a wipe). Records
    // appended meanwhile are left to the usual replay.
    let below = journal.next_seq();
    loop {
        let seqs: Vec<u64> = journal
            .uncounted(REPLAY_PER_PASS)
            .into_iter()
            .filter(|s| *s < below)
            .collect();
        if seqs.is_empty() {
            break;
        }
        match replay_counters(
            journal.clone(),
            cache.clone(),
            epoch.id.clone(),
            seqs,
            offset,
            mode == StorageMode::Redis,
            true,
        )
        .await
        .last
        {
            Some(Applied::Now | Applied::Before) => {}
            Some(other) => return Err(format!("epoch changed during catch-up ({other:?})")),
            None => return Err("redis failed during the catch-up".into()),
        }
    }
    if let Err(e) = journal.set_epoch(&epoch.id) {
        log::error!("cannot save the journal checkpoint: {e}");
    }
    Ok(EpochCaughtUp {
        id: epoch.id,
        recounted: true,
        built_here,
    })
}

/// Redis has no epoch: one instance (under a lock) rebuilds the limit counters from the
/// archive and installs a new epoch; the others wait for it. True when this instance built
/// the epoch it returns.
async fn rebuild_epoch(
    cache: &CacheHandle,
    store: &PersistenceHandle,
    mode: StorageMode,
    offset: i32,
) -> Result<(LedgerEpoch, bool), String> {
    let lock = super::ephemeral::EntryKind::Lock.name("ledger-rebuild");
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Some(e) = cache.ledger_epoch().await.map_err(|e| e.to_string())? {
            return Ok((e, false));
        }
        let token = uuid::Uuid::new_v4().to_string();
        let taken = cache
            .acquire_lock(&lock, token.clone(), REBUILD_LOCK_TTL)
            .await
            .map_err(|e| e.to_string())?;
        if !taken {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        // The lock lives a few seconds and is renewed while the rebuild runs: a process
        // that dies holding it (a command beside the relays, a killed instance) keeps the
        // others waiting for seconds, not for a minute.
        let renew = async {
            loop {
                tokio::time::sleep(REBUILD_LOCK_TTL / 3).await;
                match cache
                    .renew_lock(&lock, token.clone(), REBUILD_LOCK_TTL)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => break "the rebuild lock was lost".to_string(),
                    Err(e) => break format!("the rebuild lock could not be renewed: {e}"),
                }
            }
        };
        let rebuild = async {
            if let Some(e) = cache.ledger_epoch().await.map_err(|e| e.to_string())? {
                return Ok((e, false));
            }
            let snapshot = if mode.uses_mysql() {
                let now = chrono::Utc::now();
                store
                    .exec_with_timeout(Some(Duration::from_secs(60)), move |c| {
                        Box::pin(ledger_queries::snapshot(c, now, offset))
                    })
                    .await
                    .map_err(|e| format!("cannot read the usage archive: {e}"))?
            } else {
                ledger_queries::LedgerSnapshot::default()
            };
            let epoch = LedgerEpoch {
                // Its creation time first: instances judge the grace of a new epoch by it.
                id: format!(
                    "{}-{}",
                    chrono::Utc::now().timestamp_millis(),
                    uuid::Uuid::new_v4().simple()
                ),
                boundaries: snapshot.boundaries,
            };
            let counters: Vec<CounterValue> = snapshot
                .counters
                .into_iter()
                .map(|(name, counters, ttl_ms)| CounterValue {
                    name,
                    counters,
                    ttl_ms,
                })
                .collect();
            let installed = cache
                .install_epoch(&epoch, &counters, &lock, &token)
                .await
                .map_err(|e| e.to_string())?;
            if !installed {
                // Fenced out: this instance stalled past its lock and another took over.
                return Err("the rebuild lock was lost before the counters were installed".into());
            }
            log::warn!(
                "usage counters were missing in redis (restarted empty or flushed): rebuilt {} \
                 limit counters from the archive, epoch {}",
                counters.len(),
                epoch.id
            );
            Ok((epoch, true))
        };
        let result = tokio::select! {
            done = rebuild => done,
            lost = renew => Err(lost),
        };
        if let Err(e) = cache.release_lock(&lock, token).await {
            log::debug!("rebuild lock not released (it expires): {e}");
        }
        return result;
    }
    Err("timed out waiting for another instance to rebuild the usage counters".into())
}
