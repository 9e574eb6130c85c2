//! `TestEnv`: one isolated relay environment per test (its own MySQL database, Redis key
//! prefix and working directory), as the variable map the relay reads and as a `Config`.

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use claude_relay::config::{Config, ConfigError, MysqlConfig};
use rand::Rng;
use tempfile::TempDir;

use super::mysql;

/// Where the shared Redis and MariaDB answer: the process environment first (as
/// `scripts/services.sh` reads it), then the repository's `.env`, then the defaults.
#[derive(Debug, Clone)]
pub struct Backends {
    pub redis_host: String,
    pub redis_port: u16,
    pub redis_password: Option<String>,
    pub mysql_host: String,
    pub mysql_port: u16,
    pub mysql_user: String,
    pub mysql_password: String,
}

/// The shared backends of this test run.
pub fn backends() -> &'static Backends {
    static BACKENDS: OnceLock<Backends> = OnceLock::new();
    BACKENDS.get_or_init(|| {
        let file: HashMap<String, String> =
            dotenvy::from_path_iter(Path::new(env!("CARGO_MANIFEST_DIR")).join(".env"))
                .map(|iter| iter.filter_map(Result::ok).collect())
                .unwrap_or_default();
        let get = |name: &str, default: &str| {
            std::env::var(name)
                .ok()
                .or_else(|| file.get(name).cloned())
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_string())
        };
        Backends {
            redis_host: get("REDIS_HOST", "127.0.0.1"),
            redis_port: get("REDIS_PORT", "6379").parse().expect("REDIS_PORT"),
            redis_password: Some(get("REDIS_PASSWORD", "")).filter(|p| !p.is_empty()),
            mysql_host: get("MYSQL_HOST", "127.0.0.1"),
            mysql_port: get("MYSQL_PORT", "3306").parse().expect("MYSQL_PORT"),
            mysql_user: get("MYSQL_USER", "root"),
            mysql_password: get("MYSQL_PASSWORD", ""),
        }
    })
}

/// The URL of the shared Redis host on `port` (with the shared password).
pub fn redis_url_on(port: u16) -> String {
    let b = backends();
    let auth = b
        .redis_password
        .as_ref()
        .map(|p| format!(":{p}@"))
        .unwrap_or_default();
    format!("redis://{auth}{}:{port}/", b.redis_host)
}

/// A blocking connection to the Redis on `port` of the shared host (the shared one, or a
/// test-owned `RedisServer`), for checks of what the relay wrote.
pub fn redis_connection(port: u16) -> redis::Connection {
    redis::Client::open(redis_url_on(port))
        .expect("redis url")
        .get_connection_with_timeout(Duration::from_secs(2))
        .expect("connect to redis")
}

/// `len` random lowercase hex digits.
pub fn random_hex(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from_digit(rng.random_range(0..16), 16).expect("digit"))
        .collect()
}

