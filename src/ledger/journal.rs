//! The local journal of one relay instance: numbered records in segment files
//! (`seg-<first seq>.jrn`) under a directory this process holds a lock on, a checkpoint of
//! what has been archived and what has been counted, and the reading side for the archive
//! writer and counter replays. Appends are copies into the active segment's shared memory map
//! (`mapped`: a killed process loses nothing, the kernel has the pages); `USAGE_JOURNAL_FSYNC`
//! decides what a host crash can lose.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::mapped::MappedSegment;
use super::record::{self, CounterContext, Frame, JournalRecord};
use super::sealer::Sealer;
use crate::domain::usage_event::UsageEvent;

/// A segment is allocated to this size and sealed when the next record does not fit.
const SEGMENT_BYTES: usize = 4 * 1024 * 1024;
/// Bytes read from a segment at a time.
const READ_CHUNK: usize = 1024 * 1024;

/// When appended records are forced to disk (`USAGE_JOURNAL_FSYNC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Never: a host crash can lose what the kernel had not written back yet.
    Never,
    /// After every record: nothing is lost, each append waits for the disk.
    Always,
    /// Every so often, in the background: a host crash loses at most that much.
    Interval(Duration),
}

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("the usage journal directory {0} is in use by another relay process")]
    Locked(PathBuf),
    #[error("the usage journal is full ({used} bytes of {limit} allowed)")]
    Full { used: u64, limit: u64 },
    #[error("the usage journal cannot be written: {0}")]
    Io(#[from] io::Error),
    #[error("a usage record cannot be encoded: {0}")]
    Encode(#[from] serde_json::Error),
}

/// What `/metrics`, `/health` and `diagnose` show of the journal.
#[derive(Debug, Clone, Copy, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct JournalStats {
    /// Records appended and not archived yet.
    pub unarchived_records: u64,
    /// Bytes of those records (segments still held, less what is archived of the first).
    pub unarchived_bytes: u64,
    /// Age of the oldest record not archived yet.
    pub oldest_unarchived_secs: f64,
    /// Records whose counters are not in Redis yet.
    pub uncounted_records: u64,
    pub appended: u64,
    pub append_failures: u64,
    pub corrupt_records: u64,
}

/// Where the archive writer and the counter replay stand; kept in `checkpoint`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
struct Checkpoint {
    /// Every record below this sequence number is archived.
    archived: u64,
    /// Every record below this sequence number has its counters applied.
    counted: u64,
    /// The ledger epoch (of Redis) the counted records were counted into.
    #[serde(default)]
    epoch: Option<String>,
}

/// Where a journal's records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JournalMode {
    /// Into the MySQL archive, counters with them (mysql mode).
    Archive,
    /// Into Redis, archive lists and counters in one step (redis mode).
    Counters,
    /// Into the MySQL archive and, apart, the Redis counters (hybrid).
    Both,
}

struct Segment {
    path: PathBuf,
    /// Bytes of whole records in it.
    bytes: u64,
    last_seq: Option<u64>,
}

struct Active {
    segment: MappedSegment,
    first_seq: u64,
}

struct Inner {
    active: Option<Active>,
    segments: BTreeMap<u64, Segment>,
    next_seq: u64,
    checkpoint: Checkpoint,
    /// Appended records whose counters are not applied yet (only when counters are kept
    /// apart from the archive, i.e. in Redis).
    uncounted: BTreeSet<u64>,
    /// Position after the last record the archive writer read: (seq, segment, offset).
    read_hint: Option<(u64, u64, u64)>,
    oldest_unarchived: Option<DateTime<Utc>>,
    held_bytes: u64,
    stats: JournalStats,
    /// The frame being appended, kept to reuse its allocation.
    frame: Vec<u8>,
}

/// One instance's journal. Shared (`Arc`) by every HTTP worker and the archive writer;
/// the lock inside is held for one copy into the active segment per append.
pub struct Journal {
    dir: PathBuf,
    instance_id: String,
    fsync: FsyncPolicy,
    max_bytes: u64,
    /// Counters are applied apart from the archive (Redis): records wait for both.
    track_counters: bool,
    /// The archive is the counting step itself (redis mode).
    archive_is_counting: bool,
    inner: Mutex<Inner>,
    /// Full segments are synced, unmapped and trimmed there, not on the appending worker.
    sealer: Sealer,
    /// Held for the journal's lifetime: one process per directory.
    _lock: File,
}

