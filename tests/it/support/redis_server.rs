//! `RedisServer`: a redis-server owned by one test, on its own port, without persistence;
//! stopped and started again to make Redis outages real. Killed on drop.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::env::free_port;

const START_TIMEOUT: Duration = Duration::from_secs(15);

pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    dir: TempDir,
    /// Further `redis-server` arguments (cluster, replication, sentinel settings).
    args: Vec<String>,
}

impl RedisServer {
    /// Starts a redis-server on a free port and waits until it answers PING.
    pub fn spawn() -> RedisServer {
        RedisServer::spawn_on(free_port())
    }

    /// Starts a redis-server on `port` and waits until it answers PING.
    pub fn spawn_on(port: u16) -> RedisServer {
        RedisServer::spawn_with(port, &[])
    }

    /// Starts a redis-server on `port` with further arguments; waits until it answers PING.
    pub fn spawn_with(port: u16, args: &[&str]) -> RedisServer {
        let mut server = RedisServer {
            port,
            child: None,
            dir: tempfile::Builder::new()
                .prefix("crt-redis-")
                .tempdir()
                .expect("temp dir"),
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        server.start();
        server
    }

    /// Holds the server for `millis` ms: a script that spins until then (Redis runs one
    /// command at a time, so every client waits).
    pub async fn stall(&self, millis: u64) {
        const SPIN: &str = "local function now() local t = redis.call('TIME') \
            return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) end \
            local until_ms = now() + tonumber(ARGV[1]) \
            while now() < until_ms do end return 1";
        let client =
            redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).expect("redis url");
        let mut conn = client
            .get_multiplexed_async_connection_with_config(
                &redis::AsyncConnectionConfig::new().set_response_timeout(None),
            )
            .await
            .expect("redis connection");
        let done: i64 = redis::Script::new(SPIN)
            .arg(millis)
            .invoke_async(&mut conn)
            .await
            .expect("the stall script ran");
        assert_eq!(done, 1);
    }

    /// The server's own directory (its cluster or sentinel state lives there).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts the server again (same port) if stopped; waits until it answers PING.
    pub fn start(&mut self) {
        if self.child.is_some() {
            return;
        }
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(self.dir.path().join("redis.log"))
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        let started = Instant::now();
        while !self.answers() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                let log =
                    std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
                panic!("redis-server on port {} exited: {status}\n{log}", self.port);
            }
            if started.elapsed() > START_TIMEOUT {
                panic!("redis-server on port {} did not answer PING", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (like a crash: connections drop, the port refuses).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// True when the server answers PING with PONG.
    pub fn answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(
            &([127, 0, 0, 1], self.port).into(),
            Duration::from_millis(200),
        ) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
