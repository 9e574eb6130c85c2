//! The real `claude-relay` binary: `spawn_binary` runs `serve` as a child process (killed on
//! drop), `run_cli` runs a command to completion. Both get exactly the test's variables (the
//! inherited environment is cleared) and run in the test's directory, so no `.env` applies.

use std::io::{BufRead, BufReader, Read};
use std::ops::Deref;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::env::{TestEnv, free_port};
use super::http::Http;

/// Path of the binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_claude-relay");

/// How long the binary may take to answer `/health/live`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

fn command(env: &TestEnv, args: &[&str]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_clear()
        .envs(env.vars())
        .current_dir(env.dir());
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    cmd
}

/// Runs `claude-relay <args>` to completion with the test's variables.
pub fn run_cli(args: &[&str], env: &TestEnv) -> Output {
    command(env, args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN}: {e}"))
}

/// A running `claude-relay serve`; killed when dropped.
pub struct ChildRelay {
    pub port: u16,
    pub http: Http,
    child: Child,
    log: Arc<Mutex<String>>,
}

/// Starts `claude-relay serve` on a free port and waits until `/health/live` answers 200.
pub async fn spawn_binary(env: &TestEnv) -> ChildRelay {
    let port = free_port();
    let mut cmd = command(env, &["serve"]);
    cmd.env("PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if env.var("LOG_LEVEL").is_none() && env.var("RUST_LOG").is_none() {
        cmd.env("LOG_LEVEL", "info");
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {BIN}: {e}"));
    let log = Arc::new(Mutex::new(String::new()));
    collect(child.stdout.take().expect("stdout"), log.clone());
    collect(child.stderr.take().expect("stderr"), log.clone());
    let mut relay = ChildRelay {
        port,
        http: Http::new(port),
        child,
        log,
    };
    relay.wait_live().await;
    relay
}

fn collect(stream: impl Read + Send + 'static, log: Arc<Mutex<String>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            let mut log = log.lock().expect("log lock");
            log.push_str(&line);
            log.push('\n');
        }
    });
}

impl ChildRelay {
    async fn wait_live(&mut self) {
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "claude-relay serve exited with {status} before answering; output:\n{}",
                    self.logs()
                );
            }
            let live = self
                .http
                .client
                .get(self.http.url("/health/live"))
                .timeout(Duration::from_secs(1))
                .send()
                .await;
            if live.is_ok_and(|r| r.status() == 200) {
                return;
            }
            if started.elapsed() > START_TIMEOUT {
                panic!(
                    "claude-relay serve did not answer /health/live within {START_TIMEOUT:?}; output:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILLs the process (a crash: no shutdown, no drain) and waits until it is gone.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL claude-relay serve");
        self.child.wait().expect("reap claude-relay serve");
    }
}

impl Deref for ChildRelay {
    type Target = Http;
    fn deref(&self) -> &Http {
        &self.http
    }
}

impl Drop for ChildRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- claude-relay serve output (port {}) ---\n{}",
                self.port,
                self.logs()
            );
        }
    }
}
