//! The journal segment being appended to, written through a shared memory map: an append is a
//! copy into the page cache, with no system call per record (the `write` per event was about
//! 7 % of the relay's CPU). The file is allocated to its full size before it is mapped, so a
//! full disk fails the segment's creation instead of a later page fault; the unused rest reads
//! as zeros, which readers take as the end of the records. A killed process loses nothing: the
//! pages it wrote belong to the kernel's page cache.
//!
//! This module is the only `unsafe` code of the crate: mapping a file is unsafe because the
//! memory changes if another process writes or truncates the file. Nothing else does: the
//! journal directory is locked by this process, this module alone writes the file while it is
//! mapped, and the file is truncated only after it is unmapped.
#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{Ordering, compiler_fence};

use memmap2::MmapMut;

use super::record::HEADER_BYTES;

pub struct MappedSegment {
    file: File,
    map: Option<MmapMut>,
    /// Bytes of whole records written.
    len: usize,
}

impl MappedSegment {
    /// Creates (or replaces: a segment named after the next sequence number holds no record)
    /// the segment at `path`, allocated and mapped to `capacity` bytes.
    pub fn create(path: &Path, capacity: usize) -> io::Result<MappedSegment> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(path)?;
        allocate(&file, capacity as u64)?;
        // SAFETY: see the module's documentation: no other process or code writes or
        // truncates this file while the map lives.
        let map = unsafe { MmapMut::map_mut(&file)? };
        Ok(MappedSegment {
            file,
            map: Some(map),
            len: 0,
        })
    }

    /// Faults every page of the map in, writable, without writing to it: the appends that
    /// follow copy into memory already mapped instead of taking a page fault per 4 KB (1.25 %
    /// of the relay's CPU samples, on the HTTP worker). Done ahead, off the workers, by the
    /// sealing thread (`MADV_POPULATE_WRITE`, Linux 5.14); an older kernel refuses it, and
    /// the pages then fault in as they are written.
    pub fn prefault(&self) {
        if let Some(map) = &self.map
            && let Err(e) = map.advise(memmap2::Advice::PopulateWrite)
        {
            log::debug!("journal segment not prefaulted: {e}");
        }
    }

    /// Whether a frame of `size` bytes still fits.
    pub fn fits(&self, size: usize) -> bool {
        self.map
            .as_ref()
            .is_some_and(|m| self.len.saturating_add(size) <= m.len())
    }

    /// Copies one framed record (`[length][crc][payload]`) in; false if it does not fit. The
    /// payload goes first and the header last, so a process killed mid-copy leaves zeros where
    /// the header belongs: the end of the segment, not a torn record.
    pub fn append(&mut self, frame: &[u8]) -> bool {
        let start = self.len;
        let end = start.saturating_add(frame.len());
        let Some(slot) = self.map.as_mut().and_then(|m| m.get_mut(start..end)) else {
            return false;
        };
        let (Some(header), Some(payload)) = (frame.get(..HEADER_BYTES), frame.get(HEADER_BYTES..))
        else {
            return false;
        };
        let (slot_header, slot_payload) = slot.split_at_mut(HEADER_BYTES);
        slot_payload.copy_from_slice(payload);
        compiler_fence(Ordering::Release);
        slot_header.copy_from_slice(header);
        self.len = end;
        true
    }

    /// Forces the records of the last append to disk (`USAGE_JOURNAL_FSYNC=always`).
    pub fn sync_last(&self, size: usize) -> io::Result<()> {
        match &self.map {
            Some(m) => m.flush_range(self.len.saturating_sub(size), size),
            None => Ok(()),
        }
    }

    /// Takes the last append of `size` bytes back (zeros: the end of the segment again).
    pub fn undo_last(&mut self, size: usize) {
        let start = self.len.saturating_sub(size);
        if let Some(slot) = self.map.as_mut().and_then(|m| m.get_mut(start..self.len)) {
            slot.fill(0);
        }
        self.len = start;
    }

    /// What [`sync_written`] needs to force everything written so far to disk without
    /// holding the segment: a handle on the file and the bytes written.
    pub fn written(&self) -> io::Result<(File, usize)> {
        Ok((self.file.try_clone()?, self.len))
    }

    /// Unmaps the segment and cuts the unused rest off: a sealed segment ends with its last
    /// record, as one written with `write` did.
    pub fn seal(mut self, sync: bool) -> io::Result<()> {
        self.close(sync)
    }

    fn close(&mut self, sync: bool) -> io::Result<()> {
        let Some(map) = self.map.take() else {
            return Ok(());
        };
        if sync {
            map.flush()?;
        }
        drop(map);
        self.file.set_len(self.len as u64)
    }
}

