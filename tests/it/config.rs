//! Configuration: every invalid value fails with a message naming its variable, secrets never
//! show in Debug output, and the binary exits with code 2 on a bad variable. Pure: no test
//! here reaches Redis or MySQL (`TestEnv::offline`).

use claude_relay::config::{LimitsOnCacheDown, RedisTopology, StorageMode};

use crate::support::{TestEnv, run_cli};

/// The error of the test environment with `name` set to `value` (or removed when `None`).
fn error_for(name: &str, value: Option<&str>) -> (String, String) {
    let mut env = TestEnv::offline();
    match value {
        Some(v) => env.set(name, v),
        None => env.unset(name),
    };
    let err = env
        .try_config()
        .expect_err(&format!("{name}={value:?} must be rejected"));
    (err.variable.to_string(), err.to_string())
}

fn assert_rejected(name: &str, value: Option<&str>, message: &str) {
    let (variable, text) = error_for(name, value);
    assert_eq!(variable, name, "variable named by the error");
    assert_eq!(text, format!("invalid configuration: {name}: {message}"));
}

#[test]
fn valid_environment_builds_the_config() {
    let env = TestEnv::offline();
    let config = env.config();
    assert_eq!(config.mode, StorageMode::Hybrid);
    assert_eq!(config.port, 0);
    assert_eq!(config.mysql.database, env.database);
    assert_eq!(config.redis.key_prefix, env.key_prefix);
    assert_eq!(config.probe_interval.as_millis(), 100);
    assert_eq!(config.limits_on_cache_down, LimitsOnCacheDown::Local);
    assert_eq!(config.api_key_prefix, "cr_");
    assert_eq!(config.claude_api_url, "https://api.anthropic.com");

    let mut env = TestEnv::offline();
    env.unset("PORT").set("DATABASE_TYPE", "MySQL");
    let config = env.config();
    assert_eq!(config.port, 3000, "PORT default");
    assert_eq!(
        config.mode,
        StorageMode::Mysql,
        "DATABASE_TYPE is case-insensitive"
    );
}

#[test]
fn unknown_database_type_is_rejected() {
    assert_rejected(
        "DATABASE_TYPE",
        Some("postgres"),
        "unknown value `postgres` (expected hybrid, redis or mysql)",
    );
}

#[test]
fn bad_port_is_rejected() {
    assert_rejected("PORT", Some("abc"), "`abc` is not a number");
    assert_rejected("PORT", Some("70000"), "70000 is out of range 0..=65535");
    assert_rejected("PORT", Some("-1"), "-1 is out of range 0..=65535");
    assert_rejected("REDIS_PORT", Some("0"), "0 is out of range 1..=65535");
    assert_rejected("MYSQL_PORT", Some("3306x"), "`3306x` is not a number");
}

#[test]
fn encryption_key_must_be_32_characters() {
    assert_rejected("ENCRYPTION_KEY", None, "is required (32 characters)");
    assert_rejected("ENCRYPTION_KEY", Some("   "), "is required (32 characters)");
    assert_rejected(
        "ENCRYPTION_KEY",
        Some(&"k".repeat(31)),
        "must be exactly 32 characters, got 31",
    );
    assert_rejected(
        "ENCRYPTION_KEY",
        Some(&"k".repeat(33)),
        "must be exactly 32 characters, got 33",
    );
}

#[test]
fn bad_limits_on_cache_down_is_rejected() {
    assert_rejected(
        "LIMITS_ON_CACHE_DOWN",
        Some("sometimes"),
        "unknown value `sometimes` (expected local, open or closed)",
    );
    for ok in ["local", "open", "closed"] {
        let env = TestEnv::offline().with("LIMITS_ON_CACHE_DOWN", ok);
        assert!(env.try_config().is_ok(), "{ok} is valid");
    }
}