impl Journal {
    /// Opens (or creates) the journal in `dir` for records that go where `mode` says.
    /// `max_bytes` (0 = no limit) bounds the disk the journal may use.
    pub fn open(
        dir: &Path,
        fsync: FsyncPolicy,
        max_bytes: u64,
        mode: JournalMode,
    ) -> Result<Journal, JournalError> {
        let track_counters = mode != JournalMode::Archive;
        let archive_is_counting = mode == JournalMode::Counters;
        fs::create_dir_all(dir)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join("lock"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(JournalError::Locked(dir.into())),
            Err(fs::TryLockError::Error(e)) => return Err(e.into()),
        }
        let instance_id = instance_id(dir)?;
        let checkpoint = read_checkpoint(dir);
        let (archived_from, counted_from) = (checkpoint.archived, checkpoint.counted);
        let mut inner = Inner {
            active: None,
            segments: BTreeMap::new(),
            next_seq: 1,
            checkpoint,
            uncounted: BTreeSet::new(),
            read_hint: None,
            oldest_unarchived: None,
            held_bytes: 0,
            stats: JournalStats::default(),
            frame: Vec::with_capacity(512),
        };
        for (first, path) in segment_files(dir)? {
            let (records, bytes, corrupt) = scan_segment(&path)?;
            inner.stats.corrupt_records += corrupt;
            let last_seq = records.last().map(|r| r.seq);
            for r in &records {
                if track_counters && r.seq >= counted_from {
                    inner.uncounted.insert(r.seq);
                }
                if r.seq >= archived_from && inner.oldest_unarchived.is_none() {
                    inner.oldest_unarchived = Some(r.event.created_at);
                }
            }
            if let Some(last) = last_seq {
                inner.next_seq = inner.next_seq.max(last + 1);
            }
            inner.held_bytes += bytes;
            inner.segments.insert(
                first,
                Segment {
                    path,
                    bytes,
                    last_seq,
                },
            );
        }
        // The checkpoint may be ahead of what is left (segments deleted after it was saved).
        inner.next_seq = inner.next_seq.max(archived_from).max(counted_from);
        if !track_counters {
            inner.checkpoint.counted = inner.checkpoint.archived;
        }
        if archive_is_counting {
            inner.checkpoint.archived = inner.uncounted.first().copied().unwrap_or(inner.next_seq);
        }
        let journal = Journal {
            dir: dir.to_path_buf(),
            instance_id,
            fsync,
            max_bytes,
            track_counters,
            archive_is_counting,
            inner: Mutex::new(inner),
            sealer: Sealer::start(dir, SEGMENT_BYTES),
            _lock: lock,
        };
        journal.delete_done_segments();
        Ok(journal)
    }

    /// This journal's identity, stable across restarts on the same directory (archive rows
    /// carry it with the sequence number).
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn fsync_policy(&self) -> FsyncPolicy {
        self.fsync
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends one event; returns its sequence number once the kernel has it.
    pub fn append(
        &self,
        event: &UsageEvent,
        counters: &CounterContext,
    ) -> Result<u64, JournalError> {
        let mut sealed = None;
        let appended = self.append_locked(event, counters, &mut sealed);
        // A full segment is synced and trimmed on the sealing thread: neither this worker
        // nor the others (waiting for the lock) wait for its pages to reach the disk.
        if let Some(segment) = sealed {
            self.sealer.seal(segment, self.fsync != FsyncPolicy::Never);
        }
        appended
    }

    fn append_locked(
        &self,
        event: &UsageEvent,
        counters: &CounterContext,
        sealed: &mut Option<MappedSegment>,
    ) -> Result<u64, JournalError> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let seq = inner.next_seq;
        let mut frame = std::mem::take(&mut inner.frame);
        let written = record::encode_into(&mut frame, seq, event, counters)
            .map_err(JournalError::from)
            .and_then(|()| self.write_record(inner, seq, &frame, sealed));
        let size = frame.len() as u64;
        inner.frame = frame;
        if let Err(e) = written {
            inner.stats.append_failures += 1;
            return Err(e);
        }
        inner.next_seq = seq + 1;
        inner.held_bytes += size;
        inner.stats.appended += 1;
        if self.track_counters {
            inner.uncounted.insert(seq);
        }
        if inner.oldest_unarchived.is_none() {
            inner.oldest_unarchived = Some(event.created_at);
        }
        Ok(seq)
    }