/// A TCP port on 127.0.0.1 that nothing listens on right now. Chosen below the kernel's
/// ephemeral range (32768+) so outgoing connections do not grab it before it is used.
pub fn free_port() -> u16 {
    let mut rng = rand::rng();
    for _ in 0..1000 {
        let port = rng.random_range(20_000..32_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port found");
}

/// One test's environment. Dropping it drops its database and deletes its Redis keys.
pub struct TestEnv {
    /// `crt_<hex>`: the MySQL database of this test.
    pub database: String,
    /// `crt:<hex>:`: the Redis key prefix of this test.
    pub key_prefix: String,
    vars: HashMap<String, String>,
    dir: TempDir,
    /// False for `offline` environments: nothing to clean up in Redis or MySQL.
    uses_backends: bool,
}

impl Default for TestEnv {
    fn default() -> Self {
        TestEnv::new()
    }
}

impl TestEnv {
    /// A hybrid-mode environment against the shared Redis and MariaDB.
    pub fn new() -> TestEnv {
        TestEnv::build(true)
    }

    /// The same variables for a test that never reaches Redis or MySQL (configuration
    /// checks, commands that stop at a bad variable): dropping it touches neither.
    pub fn offline() -> TestEnv {
        TestEnv::build(false)
    }

    fn build(uses_backends: bool) -> TestEnv {
        let b = backends();
        let id = random_hex(12);
        let database = format!("crt_{id}");
        let key_prefix = format!("crt:{id}:");
        let dir = tempfile::Builder::new()
            .prefix("crt-")
            .tempdir()
            .expect("temp dir");
        let mut vars = HashMap::new();
        let mut set = |k: &str, v: &str| {
            vars.insert(k.to_string(), v.to_string());
        };
        set("DATABASE_TYPE", "hybrid");
        set("HOST", "127.0.0.1");
        set("PORT", "0");
        // Two workers whatever the machine: the per-worker tests need more than one, and
        // the suite runs many relays at once.
        set("HTTP_WORKERS", "2");
        set("ENCRYPTION_KEY", &random_hex(32));
        set("REDIS_HOST", &b.redis_host);
        set("REDIS_PORT", &b.redis_port.to_string());
        if let Some(p) = &b.redis_password {
            set("REDIS_PASSWORD", p);
        }
        set("REDIS_KEY_PREFIX", &key_prefix);
        set("MYSQL_HOST", &b.mysql_host);
        set("MYSQL_PORT", &b.mysql_port.to_string());
        set("MYSQL_USER", &b.mysql_user);
        set("MYSQL_PASSWORD", &b.mysql_password);
        set("MYSQL_DATABASE", &database);
        set("MYSQL_CONNECTION_LIMIT", "5");
        set("BACKEND_PROBE_INTERVAL_MS", "100");
        // The 200 ms default is for a host of its own; here tests share 2 cores with other
        // suites, and a Redis call timed out by load trips the circuit (the relay then
        // degrades for real: sticky sessions and refresh locks go missing).
        set("REDIS_TIMEOUT_MS", "1000");
        set(
            "USAGE_JOURNAL_DIR",
            dir.path().join("journal").to_str().expect("utf-8 temp dir"),
        );
        TestEnv {
            database,
            key_prefix,
            vars,
            dir,
            uses_backends,
        }
    }

    /// Sets (or replaces) one variable.
    pub fn set(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.vars.insert(name.to_string(), value.into());
        self
    }

    /// Builder form of `set`.
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Self {
        self.set(name, value);
        self
    }

    /// Removes one variable (the relay then uses its default).
    pub fn unset(&mut self, name: &str) -> &mut Self {
        self.vars.remove(name);
        self
    }

    /// The value of one variable, if set.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// Every variable, as the relay would read them from its environment.
    pub fn vars(&self) -> &HashMap<String, String> {
        &self.vars
    }

    /// This test's working directory (temporary; the binary runs here).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `Config::from_map` of the variables.
    pub fn try_config(&self) -> Result<Config, ConfigError> {
        Config::from_map(&self.vars)
    }

    /// The validated configuration; panics when it is invalid.
    pub fn config(&self) -> Config {
        self.try_config()
            .expect("the test environment is a valid configuration")
    }

    /// This test's database on the shared MariaDB, reached directly (not through any proxy
    /// the test put in `MYSQL_PORT`): for checks of what the relay wrote.
    pub fn direct_mysql(&self) -> MysqlConfig {
        let mut mysql = self
            .try_config()
            .map(|c| c.mysql)
            .unwrap_or_else(|_| TestEnv::new_bare_mysql());
        let b = backends();
        mysql.host = b.mysql_host.clone();
        mysql.port = b.mysql_port;
        mysql.user = b.mysql_user.clone();
        mysql.password = b.mysql_password.clone().into();
        mysql.database = self.database.clone();
        mysql.timeout = Duration::from_secs(10);
        mysql
    }

    /// The URL of the Redis this environment points at (`REDIS_HOST`/`REDIS_PORT`/`REDIS_DB`).
    pub fn redis_url(&self) -> String {
        let auth = self
            .var("REDIS_PASSWORD")
            .map(|p| format!(":{p}@"))
            .unwrap_or_default();
        format!(
            "redis://{auth}{}:{}/{}",
            self.var("REDIS_HOST").unwrap_or("127.0.0.1"),
            self.var("REDIS_PORT").unwrap_or("6379"),
            self.var("REDIS_DB").unwrap_or("0"),
        )
    }

    /// A blocking connection to that Redis, for checks of what the relay wrote.
    pub fn redis(&self) -> redis::Connection {
        redis::Client::open(self.redis_url())
            .expect("redis URL")
            .get_connection_with_timeout(Duration::from_secs(5))
            .expect("connect to Redis")
    }

    /// Runs one command against this environment's Redis: through a cluster connection when
    /// `REDIS_MODE=cluster` (found through `REDIS_NODES`), else `REDIS_HOST`/`REDIS_PORT`.
    pub fn redis_query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        if self.var("REDIS_MODE") == Some("cluster") {
            let nodes: Vec<String> = self
                .var("REDIS_NODES")
                .unwrap_or_default()
                .split(',')
                .map(|n| format!("redis://{n}/"))
                .collect();
            let client = redis::cluster::ClusterClientBuilder::new(nodes)
                .connection_timeout(Duration::from_secs(2))
                .response_timeout(Duration::from_secs(2))
                .build()?;
            return cmd.query(&mut client.get_connection()?);
        }
        let client = redis::Client::open(self.redis_url())?;
        cmd.query(&mut client.get_connection_with_timeout(Duration::from_secs(2))?)
    }

    /// Every key of this test's prefix, sorted.
    pub fn redis_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.key_prefix))
            .query(&mut self.redis())
            .expect("KEYS");
        keys.sort();
        keys
    }

    fn new_bare_mysql() -> MysqlConfig {
        let mut vars = HashMap::new();
        vars.insert("ENCRYPTION_KEY".to_string(), "k".repeat(32));
        Config::from_map(&vars).expect("defaults are valid").mysql
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if !self.uses_backends {
            return;
        }
        let mysql = self.direct_mysql();
        let prefix = self.key_prefix.clone();
        // On a thread of its own: the blocking MySQL wrapper must not run inside the test's
        // runtime. Best effort: a failed clean-up must not hide the test's own outcome.
        let _ = std::thread::spawn(move || {
            if let Err(e) = mysql::drop_database(&mysql) {
                eprintln!("TestEnv: cannot drop database {}: {e}", mysql.database);
            }
            delete_redis_keys(&prefix);
        })
        .join();
    }
}

/// Deletes every key of the shared Redis that starts with `prefix`.
fn delete_redis_keys(prefix: &str) {
    let Ok(client) = redis::Client::open(redis_url_on(backends().redis_port)) else {
        return;
    };
    let Ok(mut conn) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
        return;
    };
    let mut cursor: u64 = 0;
    loop {
        let Ok((next, keys)): Result<(u64, Vec<String>), _> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query(&mut conn)
        else {
            return;
        };
        if !keys.is_empty() {
            let _: Result<i64, _> = redis::cmd("DEL").arg(&keys).query(&mut conn);
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}