#[test]
fn bad_claude_api_url_is_rejected() {
    assert_rejected(
        "CLAUDE_API_URL",
        Some("ftp://api.example.com"),
        "`ftp://api.example.com` is not an http(s) URL",
    );
    assert_rejected(
        "CLAUDE_API_URL",
        Some("api.anthropic.com"),
        "`api.anthropic.com` is not an http(s) URL",
    );
    assert_rejected(
        "CLAUDE_OAUTH_TOKEN_URL",
        Some("nope"),
        "`nope` is not an http(s) URL",
    );
    let env = TestEnv::offline().with("CLAUDE_API_URL", "http://127.0.0.1:18080/");
    assert_eq!(
        env.config().claude_api_url,
        "http://127.0.0.1:18080",
        "trailing slash trimmed"
    );
}

#[test]
fn short_admin_token_is_rejected() {
    assert_rejected(
        "ADMIN_TOKEN",
        Some("short-token"),
        "must be at least 16 characters when set",
    );
    let env = TestEnv::offline().with("ADMIN_TOKEN", "a".repeat(16));
    assert!(env.try_config().is_ok(), "16 characters are enough");
}

#[test]
fn bad_mysql_database_name_is_rejected() {
    assert_rejected(
        "MYSQL_DATABASE",
        Some("bad-name"),
        "`bad-name` is not a plain database name (letters, digits, _)",
    );
    assert_rejected(
        "MYSQL_DATABASE",
        Some("x`; DROP DATABASE mysql; --"),
        "`x`; DROP DATABASE mysql; --` is not a plain database name (letters, digits, _)",
    );
    let long = "d".repeat(65);
    assert_rejected(
        "MYSQL_DATABASE",
        Some(&long),
        &format!("`{long}` is not a plain database name (letters, digits, _)"),
    );
}

#[test]
fn debug_output_hides_every_secret() {
    let env = TestEnv::offline()
        .with("ENCRYPTION_KEY", "EK-secret-0123456789abcdef012345")
        .with("MYSQL_PASSWORD", "mysql-secret-pw-4821")
        .with("REDIS_PASSWORD", "redis-secret-pw-7731")
        .with("ADMIN_PASSWORD", "admin-secret-pw-1290")
        .with("ADMIN_TOKEN", "admin-token-secret-5566");
    let config = env.config();
    for debug in [format!("{config:?}"), format!("{config:#?}")] {
        for secret in [
            "EK-secret-0123456789abcdef012345",
            "mysql-secret-pw-4821",
            "redis-secret-pw-7731",
            "admin-secret-pw-1290",
            "admin-token-secret-5566",
        ] {
            assert!(!debug.contains(secret), "Debug shows {secret}: {debug}");
        }
        // The output is real (so the check above can fail): it names non-secret values.
        assert!(debug.contains(&env.database), "{debug}");
        assert!(debug.contains("REDACTED"), "{debug}");
    }
    let errors = format!("{:?}", config.mysql);
    assert!(!errors.contains("mysql-secret-pw-4821"), "{errors}");
}

#[test]
fn binary_exits_2_naming_the_bad_variable() {
    for (name, value) in [
        ("PORT", "abc"),
        ("DATABASE_TYPE", "postgres"),
        ("LIMITS_ON_CACHE_DOWN", "never"),
    ] {
        let env = TestEnv::offline().with(name, value);
        let out = run_cli(&["serve"], &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}={value}: {stderr}");
        assert!(
            stderr.contains(&format!("invalid configuration: {name}:")),
            "{name}={value}: {stderr}"
        );
    }
    // A bad secret is named, never printed.
    let key = "s".repeat(31);
    let env = TestEnv::offline().with("ENCRYPTION_KEY", key.as_str());
    let out = run_cli(&["init"], &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("ENCRYPTION_KEY"), "{stderr}");
    assert!(!stderr.contains(&key), "{stderr}");
}

