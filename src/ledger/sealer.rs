//! Seals full journal segments on a thread of their own, and prepares the next one there.
//! Sealing forces a segment's pages to disk (`msync` of 4 MB: 4.3 ms measured under load
//! here, far more on a slow disk), unmaps it and trims it; done on the HTTP worker whose
//! append filled the segment, it stalled that worker and every connection it serves once per
//! segment. Nothing depends on when a seal finishes: the records are in the page cache as
//! soon as they are copied in, readers stop at the record bytes the journal counted (not at
//! the file's end), and an untrimmed segment reads the same as a trimmed one (zeros are the
//! end).
//!
//! Opening a segment costs as much again on the worker: a file created, allocated and
//! mapped (about 0.25 ms), then a page fault for every 4 KB the appends reach. So one spare
//! segment waits here, allocated and its pages already faulted in; the journal renames it to
//! the name it needs and asks for the next.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use super::mapped::MappedSegment;

enum Job {
    /// A full segment and whether its pages must reach the disk before it is closed.
    Seal(MappedSegment, bool),
    /// Make the spare segment unless one waits.
    Prepare,
}

/// Full segments that may wait for their seal (16 MB of journal): past that, a disk that
/// cannot keep up holds the appending worker back, as it did when it sealed inline, instead
/// of letting sealed-but-unwritten segments pile up.
const WAITING_SEALS: usize = 4;

/// The spare segment's file name: not a segment's (`seg-….jrn`), so a journal opened after a
/// crash skips it, and the next spare replaces it.
const SPARE_NAME: &str = "spare.jrn.tmp";

pub struct Sealer {
    jobs: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<()>>,
    spare: Arc<Spare>,
}

/// The prepared segment, shared by the sealing thread (which fills it) and the journal
/// (which takes it).
struct Spare {
    path: PathBuf,
    capacity: usize,
    ready: Mutex<Option<MappedSegment>>,
}

impl Spare {
    fn lock(&self) -> MutexGuard<'_, Option<MappedSegment>> {
        self.ready.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn prepare(&self) {
        if self.lock().is_some() {
            return;
        }
        match MappedSegment::create(&self.path, self.capacity) {
            Ok(segment) => {
                segment.prefault();
                *self.lock() = Some(segment);
            }
            // The journal creates its next segment itself (and reports the error then).
            Err(e) => log::debug!("no spare journal segment: {e}"),
        }
    }

    /// Closes and deletes the spare: the journal is closing.
    fn discard(&self) {
        if self.lock().take().is_some()
            && let Err(e) = fs::remove_file(&self.path)
        {
            log::debug!("spare journal segment not removed: {e}");
        }
    }
}

impl Sealer {
    /// Starts the sealing thread for the journal in `dir`, whose segments hold `capacity`
    /// bytes, and has it prepare a spare segment; without a thread (the system refused one),
    /// segments are opened and sealed by the appending thread, as before.
    pub fn start(dir: &Path, capacity: usize) -> Sealer {
        let spare = Arc::new(Spare {
            path: dir.join(SPARE_NAME),
            capacity,
            ready: Mutex::new(None),
        });
        let (jobs, queue) = mpsc::sync_channel::<Job>(WAITING_SEALS);
        let worker_spare = spare.clone();
        let thread = std::thread::Builder::new()
            .name("journal-sealer".into())
            .spawn(move || {
                for job in queue {
                    match job {
                        Job::Seal(segment, sync) => seal_now(segment, sync),
                        Job::Prepare => worker_spare.prepare(),
                    }
                }
                worker_spare.discard();
            });
        let sealer = match thread {
            Ok(thread) => Sealer {
                jobs: Some(jobs),
                thread: Some(thread),
                spare,
            },
            Err(e) => {
                log::warn!("no journal sealing thread ({e}): full segments are sealed inline");
                Sealer {
                    jobs: None,
                    thread: None,
                    spare,
                }
            }
        };
        sealer.prepare_spare();
        sealer
    }

    /// Hands a full segment over; returns at once unless `WAITING_SEALS` already wait.
    pub fn seal(&self, segment: MappedSegment, sync: bool) {
        let job = match &self.jobs {
            Some(jobs) => match jobs.send(Job::Seal(segment, sync)) {
                Ok(()) => return,
                // The thread is gone (it panicked): seal here.
                Err(mpsc::SendError(job)) => job,
            },
            None => Job::Seal(segment, sync),
        };
        if let Job::Seal(segment, sync) = job {
            seal_now(segment, sync);
        }
    }