    fn write_record(
        &self,
        inner: &mut Inner,
        seq: u64,
        frame: &[u8],
        sealed: &mut Option<MappedSegment>,
    ) -> Result<(), JournalError> {
        let size = frame.len() as u64;
        if self.max_bytes > 0 && inner.held_bytes + size > self.max_bytes {
            return Err(JournalError::Full {
                used: inner.held_bytes,
                limit: self.max_bytes,
            });
        }
        let current = match (&inner.active, inner.segments.last_key_value()) {
            (Some(a), Some((first, _))) => *first == a.first_seq && a.segment.fits(frame.len()),
            _ => false,
        };
        if !current {
            *sealed = inner.active.take().map(|a| a.segment);
            let path = self.dir.join(segment_name(seq));
            let segment = match self.sealer.take_spare(&path) {
                Some(spare) => spare,
                None => MappedSegment::create(&path, SEGMENT_BYTES).inspect_err(|_| {
                    // A file that could not be given its size (a full disk) is no segment.
                    if let Err(e) = fs::remove_file(&path) {
                        log::debug!("no journal segment {} to remove: {e}", path.display());
                    }
                })?,
            };
            inner.active = Some(Active {
                segment,
                first_seq: seq,
            });
            inner.segments.insert(
                seq,
                Segment {
                    path,
                    bytes: 0,
                    last_seq: None,
                },
            );
        }
        let Some(active) = inner.active.as_mut() else {
            return Err(JournalError::Io(io::Error::other("no active segment")));
        };
        if !active.segment.append(frame) {
            return Err(JournalError::Io(io::Error::other(
                "a usage record larger than a journal segment",
            )));
        }
        if self.fsync == FsyncPolicy::Always
            && let Err(e) = active.segment.sync_last(frame.len())
        {
            // Not on disk: taken back, so that what is read later is what was acknowledged.
            active.segment.undo_last(frame.len());
            return Err(e.into());
        }
        let first = active.first_seq;
        let Some(segment) = inner.segments.get_mut(&first) else {
            return Err(JournalError::Io(io::Error::other("active segment unknown")));
        };
        segment.bytes += size;
        segment.last_seq = Some(seq);
        Ok(())
    }

    /// Forces appended records to disk (`USAGE_JOURNAL_FSYNC` interval).
    pub fn sync(&self) -> io::Result<()> {
        let (file, len) = match &self.lock().active {
            Some(a) => a.segment.written()?,
            None => return Ok(()),
        };
        super::mapped::sync_written(&file, len)
    }

    /// The counters of `seq` are applied (or never will be needed).
    pub fn mark_counted(&self, seqs: &[u64]) {
        let mut inner = self.lock();
        for s in seqs {
            inner.uncounted.remove(s);
        }
    }

    /// Forgets which records were counted from `from` on: after Redis came back empty, every
    /// record not in the rebuilt counters has to be applied again. Only records still in the
    /// journal can be; older ones come from the archive (the caller reads them there).
    /// Records before `from` are in the rebuilt counters (the rebuild read them from the
    /// archive), so any of them still waiting to be counted is counted now: replaying it
    /// would count it twice.
    pub fn recount_from(&self, from: u64) {
        if !self.track_counters {
            return;
        }
        let mut inner = self.lock();
        inner.uncounted = inner.uncounted.split_off(&from);
        let next = inner.next_seq;
        let start = from.max(inner.segments.keys().next().copied().unwrap_or(next));
        for s in start..next {
            inner.uncounted.insert(s);
        }
    }

    /// Marks `seqs` (records still in the journal) to be counted again, keeping what already
    /// waits: after a Redis failover the promoted replica may lack the last writes of the old
    /// master (replication is asynchronous). Only records counted one by one into the epoch
    /// in force qualify: their applied bits travel in the same script as their counters, so
    /// applying them again adds exactly what the replica lacks.
    pub fn recount(&self, seqs: &[u64]) {
        if !self.track_counters {
            return;
        }
        let mut inner = self.lock();
        inner.uncounted.extend(seqs.iter().copied());
    }

    /// The ledger epoch the counted records were counted into.
    pub fn epoch(&self) -> Option<String> {
        self.lock().checkpoint.epoch.clone()
    }

    /// Counting now goes into `epoch`; saved with the checkpoint.
    pub fn set_epoch(&self, epoch: &str) -> io::Result<()> {
        self.lock().checkpoint.epoch = Some(epoch.to_string());
        self.save_counted()
    }

    /// Up to `max` sequence numbers whose counters are still to be applied, oldest first.
    pub fn uncounted(&self, max: usize) -> Vec<u64> {
        self.lock().uncounted.iter().take(max).copied().collect()
    }

    /// Whether the record `seq` still waits to be counted in Redis.
    pub fn is_uncounted(&self, seq: u64) -> bool {
        self.lock().uncounted.contains(&seq)
    }

    /// The next sequence number to be archived.
    pub fn archived_through(&self) -> u64 {
        self.lock().checkpoint.archived
    }

