//! Shared pieces of the operations commands: starting the actors and waiting for the
//! backends, progress output (bar with rate and ETA on a terminal, plain lines otherwise),
//! and the skipped-item report.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::app::Actors;
use crate::config::Config;

/// How long a command waits for the backends it needs.
pub const BACKEND_WAIT: Duration = Duration::from_secs(15);

/// Starts the actors for `config` and waits until the backends the mode uses answer
/// (`journal_dir` overrides the usage journal directory, for auxiliary routers of another
/// mode).
pub async fn start(
    config: &Config,
    journal_dir: Option<std::path::PathBuf>,
) -> Result<Actors, String> {
    let mut config = config.clone();
    if let Some(dir) = journal_dir {
        config.journal_dir = dir;
    }
    let actors =
        Actors::start(&config, false).map_err(|e| format!("cannot open USAGE_JOURNAL_DIR: {e}"))?;
    let deadline = Instant::now() + BACKEND_WAIT;
    loop {
        let report = actors.router.health(Duration::from_secs(1)).await;
        if let Some(r) = &report
            && (!r.redis.used || r.redis.connected)
            && (!r.mysql.used || r.mysql.connected)
        {
            // The router flushes the Redis cache when it first sees Redis: let it finish
            // before anything is written to the cache.
            tokio::time::sleep(Duration::from_millis(300)).await;
            return Ok(actors);
        }
        if Instant::now() > deadline {
            let mut down = Vec::new();
            if let Some(r) = report {
                if r.redis.used && !r.redis.connected {
                    down.push(format!(
                        "redis at {}:{} ({})",
                        config.redis.host,
                        config.redis.port,
                        r.redis.error.unwrap_or_default()
                    ));
                }
                if r.mysql.used && !r.mysql.connected {
                    down.push(format!(
                        "mysql at {}:{} ({})",
                        config.mysql.host,
                        config.mysql.port,
                        r.mysql.error.unwrap_or_default()
                    ));
                }
            }
            return Err(format!("backend not reachable: {}", down.join(", ")));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A journal directory of its own for an auxiliary router (so it never touches the journal
/// of a running relay).
pub fn private_journal(tag: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("claude-relay-{tag}-{}", std::process::id()))
}

/// Progress of one long step: a bar with counts, rate and ETA on a terminal, a plain line
/// every few seconds (and at the end) otherwise.
pub struct Progress {
    label: String,
    total: u64,
    done: u64,
    started: Instant,
    last_line: Instant,
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(label: &str, total: u64) -> Progress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            if let Ok(style) =
                ProgressStyle::with_template("{msg:>12} [{bar:30}] {pos}/{len} {per_sec} ETA {eta}")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(label.to_string());
            bar
        });
        Progress {
            label: label.to_string(),
            total,
            done: 0,
            started: Instant::now(),
            last_line: Instant::now(),
            bar,
        }
    }

    pub fn inc(&mut self, n: u64) {
        self.done += n;
        match &self.bar {
            Some(bar) => bar.inc(n),
            None if self.last_line.elapsed() > Duration::from_secs(5) => {
                self.last_line = Instant::now();
                eprintln!("{}", self.line());
            }
            None => {}
        }
    }

    fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.done as f64 / secs;
        let eta = if rate > 0.0 && self.total > self.done {
            format!(", ETA {:.0}s", (self.total - self.done) as f64 / rate)
        } else {
            String::new()
        };
        format!(
            "{}: {}/{} ({rate:.0}/s{eta})",
            self.label, self.done, self.total
        )
    }

    pub fn finish(self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
        if self.total > 0 {
            eprintln!("{}", self.line());
        }
    }
}

/// What a step changed and what it skipped (with the reason), printed at the end.
#[derive(Debug, Default)]
pub struct Report {
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub skipped: Vec<(String, String)>,
    /// Records written so far (for `--stop-after`).
    pub writes: usize,
    pub stop_after: Option<usize>,
}

impl Report {
    pub fn skip(&mut self, what: impl Into<String>, why: impl Into<String>) {
        let (what, why) = (what.into(), why.into());
        println!("  skipped {what}: {why}");
        self.skipped.push((what, why));
    }

    /// Counts one written record; fails once `--stop-after` records were written.
    pub fn wrote(&mut self, created: bool) -> Result<(), String> {
        if created {
            self.created += 1;
        } else {
            self.updated += 1;
        }
        self.count_writes(1)
    }

    /// Counts `n` written records (bulk rows).
    pub fn count_writes(&mut self, n: usize) -> Result<(), String> {
        self.writes += n;
        match self.stop_after {
            Some(limit) if self.writes >= limit => Err(format!(
                "interrupted after {} records (--stop-after {limit}); run the command again to finish",
                self.writes
            )),
            _ => Ok(()),
        }
    }

    /// How many more records may be written before `--stop-after` stops the run.
    pub fn budget(&self) -> usize {
        self.stop_after
            .map_or(usize::MAX, |l| l.saturating_sub(self.writes).max(1))
    }

    pub fn summary(&self) -> String {
        format!(
            "{} created, {} updated, {} unchanged, {} skipped",
            self.created,
            self.updated,
            self.unchanged,
            self.skipped.len()
        )
    }
}