    /// The spare segment, renamed to `path`, if one is ready; the next is asked for either
    /// way. None when none is ready or it cannot take that name: the caller creates one.
    pub fn take_spare(&self, path: &Path) -> Option<MappedSegment> {
        let taken = {
            let mut ready = self.spare.lock();
            match ready.take() {
                Some(segment) => match fs::rename(&self.spare.path, path) {
                    Ok(()) => Some(segment),
                    Err(e) => {
                        log::debug!("spare journal segment not renamed: {e}");
                        *ready = Some(segment);
                        None
                    }
                },
                None => None,
            }
        };
        self.prepare_spare();
        taken
    }

    /// Asks the thread for a spare segment without waiting: a thread busy with seals gets
    /// to it after them, or the journal creates its next segment itself.
    fn prepare_spare(&self) {
        if let Some(jobs) = &self.jobs {
            // Full: a spare is asked for already, or the seals come first.
            jobs.try_send(Job::Prepare).ok();
        }
    }
}

impl Drop for Sealer {
    /// Waits until every segment handed over is sealed: a journal closed in order leaves
    /// every segment trimmed to its last record, and no spare behind.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            log::error!("the journal sealing thread panicked");
        }
        self.spare.discard();
    }
}

fn seal_now(segment: MappedSegment, sync: bool) {
    if let Err(e) = segment.seal(sync) {
        log::error!("cannot seal a full journal segment: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handed_over_segment_is_synced_trimmed_and_done_when_the_sealer_stops() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::start(dir.path(), 4096);
        let mut paths = Vec::new();
        // More than may wait at once: the last ones wait for a place, none is lost.
        for i in 0..u8::try_from(WAITING_SEALS + 3).unwrap() {
            let path = dir.path().join(format!("seg-{i}"));
            let mut s = MappedSegment::create(&path, 4096).unwrap();
            assert!(s.append(&[1, 0, 0, 0, 7, 7, 7, 7, i]));
            sealer.seal(s, i % 2 == 0);
            paths.push((i, path));
        }
        drop(sealer);
        for (i, path) in &paths {
            assert_eq!(
                std::fs::read(path).unwrap(),
                vec![1, 0, 0, 0, 7, 7, 7, 7, *i]
            );
        }
    }

    /// Waits (a bounded while) for the thread to make the spare segment.
    fn spare_ready(sealer: &Sealer) -> bool {
        for _ in 0..500 {
            if sealer.spare.lock().is_some() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn a_spare_segment_waits_allocated_is_taken_under_its_new_name_and_goes_with_the_sealer() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::start(dir.path(), 8192);
        assert!(spare_ready(&sealer));
        let spare_path = dir.path().join(SPARE_NAME);
        assert_eq!(std::fs::metadata(&spare_path).unwrap().len(), 8192);
        let path = dir.path().join("seg-1");
        let mut s = sealer.take_spare(&path).expect("a spare was ready");
        assert!(
            std::fs::metadata(&path).is_ok(),
            "renamed to the segment's name"
        );
        assert!(s.append(&[1, 0, 0, 0, 7, 7, 7, 7, 3]));
        assert!(s.fits(8192 - 9) && !s.fits(8192 - 8));
        // The next spare is made at once.
        assert!(spare_ready(&sealer));
        sealer.seal(s, true);
        drop(sealer);
        assert_eq!(
            std::fs::read(&path).unwrap(),
            vec![1, 0, 0, 0, 7, 7, 7, 7, 3]
        );
        assert!(!spare_path.exists(), "no spare left behind");
    }

    #[test]
    fn a_spare_that_cannot_take_the_name_stays_spare() {
        let dir = tempfile::tempdir().unwrap();
        let sealer = Sealer::start(dir.path(), 4096);
        assert!(spare_ready(&sealer));
        // A directory stands where the segment belongs.
        let blocked = dir.path().join("seg-1");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("x"), b"x").unwrap();
        assert!(sealer.take_spare(&blocked).is_none());
        assert!(sealer.spare.lock().is_some(), "kept for the next segment");
        assert!(dir.path().join(SPARE_NAME).exists());
    }
}
