//! env_logger set-up: stderr, plus daily files `hybrid-YYYY-MM-DD.log` when `LOG_DIR` is set.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;

use chrono::Utc;

/// Appends to `DIR/hybrid-<UTC date>.log`, opening the next file when the date changes,
/// and copies every line to stderr.
struct DailyFile {
    dir: PathBuf,
    date: String,
    file: Option<File>,
}

impl DailyFile {
    fn current(&mut self) -> io::Result<&mut File> {
        let today = Utc::now().format("%Y-%m-%d").to_string();
        if self.date != today {
            self.file = None;
        }
        let file = match self.file.take() {
            Some(file) => file,
            None => {
                std::fs::create_dir_all(&self.dir)?;
                let path = self.dir.join(format!("hybrid-{today}.log"));
                self.date = today;
                OpenOptions::new().create(true).append(true).open(path)?
            }
        };
        Ok(self.file.insert(file))
    }
}

impl Write for DailyFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // The file is the record; a closed stderr must not stop it.
        io::stderr().write_all(buf).ok();
        self.current()?.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.file {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

/// Initialises logging once; later calls do nothing (tests start many relays).
pub fn init(level: &str, log_dir: Option<PathBuf>) {
    let mut builder = env_logger::Builder::new();
    // The redis crate's cluster client warns every second about each node it cannot reach
    // (a killed master stays in the topology); the relay reports Redis' state itself.
    // `LOG_LEVEL=redis=warn,…` brings those lines back.
    builder.filter_module("redis", log::LevelFilter::Error);
    builder.parse_filters(level);
    builder.format_timestamp_millis();
    if let Some(dir) = log_dir {
        builder.target(env_logger::Target::Pipe(Box::new(DailyFile {
            dir,
            date: String::new(),
            file: None,
        })));
    }
    // Already initialised (tests start many relays in one process): keep the first.
    builder.try_init().ok();
}
