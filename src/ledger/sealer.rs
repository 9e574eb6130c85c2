//! Seals full journal segments on a thread of their own. Sealing forces a segment's pages to
//! disk (`msync` of 4 MB: 4.3 ms measured under load here, far more on a slow disk), unmaps
//! it and trims it; done on the HTTP worker whose append filled the segment, it stalled that
//! worker and every connection it serves once per segment. Nothing depends on when a seal
//! finishes: the records are in the page cache as soon as they are copied in, readers stop
//! at the record bytes the journal counted (not at the file's end), and an untrimmed segment
//! reads the same as a trimmed one (zeros are the end).

use std::sync::mpsc::{self, SyncSender};
use std::thread::JoinHandle;

use super::mapped::MappedSegment;

/// A full segment and whether its pages must reach the disk before it is closed.
type SealJob = (MappedSegment, bool);

/// Full segments that may wait for their seal (16 MB of journal): past that, a disk that
/// cannot keep up holds the appending worker back, as it did when it sealed inline, instead
/// of letting sealed-but-unwritten segments pile up.
const WAITING_SEALS: usize = 4;

pub struct Sealer {
    jobs: Option<SyncSender<SealJob>>,
    thread: Option<JoinHandle<()>>,
}

impl Sealer {
    /// Starts the sealing thread; without one (the system refused a thread), segments are
    /// sealed by the appending thread, as before.
    pub fn start() -> Sealer {
        let (jobs, queue) = mpsc::sync_channel::<SealJob>(WAITING_SEALS);
        let thread = std::thread::Builder::new()
            .name("journal-sealer".into())
            .spawn(move || {
                for (segment, sync) in queue {
                    seal_now(segment, sync);
                }
            });
        match thread {
            Ok(thread) => Sealer {
                jobs: Some(jobs),
                thread: Some(thread),
            },
            Err(e) => {
                log::warn!("no journal sealing thread ({e}): full segments are sealed inline");
                Sealer {
                    jobs: None,
                    thread: None,
                }
            }
        }
    }

    /// Hands a full segment over; returns at once unless `WAITING_SEALS` already wait.
    pub fn seal(&self, segment: MappedSegment, sync: bool) {
        let job = match &self.jobs {
            Some(jobs) => match jobs.send((segment, sync)) {
                Ok(()) => return,
                // The thread is gone (it panicked): seal here.
                Err(mpsc::SendError(job)) => job,
            },
            None => (segment, sync),
        };
        seal_now(job.0, job.1);
    }
}

impl Drop for Sealer {
    /// Waits until every segment handed over is sealed: a journal closed in order leaves
    /// every segment trimmed to its last record.
    fn drop(&mut self) {
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            log::error!("the journal sealing thread panicked");
        }
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
        let sealer = Sealer::start();
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
}