#[test]
fn env_file_replaces_dot_env() {
    let mut env = TestEnv::offline();
    env.unset("ENCRYPTION_KEY").unset("PORT");
    // `./.env` (the binary runs in the test's directory) has the key and a bad port.
    std::fs::write(
        env.dir().join(".env"),
        format!("ENCRYPTION_KEY={}\nPORT=abc\n", "k".repeat(32)),
    )
    .unwrap();
    std::fs::write(env.dir().join("custom.env"), "API_KEY_PREFIX=t_\n").unwrap();

    // Without --env-file, ./.env is read: its bad PORT is named.
    let out = run_cli(&["serve"], &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("invalid configuration: PORT:"), "{stderr}");

    // With --env-file, ./.env is not read at all: no key comes from it, no bad port either.
    let out = run_cli(&["--env-file", "custom.env", "serve"], &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr.trim(),
        "invalid configuration: ENCRYPTION_KEY: is required (32 characters)"
    );

    // A missing --env-file stops the process and says which file.
    let out = run_cli(&["--env-file", "missing.env", "serve"], &env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("invalid configuration: --env-file: cannot read missing.env"),
        "{stderr}"
    );
}

#[test]
fn bad_usage_journal_settings_are_rejected() {
    assert_rejected(
        "USAGE_JOURNAL_FSYNC",
        Some("sometimes"),
        "unknown value `sometimes` (expected never, always or milliseconds 1-60000)",
    );
    assert_rejected(
        "USAGE_JOURNAL_FULL",
        Some("drop"),
        "unknown value `drop` (expected reject or serve)",
    );
    // One archive row takes 17 of MySQL's 65,535 placeholders per statement.
    assert_rejected(
        "USAGE_BATCH_SIZE",
        Some("5000"),
        "5000 is out of range 1..=3000",
    );
    assert_rejected(
        "USAGE_QUEUE_MAX_RECORDS",
        Some("0"),
        "0 is out of range 1..=1000000",
    );
    assert_rejected(
        "USAGE_QUEUE_MAX_RECORDS",
        Some("lots"),
        "`lots` is not a number",
    );
    assert_eq!(TestEnv::offline().config().usage_queue_max, 8192);
}

#[test]
fn http_workers_default_to_one_per_cpu_and_bad_counts_are_rejected() {
    let mut env = TestEnv::offline();
    env.unset("HTTP_WORKERS");
    let config = env.config();
    assert_eq!(config.http_workers, 0);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(config.http_worker_count(), cpus);
    let mut env = TestEnv::offline();
    env.set("HTTP_WORKERS", "3");
    assert_eq!(env.config().http_worker_count(), 3);
    assert_rejected("HTTP_WORKERS", Some("257"), "257 is out of range 0..=256");
    assert_rejected("HTTP_WORKERS", Some("-1"), "-1 is out of range 0..=256");
    assert_rejected("HTTP_WORKERS", Some("many"), "`many` is not a number");
}

#[test]
fn mysql_replica_hosts_are_parsed_and_bad_ones_rejected() {
    let config = TestEnv::offline().config();
    assert!(config.mysql.replicas.is_empty(), "no replica by default");
    assert_eq!(config.mysql.replica_max_lag.as_secs(), 5);
    let mut env = TestEnv::offline();
    env.set("MYSQL_REPLICA_HOSTS", " db-r1:3307 , 10.0.0.2:3306")
        .set("MYSQL_REPLICA_MAX_LAG_SECONDS", "30");
    let config = env.config();
    assert_eq!(
        config.mysql.replicas,
        [("db-r1".to_string(), 3307), ("10.0.0.2".to_string(), 3306)]
    );
    assert_eq!(config.mysql.replica_max_lag.as_secs(), 30);
    for (value, message) in [
        ("db-r1", "`db-r1` is not host:port (no port)"),
        (":3306", "`:3306` is not host:port (no host)"),
        ("db:0", "`db:0` is not host:port (port is not 1..=65535)"),
        (
            "db:70000",
            "`db:70000` is not host:port (port is not 1..=65535)",
        ),
        ("db:3306,", "`db:3306,` has an empty entry"),
    ] {
        assert_rejected("MYSQL_REPLICA_HOSTS", Some(value), message);
    }
    assert_rejected(
        "MYSQL_REPLICA_MAX_LAG_SECONDS",
        Some("-1"),
        "-1 is out of range 0..=86400",
    );
}

