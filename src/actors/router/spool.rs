//! The local append-only spool (`SPOOL_DIR`): usage events that could not reach Redis (or,
//! in mysql mode, wait for the batched writer) are appended here as JSON lines and replayed
//! later. Survives a killed process: a new process picks up every file it finds.
#![expect(clippy::expect_used, reason = "rewritten by the ledger work")]

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::domain::limits::CounterUpdate;
use crate::domain::usage_event::UsageEvent;

/// One spooled event; `counters` are still to be added when the event was spooled because
/// the counters could not be (Redis down).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SpoolEntry {
    pub event: UsageEvent,
    #[serde(default)]
    pub counters: Option<Vec<CounterUpdate>>,
}

pub struct Spool {
    dir: PathBuf,
    active: Option<File>,
    pending_lines: usize,
    sequence: u64,
}

impl Spool {
    /// Opens the spool; files left by earlier processes become ready for replay.
    pub fn open(dir: &Path) -> io::Result<Spool> {
        fs::create_dir_all(dir)?;
        let spool = Spool {
            dir: dir.to_path_buf(),
            active: None,
            pending_lines: 0,
            sequence: 0,
        };
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            if name.starts_with("active-") && name.ends_with(".jsonl") {
                let sealed = dir.join(name.replacen("active-", "sealed-orphan-", 1));
                fs::rename(&path, sealed)?;
            }
        }
        Ok(spool)
    }

    fn active_path(&self) -> PathBuf {
        self.dir
            .join(format!("active-{}.jsonl", std::process::id()))
    }

    /// Appends one entry (written through to the OS, so a killed process keeps it).
    pub fn append(&mut self, entry: &SpoolEntry) -> io::Result<()> {
        if self.active.is_none() {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.active_path())?;
            self.active = Some(file);
        }
        let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
        line.push(b'\n');
        self.active
            .as_mut()
            .expect("opened above")
            .write_all(&line)?;
        self.pending_lines += 1;
        Ok(())
    }

    /// Closes the active file (if it holds entries) so it can be replayed.
    pub fn seal(&mut self) -> io::Result<()> {
        if self.pending_lines == 0 {
            return Ok(());
        }
        self.active = None;
        self.sequence += 1;
        let sealed = self.dir.join(format!(
            "sealed-{}-{}-{:06}.jsonl",
            chrono::Utc::now().format("%Y%m%dT%H%M%S%.6f"),
            std::process::id(),
            self.sequence
        ));
        fs::rename(self.active_path(), sealed)?;
        self.pending_lines = 0;
        Ok(())
    }

    /// Sealed files, oldest first.
    pub fn sealed_files(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| {
                        p.file_name()
                            .and_then(|n| n.to_str())
                            .is_some_and(|n| n.starts_with("sealed-") && n.ends_with(".jsonl"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
        files
    }

    /// Entries waiting (sealed files and the active one), for /metrics.
    pub fn depth(&self) -> usize {
        let sealed: usize = self
            .sealed_files()
            .iter()
            .map(|p| read_entries(p).map(|e| e.len()).unwrap_or(0))
            .sum();
        sealed + self.pending_lines
    }
}

/// Reads a sealed file; a torn last line (killed mid-write) is skipped.
pub fn read_entries(path: &Path) -> io::Result<Vec<SpoolEntry>> {
    let reader = BufReader::new(File::open(path)?);
    let mut entries = Vec::new();
    for line in reader.lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(&line) {
            Ok(e) => entries.push(e),
            Err(e) => log::warn!("skipping unreadable spool line in {}: {e}", path.display()),
        }
    }
    Ok(entries)
}