    /// Records from `from` on (at most `max`), skipping unreadable ones (counted and logged).
    pub fn read(&self, from: u64, max: usize) -> Vec<JournalRecord> {
        let (plan, hint) = {
            let inner = self.lock();
            let plan: Vec<(u64, PathBuf, u64)> = inner
                .segments
                .iter()
                .filter(|(_, s)| s.last_seq.is_some_and(|l| l >= from))
                .map(|(first, s)| (*first, s.path.clone(), s.bytes))
                .collect();
            (plan, inner.read_hint)
        };
        let mut out = Vec::new();
        let mut corrupt = 0u64;
        let mut last_pos = None;
        for (first, path, limit) in plan {
            let start = match hint {
                Some((seq, seg, offset)) if seq == from && seg == first => offset,
                _ => 0,
            };
            let mut offset = start;
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) => {
                    log::error!("cannot open journal segment {}: {e}", path.display());
                    continue;
                }
            };
            let mut reader = SegmentReader::new(file, offset, limit);
            while out.len() < max {
                match reader.next_frame() {
                    Ok(Some((Frame::Record(r, size), _))) => {
                        offset += size as u64;
                        if r.seq >= from {
                            out.push(*r);
                        }
                    }
                    Ok(Some((Frame::Corrupt(size, why), at))) => {
                        offset += size as u64;
                        corrupt += 1;
                        log::error!(
                            "journal record skipped in {} at byte {at}: {why}",
                            path.display()
                        );
                    }
                    Ok(Some((Frame::Garbage, at))) => {
                        corrupt += 1;
                        log::error!(
                            "journal segment {} unreadable from byte {at}: the rest is skipped",
                            path.display()
                        );
                        offset = limit;
                        break;
                    }
                    Ok(Some((Frame::Incomplete | Frame::End, _))) | Ok(None) => break,
                    Err(e) => {
                        log::error!("cannot read journal segment {}: {e}", path.display());
                        break;
                    }
                }
            }
            last_pos = Some((first, offset));
            if out.len() >= max {
                break;
            }
        }
        let mut inner = self.lock();
        inner.stats.corrupt_records += corrupt;
        if let (Some(last), Some((seg, offset))) = (out.last(), last_pos) {
            inner.read_hint = Some((last.seq + 1, seg, offset));
        }
        out
    }

    /// Everything below `next` is archived: saves the checkpoint and deletes the segments
    /// nobody needs any more. `oldest` is the creation time of the next record waiting.
    pub fn set_archived(&self, next: u64, oldest: Option<DateTime<Utc>>) -> io::Result<()> {
        {
            let mut inner = self.lock();
            inner.checkpoint.archived = inner.checkpoint.archived.max(next);
            if !self.track_counters {
                inner.checkpoint.counted = inner.checkpoint.archived;
            }
            inner.oldest_unarchived = if next >= inner.next_seq { None } else { oldest };
        }
        self.save_checkpoint()?;
        self.delete_done_segments();
        Ok(())
    }

    /// Saves where counting stands (the oldest uncounted record) and drops done segments.
    pub fn save_counted(&self) -> io::Result<()> {
        {
            let mut inner = self.lock();
            inner.checkpoint.counted = inner.uncounted.first().copied().unwrap_or(inner.next_seq);
            if !self.track_counters {
                inner.checkpoint.counted = inner.checkpoint.archived;
            }
            if self.archive_is_counting {
                inner.checkpoint.archived = inner.checkpoint.counted;
                if inner.checkpoint.archived >= inner.next_seq {
                    inner.oldest_unarchived = None;
                }
            }
        }
        self.save_checkpoint()?;
        self.delete_done_segments();
        Ok(())
    }

    fn save_checkpoint(&self) -> io::Result<()> {
        let checkpoint = self.lock().checkpoint.clone();
        let tmp = self.dir.join("checkpoint.tmp");
        fs::write(
            &tmp,
            serde_json::to_vec(&checkpoint).map_err(io::Error::other)?,
        )?;
        fs::rename(tmp, self.dir.join("checkpoint"))
    }

    /// Deletes sealed segments whose every record is archived and counted. The files are
    /// unlinked after the lock is released: freeing a segment's blocks takes a while, and
    /// every HTTP worker's append waits for that lock.
    fn delete_done_segments(&self) {
        let doomed: Vec<(u64, Segment)> = {
            let mut inner = self.lock();
            let done_below = inner.checkpoint.archived.min(
                inner
                    .uncounted
                    .first()
                    .copied()
                    .unwrap_or(inner.checkpoint.counted.max(inner.checkpoint.archived)),
            );
            let active = inner.active.as_ref().map(|a| a.first_seq);
            let firsts: Vec<u64> = inner
                .segments
                .iter()
                .filter(|(first, s)| {
                    Some(**first) != active && s.last_seq.is_none_or(|l| l < done_below)
                })
                .map(|(first, _)| *first)
                .collect();
            let doomed = firsts
                .into_iter()
                .filter_map(|first| inner.segments.remove(&first).map(|s| (first, s)))
                .collect();
            if inner
                .read_hint
                .is_some_and(|(_, seg, _)| !inner.segments.contains_key(&seg))
            {
                inner.read_hint = None;
            }
            doomed
        };
        if doomed.is_empty() {
            return;
        }
        let mut freed = 0;
        let mut kept = Vec::new();
        for (first, segment) in doomed {
            match fs::remove_file(&segment.path) {
                Ok(()) => freed += segment.bytes,
                Err(e) => {
                    log::error!(
                        "cannot delete journal segment {}: {e}",
                        segment.path.display()
                    );
                    kept.push((first, segment));
                }
            }
        }
        let mut inner = self.lock();
        inner.held_bytes = inner.held_bytes.saturating_sub(freed);
        inner.segments.extend(kept);
    }

    pub fn stats(&self) -> JournalStats {
        let inner = self.lock();
        let archived = inner.checkpoint.archived;
        let unarchived_records = if self.archive_is_counting {
            inner.uncounted.len() as u64
        } else {
            inner.next_seq.saturating_sub(archived)
        };
        let archived_part = match inner.read_hint {
            Some((seq, _, offset)) if seq == archived => offset,
            _ => 0,
        };
        let unarchived_bytes = if unarchived_records == 0 {
            0
        } else {
            inner
                .segments
                .values()
                .filter(|s| s.last_seq.is_some_and(|l| l >= archived))
                .map(|s| s.bytes)
                .sum::<u64>()
                .saturating_sub(archived_part)
        };
        JournalStats {
            unarchived_records,
            unarchived_bytes,
            oldest_unarchived_secs: inner
                .oldest_unarchived
                .filter(|_| unarchived_records > 0)
                .map_or(0.0, |t| {
                    (Utc::now() - t).num_milliseconds().max(0) as f64 / 1000.0
                }),
            uncounted_records: inner.uncounted.len() as u64,
            ..inner.stats
        }
    }

    /// The next sequence number an append will get.
    pub fn next_seq(&self) -> u64 {
        self.lock().next_seq
    }
}