#[test]
fn redis_mode_selects_standalone_cluster_or_sentinel() {
    let config = TestEnv::offline().config();
    assert_eq!(config.redis.topology, RedisTopology::Standalone);

    // A cluster: every key carries the prefix as its hash tag.
    let mut env = TestEnv::offline();
    env.set("REDIS_MODE", "cluster")
        .set("REDIS_NODES", "r1:7000, r2:7001")
        .set("REDIS_KEY_PREFIX", "relay:");
    let config = env.config();
    assert_eq!(
        config.redis.topology,
        RedisTopology::Cluster {
            nodes: vec![("r1".into(), 7000), ("r2".into(), 7001)]
        }
    );
    assert_eq!(config.redis.key_prefix, "{relay:}");
    // SPEC §11's name for the list is read too.
    let mut older = TestEnv::offline();
    older
        .set("REDIS_MODE", "cluster")
        .set("REDIS_CLUSTER_NODES", "r3:7002");
    assert_eq!(
        older.config().redis.topology,
        RedisTopology::Cluster {
            nodes: vec![("r3".into(), 7002)]
        }
    );
    for (prefix, tagged) in [("", "{relay}:"), ("{t1}:", "{t1}:"), ("a{}b", "{a{}b}")] {
        env.set("REDIS_KEY_PREFIX", prefix);
        assert_eq!(env.config().redis.key_prefix, tagged, "prefix {prefix:?}");
    }

    let mut env = TestEnv::offline();
    env.set("REDIS_MODE", "sentinel")
        .set("REDIS_SENTINELS", "s1:26379,s2:26379,s3:26379")
        .set("REDIS_MASTER_NAME", "relay-master");
    let config = env.config();
    assert_eq!(
        config.redis.topology,
        RedisTopology::Sentinel {
            sentinels: vec![
                ("s1".into(), 26379),
                ("s2".into(), 26379),
                ("s3".into(), 26379)
            ],
            master_name: "relay-master".into(),
        }
    );
    assert_eq!(
        config.redis.key_prefix, env.key_prefix,
        "no hash tag outside a cluster"
    );
}

#[test]
fn bad_redis_topologies_are_rejected() {
    assert_rejected(
        "REDIS_MODE",
        Some("replicated"),
        "unknown value `replicated` (expected standalone, cluster or sentinel)",
    );
    let rejected = |vars: &[(&str, &str)]| {
        let mut env = TestEnv::offline();
        for (k, v) in vars {
            env.set(k, *v);
        }
        let err = env.try_config().expect_err("must be rejected");
        (err.variable.to_string(), err.to_string())
    };
    let (variable, text) = rejected(&[("REDIS_MODE", "cluster")]);
    assert_eq!(variable, "REDIS_NODES");
    assert_eq!(
        text,
        "invalid configuration: REDIS_NODES: is required with REDIS_MODE=cluster (host:port,…)"
    );
    let (variable, text) = rejected(&[("REDIS_MODE", "cluster"), ("REDIS_NODES", "r1")]);
    assert_eq!(variable, "REDIS_NODES");
    assert!(text.ends_with("`r1` is not host:port (no port)"), "{text}");
    let (variable, text) = rejected(&[
        ("REDIS_MODE", "cluster"),
        ("REDIS_NODES", "r1:7000"),
        ("REDIS_DB", "2"),
    ]);
    assert_eq!(variable, "REDIS_DB");
    assert_eq!(
        text,
        "invalid configuration: REDIS_DB: must be 0 with REDIS_MODE=cluster (a cluster has one database)"
    );
    let (variable, _) = rejected(&[("REDIS_MODE", "sentinel")]);
    assert_eq!(variable, "REDIS_SENTINELS");
    let (variable, text) = rejected(&[
        ("REDIS_MODE", "sentinel"),
        ("REDIS_SENTINELS", "s1:26379"),
        ("REDIS_MASTER_NAME", "my master"),
    ]);
    assert_eq!(variable, "REDIS_MASTER_NAME");
    assert!(text.ends_with("must be a name without spaces"), "{text}");
}