impl Drop for MappedSegment {
    fn drop(&mut self) {
        if let Err(e) = self.close(false) {
            log::error!("cannot trim the journal segment being closed: {e}");
        }
    }
}

/// Forces the first `len` bytes of a segment file to disk (`msync` of that range, through a
/// mapping of its own). Not `fdatasync`: that writes back every dirty page of the file, the
/// prefaulted ones ahead of the records too, and write-protects them again, so each page
/// the appends reach afterwards faulted anyway (half the faults prefaulting saved came
/// back with the journal's fsync every second).
pub fn sync_written(file: &File, len: usize) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    memmap2::MmapOptions::new().len(len).map_raw(file)?.flush()
}

/// Gives the file `capacity` bytes of disk, zero-filled. `fallocate` reserves the blocks
/// without writing them; where the file system cannot, zeros are written.
fn allocate(file: &File, capacity: u64) -> io::Result<()> {
    match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), 0, capacity) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP => write_zeros(file, capacity),
        Err(e) => Err(e.into()),
    }
}

fn write_zeros(mut file: &File, capacity: u64) -> io::Result<()> {
    const CHUNK: usize = 64 * 1024;
    let zeros = [0u8; CHUNK];
    let mut left = capacity;
    while left > 0 {
        let n = usize::try_from(left).map_or(CHUNK, |l| l.min(CHUNK));
        file.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_land_in_order_and_a_sealed_segment_ends_with_the_last_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let mut s = MappedSegment::create(&path, 64).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            64,
            "allocated up front"
        );
        assert!(s.append(&[3, 0, 0, 0, 9, 9, 9, 9, 1, 2, 3]));
        assert!(s.fits(53));
        assert!(!s.fits(54));
        assert!(!s.append(&[0; 54]), "too big: refused, nothing written");
        let mid = std::fs::read(&path).unwrap();
        assert_eq!(mid.len(), 64);
        assert_eq!(&mid[..11], &[3, 0, 0, 0, 9, 9, 9, 9, 1, 2, 3]);
        assert!(mid[11..].iter().all(|b| *b == 0), "the rest reads as zeros");
        s.seal(true).unwrap();
        assert_eq!(
            std::fs::read(&path).unwrap(),
            vec![3, 0, 0, 0, 9, 9, 9, 9, 1, 2, 3]
        );
    }

    #[test]
    fn a_segment_dropped_unsealed_is_trimmed_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("seg");
        let mut s = MappedSegment::create(&path, 4096).unwrap();
        assert!(s.append(&[1, 0, 0, 0, 7, 7, 7, 7, 5]));
        drop(s);
        assert_eq!(std::fs::read(&path).unwrap().len(), 9);
    }

    /// Minor page faults of the calling thread so far (`/proc/thread-self/stat`, field 10).
    fn thread_minor_faults() -> u64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        // The command name (field 2) is in parentheses and may hold spaces.
        let after_name = &stat[stat.rfind(')').unwrap() + 2..];
        after_name.split(' ').nth(7).unwrap().parse().unwrap()
    }

    /// Page faults of appending to every page of a prefaulted segment after the first page
    /// was synced.
    fn faults_appending_after_a_sync() -> u64 {
        const PAGE: usize = 4096;
        let dir = tempfile::tempdir().unwrap();
        let mut s = MappedSegment::create(&dir.path().join("seg"), 16 * PAGE).unwrap();
        s.prefault();
        // One frame per page: a 4-byte length, a 4-byte checksum and a payload.
        let frame = [[9u8; 4], [7u8; 4]].concat();
        let frame = [frame.as_slice(), &[1u8; PAGE - 8]].concat();
        assert!(s.append(&frame));
        let (file, len) = s.written().unwrap();
        sync_written(&file, len).unwrap();
        let before = thread_minor_faults();
        for _ in 1..16 {
            assert!(s.append(&frame));
        }
        let faults = thread_minor_faults() - before;
        let (file, len) = s.written().unwrap();
        assert_eq!(len, 16 * PAGE);
        sync_written(&file, len).unwrap();
        s.seal(false).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("seg")).unwrap().len(),
            16 * PAGE
        );
        faults
    }

    #[test]
    fn a_prefaulted_segment_takes_no_page_fault_on_append_even_after_a_sync() {
        // The kernel's own writeback may clean (and write-protect) a page at any moment on a
        // busy machine: one clean run of five shows the sync leaves the pages ahead writable
        // (with `fdatasync` in its place every run takes a fault per page).
        let runs: Vec<u64> = (0..5).map(|_| faults_appending_after_a_sync()).collect();
        assert!(runs.contains(&0), "page faults per run: {runs:?}");
    }
}