/// Reads whole frames from a segment file, from `offset` up to `limit` bytes.
struct SegmentReader {
    file: File,
    buf: Vec<u8>,
    /// Bytes of `buf` already read (dropped at the next fill: dropping each frame as it is
    /// read moved the whole buffer once per record).
    used: usize,
    /// File position of `buf[used]`.
    at: u64,
    limit: u64,
    eof: bool,
}

impl SegmentReader {
    fn new(file: File, offset: u64, limit: u64) -> Self {
        SegmentReader {
            file,
            buf: Vec::new(),
            used: 0,
            at: offset,
            limit,
            eof: false,
        }
    }

    /// The next frame and its file position; `None` at the end.
    fn next_frame(&mut self) -> io::Result<Option<(Frame, u64)>> {
        loop {
            let rest = self.buf.get(self.used..).unwrap_or_default();
            match record::decode(rest) {
                Frame::Incomplete if !self.eof => self.fill()?,
                Frame::Incomplete if rest.is_empty() => return Ok(None),
                Frame::End => return Ok(None),
                frame => {
                    let at = self.at;
                    let used = match &frame {
                        Frame::Record(_, n) | Frame::Corrupt(n, _) => *n,
                        Frame::Garbage | Frame::Incomplete | Frame::End => rest.len(),
                    };
                    self.used += used;
                    self.at += used as u64;
                    return Ok(Some((frame, at)));
                }
            }
        }
    }

    fn fill(&mut self) -> io::Result<()> {
        self.buf.drain(..self.used);
        self.used = 0;
        let read_to = self.at + self.buf.len() as u64;
        if read_to >= self.limit {
            self.eof = true;
            return Ok(());
        }
        let want = usize::try_from(self.limit - read_to)
            .unwrap_or(READ_CHUNK)
            .min(READ_CHUNK);
        self.file.seek(SeekFrom::Start(read_to))?;
        let mut chunk = vec![0u8; want];
        let n = self.file.read(&mut chunk)?;
        if n == 0 {
            self.eof = true;
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn segment_name(first_seq: u64) -> String {
    format!("seg-{first_seq:020}.jrn")
}

/// Segment files of `dir` by first sequence number.
fn segment_files(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let first = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("seg-"))
            .and_then(|n| n.strip_suffix(".jrn"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(first) = first {
            out.push((first, path));
        }
    }
    out.sort();
    Ok(out)
}

/// Every readable record of a segment, the bytes of whole frames, and how many were not
/// readable. A torn last record (the process died inside a write) is left out.
fn scan_segment(path: &Path) -> io::Result<(Vec<JournalRecord>, u64, u64)> {
    let len = fs::metadata(path)?.len();
    let mut reader = SegmentReader::new(File::open(path)?, 0, len);
    let (mut records, mut bytes, mut corrupt) = (Vec::new(), 0u64, 0u64);
    while let Some((frame, at)) = reader.next_frame()? {
        match frame {
            Frame::Record(r, n) => {
                bytes += n as u64;
                records.push(*r);
            }
            Frame::Corrupt(n, why) => {
                bytes += n as u64;
                corrupt += 1;
                log::error!(
                    "journal record skipped in {} at byte {at}: {why}",
                    path.display()
                );
            }
            Frame::Garbage => {
                corrupt += 1;
                log::error!(
                    "journal segment {} unreadable from byte {at}: the rest is skipped",
                    path.display()
                );
                break;
            }
            Frame::End => break,
            Frame::Incomplete => {
                log::warn!(
                    "journal segment {} ends in a torn record at byte {at} (process killed mid-write)",
                    path.display()
                );
                break;
            }
        }
    }
    Ok((records, bytes, corrupt))
}

/// The directory's instance id, created on first use.
fn instance_id(dir: &Path) -> io::Result<String> {
    let path = dir.join("instance");
    match fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => Ok(id.trim().to_string()),
        _ => {
            let id = uuid::Uuid::new_v4().to_string();
            let tmp = dir.join("instance.tmp");
            fs::write(&tmp, &id)?;
            fs::rename(tmp, path)?;
            Ok(id)
        }
    }
}

fn read_checkpoint(dir: &Path) -> Checkpoint {
    fs::read(dir.join("checkpoint"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Checkpoint {
            archived: 1,
            counted: 1,
            epoch: None,
        })
}

/// What `diagnose` shows of a journal directory, read without taking it over.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JournalReport {
    pub segments: usize,
    pub bytes: u64,
    /// Records at or after the archive checkpoint.
    pub unarchived: u64,
    pub oldest_unarchived: Option<DateTime<Utc>>,
    pub corrupt: u64,
    /// A relay process holds the directory now.
    pub in_use: bool,
}

/// Reads a journal directory (a serving relay may hold it; nothing is changed).
pub fn inspect(dir: &Path) -> io::Result<JournalReport> {
    let mut report = JournalReport::default();
    if !dir.exists() {
        return Ok(report);
    }
    if let Ok(lock) = OpenOptions::new().read(true).open(dir.join("lock")) {
        report.in_use = matches!(lock.try_lock_shared(), Err(fs::TryLockError::WouldBlock));
    }
    let checkpoint = read_checkpoint(dir);
    for (_, path) in segment_files(dir)? {
        let (records, bytes, corrupt) = scan_segment(&path)?;
        report.segments += 1;
        report.bytes += bytes;
        report.corrupt += corrupt;
        for r in records.iter().filter(|r| r.seq >= checkpoint.archived) {
            report.unarchived += 1;
            if report.oldest_unarchived.is_none() {
                report.oldest_unarchived = Some(r.event.created_at);
            }
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::record::tests::sample;

    fn open(dir: &Path, mode: JournalMode) -> Journal {
        Journal::open(dir, FsyncPolicy::Never, 0, mode).unwrap()
    }

    fn append(j: &Journal, n: u64) -> Vec<u64> {
        (0..n)
            .map(|i| {
                let r = sample(i);
                j.append(&r.event, &r.counters).unwrap()
            })
            .collect()
    }

    #[test]
    fn records_come_back_in_order_across_segments_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path(), JournalMode::Both);
        // About 240 bytes each: 20,000 records span two segments.
        let seqs = append(&j, 20_000);
        assert_eq!(seqs, (1..=20_000).collect::<Vec<_>>());
        assert!(j.lock().segments.len() >= 2, "rotated");
        let all = j.read(1, 30_000);
        assert_eq!(all.len(), 20_000);
        assert!(all.iter().zip(1..).all(|(r, s)| r.seq == s));
        // Reading on from the middle continues where the last read stopped.
        let first = j.read(1, 5_000);
        let next = j.read(5_001, 5_000);
        assert_eq!((first.len(), next[0].seq), (5_000, 5_001));
        let stats = j.stats();
        assert_eq!(
            (stats.unarchived_records, stats.uncounted_records),
            (20_000, 20_000)
        );
        let sizes: Vec<(PathBuf, u64)> = j
            .lock()
            .segments
            .values()
            .map(|s| (s.path.clone(), s.bytes))
            .collect();
        drop(j);
        // Sealed on the sealing thread or closed with the journal: each file ends with its
        // last record.
        for (path, bytes) in sizes {
            assert_eq!(fs::metadata(&path).unwrap().len(), bytes, "{path:?}");
        }

        let j = open(dir.path(), JournalMode::Both);
        assert_eq!(j.next_seq(), 20_001, "numbering goes on after a restart");
        assert_eq!(j.uncounted(3), vec![1, 2, 3], "nothing was counted");
        assert_eq!(j.stats().unarchived_records, 20_000);
    }

    #[test]
    fn segments_go_once_archived_and_counted_and_the_checkpoint_survives() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path(), JournalMode::Both);
        append(&j, 20_000);
        let segments = j.lock().segments.len();
        assert!(segments >= 2, "rotated");
        j.set_archived(20_001, None).unwrap();
        assert_eq!(j.lock().segments.len(), segments, "kept until counted too");
        j.mark_counted(&(1..=20_000).collect::<Vec<_>>());
        j.save_counted().unwrap();
        assert_eq!(
            j.lock().segments.len(),
            1,
            "only the active segment is left"
        );
        let stats = j.stats();
        assert_eq!((stats.unarchived_records, stats.unarchived_bytes), (0, 0));
        drop(j);
        let j = open(dir.path(), JournalMode::Both);
        assert_eq!(j.archived_through(), 20_001);
        assert!(j.uncounted(10).is_empty());
        assert!(j.read(1, 10).is_empty(), "nothing left to archive");
    }

    #[test]
    fn a_second_process_on_the_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _first = open(dir.path(), JournalMode::Both);
        assert!(matches!(
            Journal::open(dir.path(), FsyncPolicy::Never, 0, JournalMode::Both),
            Err(JournalError::Locked(_))
        ));
    }

    #[test]
    fn a_corrupt_record_is_skipped_and_counted_and_a_torn_tail_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path(), JournalMode::Archive);
        append(&j, 3);
        let path = j.lock().segments.values().next().unwrap().path.clone();
        drop(j);
        let mut bytes = fs::read(&path).unwrap();
        let size = bytes.len() / 3;
        bytes[size + 20] ^= 0xFF; // inside the second record's payload
        bytes.extend_from_slice(&sample(9).encode().unwrap()[..30]); // a torn fourth
        fs::write(&path, bytes).unwrap();

        let j = open(dir.path(), JournalMode::Archive);
        let seqs: Vec<u64> = j.read(1, 10).iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![1, 3]);
        assert!(j.stats().corrupt_records >= 1);
        assert_eq!(
            j.next_seq(),
            4,
            "new records number on after the readable ones"
        );
        let r = sample(4);
        assert_eq!(j.append(&r.event, &r.counters).unwrap(), 4);
        let seqs: Vec<u64> = j.read(1, 10).iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![1, 3, 4]);
    }

    #[test]
    fn past_its_size_limit_the_journal_refuses_and_keeps_what_it_has() {
        let dir = tempfile::tempdir().unwrap();
        // Records of about 240 bytes: two fit, a third does not.
        let j = Journal::open(dir.path(), FsyncPolicy::Always, 600, JournalMode::Both).unwrap();
        append(&j, 2);
        let r = sample(3);
        assert!(matches!(
            j.append(&r.event, &r.counters),
            Err(JournalError::Full { limit: 600, .. })
        ));
        let stats = j.stats();
        assert_eq!((stats.appended, stats.append_failures), (2, 1));
        assert_eq!(j.read(1, 10).len(), 2);
    }

    #[test]
    fn in_redis_mode_counting_is_archiving() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path(), JournalMode::Counters);
        append(&j, 5);
        assert_eq!(j.stats().unarchived_records, 5);
        j.mark_counted(&[1, 2, 3]);
        j.save_counted().unwrap();
        assert_eq!(j.stats().unarchived_records, 2);
        assert_eq!(j.archived_through(), 4);
        j.recount_from(2);
        assert_eq!(j.uncounted(10), vec![2, 3, 4, 5]);
    }

    #[test]
    fn inspect_reads_a_directory_in_use_without_taking_it() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path(), JournalMode::Both);
        append(&j, 4);
        j.set_archived(2, None).unwrap();
        let report = inspect(dir.path()).unwrap();
        assert_eq!(
            (report.unarchived, report.segments, report.in_use),
            (3, 1, true)
        );
        drop(j);
        assert!(!inspect(dir.path()).unwrap().in_use);
    }

    /// What a killed process leaves: the active segment at its allocated size, zeros after
    /// the last record (copied while the journal is open, as no destructor trims it).
    fn killed_copy(j: &Journal, to: &Path) -> PathBuf {
        fs::create_dir_all(to).unwrap();
        for name in ["instance", "checkpoint"] {
            if let Ok(b) = fs::read(j.dir().join(name)) {
                fs::write(to.join(name), b).unwrap();
            }
        }
        let mut last = None;
        for (_, path) in segment_files(j.dir()).unwrap() {
            let copy = to.join(path.file_name().unwrap());
            fs::copy(&path, &copy).unwrap();
            last = Some(copy);
        }
        last.unwrap()
    }

    #[test]
    fn a_killed_process_leaves_every_record_and_a_zero_tail_that_is_no_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path(), JournalMode::Both);
        append(&j, 5);
        let copy = dir.path().join("after-kill");
        let segment = killed_copy(&j, &copy);
        assert_eq!(
            fs::metadata(&segment).unwrap().len(),
            SEGMENT_BYTES as u64,
            "the active segment is allocated up front"
        );
        assert_eq!(inspect(&copy).unwrap().unarchived, 5);
        let after = open(&copy, JournalMode::Both);
        let seqs: Vec<u64> = after.read(1, 10).iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
        assert_eq!(after.stats().corrupt_records, 0);
        assert_eq!(after.uncounted(10), vec![1, 2, 3, 4, 5]);
        let r = sample(6);
        assert_eq!(after.append(&r.event, &r.counters).unwrap(), 6);
        drop(after);
        let after = open(&copy, JournalMode::Both);
        let seqs: Vec<u64> = after.read(1, 10).iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn a_record_killed_mid_copy_is_the_end_of_the_segment_not_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path(), JournalMode::Both);
        append(&j, 2);
        let copy = dir.path().join("after-kill");
        let segment = killed_copy(&j, &copy);
        // The payload of a third record copied, its header not yet: what the write order
        // leaves when the process dies between the two.
        let third = sample(3).encode().unwrap();
        let mut bytes = fs::read(&segment).unwrap();
        let end = usize::try_from(j.lock().segments.values().next().unwrap().bytes).unwrap();
        bytes[end + record::HEADER_BYTES..end + third.len()]
            .copy_from_slice(&third[record::HEADER_BYTES..]);
        fs::write(&segment, bytes).unwrap();
        let after = open(&copy, JournalMode::Both);
        let seqs: Vec<u64> = after.read(1, 10).iter().map(|r| r.seq).collect();
        assert_eq!(seqs, vec![1, 2]);
        assert_eq!(after.stats().corrupt_records, 0);
        assert_eq!(after.next_seq(), 3);
    }

    #[test]
    fn a_segment_that_cannot_be_created_fails_the_append_and_the_next_one_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path(), JournalMode::Both);
        // What stands where the first segment belongs cannot be allocated and mapped, as a
        // full disk cannot.
        let blocked = dir.path().join(segment_name(1));
        fs::create_dir(&blocked).unwrap();
        let r = sample(1);
        assert!(matches!(
            j.append(&r.event, &r.counters),
            Err(JournalError::Io(_))
        ));
        let stats = j.stats();
        assert_eq!((stats.appended, stats.append_failures), (0, 1));
        assert_eq!(j.next_seq(), 1, "a failed append takes no number");
        fs::remove_dir(&blocked).unwrap();
        assert_eq!(j.append(&r.event, &r.counters).unwrap(), 1);
        assert_eq!(j.read(1, 10).len(), 1);
    }

    #[test]
    fn a_closed_journal_leaves_its_segment_ending_with_the_last_record() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path(), JournalMode::Both);
        append(&j, 3);
        let (path, bytes) = {
            let inner = j.lock();
            let s = inner.segments.values().next().unwrap();
            (s.path.clone(), s.bytes)
        };
        drop(j);
        assert_eq!(fs::metadata(path).unwrap().len(), bytes);
    }

    fn event(i: u64) -> UsageEvent {
        UsageEvent {
            request_id: format!("req_{i:032}"),
            upstream_request_id: None,
            api_key_id: "6b1c1a43-0000-4000-8000-000000000001".into(),
            account_id: "acc-1".into(),
            model: "claude-sonnet-4-20250514".into(),
            input_tokens: 25,
            output_tokens: 12,
            cache_create_5m_tokens: 0,
            cache_create_1h_tokens: 0,
            cache_read_tokens: 0,
            cost_micros: 690,
            status_code: 200,
            is_stream: false,
            latency_ms: 3,
            created_at: Utc::now(),
        }
    }

    #[test]
    fn recount_from_leaves_only_what_the_rebuild_did_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path(), FsyncPolicy::Never, 0, JournalMode::Both).unwrap();
        for i in 1..=6 {
            assert_eq!(
                journal
                    .append(&event(i), &CounterContext::default())
                    .unwrap(),
                i
            );
        }
        // 1 and 2 counted into the old epoch; 3 and 4 never counted (Redis was down), but
        // archived; 5 and 6 neither.
        journal.mark_counted(&[1, 2]);
        assert_eq!(journal.uncounted(10), vec![3, 4, 5, 6]);
        // The rebuild read the archive through #4: 3 and 4 are in its counters.
        journal.recount_from(5);
        assert_eq!(journal.uncounted(10), vec![5, 6]);
        // From an older boundary: what the old epoch counted is counted again too.
        journal.recount_from(2);
        assert_eq!(journal.uncounted(10), vec![2, 3, 4, 5, 6]);
    }
}
