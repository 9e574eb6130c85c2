//! The embedded migrations: up → down → up on a fresh database, and `init` run twice leaves
//! the same state (one admin, same tables, same migrations).

use std::path::Path;

use claude_relay::domain::password;
use claude_relay::persistence::setup;

use crate::support::mysql::{self, database_exists, scalar, strings, table_names};
use crate::support::{TestEnv, run_cli};

/// Every table of a migrated relay database, sorted (diesel's bookkeeping table included).
pub const TABLES: &[&str] = &[
    "__diesel_schema_migrations",
    "account_groups",
    "admin_users",
    "api_keys",
    "audit_log",
    "claude_accounts",
    "concurrency_leases",
    "concurrency_scopes",
    "journal_checkpoints",
    "kv_entries",
    "usage_counters",
    "usage_daily",
    "usage_minutely",
    "usage_records",
];

/// The versions of the migration folders (`2026-11-26-000001_core` → `20261126000001`).
fn migration_versions() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut versions: Vec<String> = std::fs::read_dir(dir)
        .expect("migrations/")
        .filter_map(Result::ok)
        .filter(|e| e.path().join("up.sql").exists())
        .map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            name.split('_').next().expect("a version").replace('-', "")
        })
        .collect();
    versions.sort();
    versions
}

fn applied(config: &claude_relay::config::MysqlConfig) -> Vec<String> {
    let config = config.clone();
    mysql::blocking(move || setup::applied_migrations(&config)).expect("applied migrations")
}

/// An archive written before the checkpoints and the minutely roll-up existed: its journals'
/// checkpoints come from its rows (last sequence number, last id), its last 7 days go into
/// the roll-up, and the two indexes they replace are gone.
#[test]
fn an_older_archive_gets_its_checkpoints_and_recent_minutes() {
    let env = TestEnv::new();
    let db = env.direct_mysql();
    let c = db.clone();
    mysql::blocking(move || setup::ensure_database_and_migrate(&c)).expect("migrate");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    for (dir, version) in [
        ("2026-12-03-000001_usage_minutely", "20261203000001"),
        ("2026-12-03-000000_journal_checkpoints", "20261203000000"),
    ] {
        let down = std::fs::read_to_string(root.join(dir).join("down.sql")).expect("down.sql");
        mysql::execute(&db, &down);
        mysql::execute(
            &db,
            &format!("DELETE FROM __diesel_schema_migrations WHERE version = '{version}'"),
        );
    }
    let row = |request: &str, instance: &str, seq: &str, age: &str| {
        format!(
            "INSERT INTO usage_records (request_id, instance_id, journal_seq, api_key_id, model, \
             usage_date, created_at) VALUES ('{request}', {instance}, {seq}, 'key', 'm', \
             '2026-12-01', DATE_FORMAT(UTC_TIMESTAMP() - INTERVAL {age}, '%Y-%m-%d %H:%i:30'))"
        )
    };
    for (request, instance, seq, age) in [
        ("r1", "'inst-a'", "1", "8 DAY"),
        ("r2", "'inst-b'", "7", "2 HOUR"),
        ("r3", "'inst-a'", "2", "2 HOUR"),
        ("r4", "NULL", "NULL", "2 HOUR"),
        ("r5", "'inst-a'", "3", "1 MINUTE"),
    ] {
        mysql::execute(&db, &row(request, instance, seq, age));
    }
    let c = db.clone();
    let ran = mysql::blocking(move || setup::ensure_database_and_migrate(&c)).expect("migrate");
    assert_eq!(ran, 2, "only the two newest migrations were missing");
    let checkpoints = strings(
        &db,
        "SELECT CONCAT(c.instance_id, ' ', c.archived_seq, ' ', r.request_id) AS s \
         FROM journal_checkpoints c JOIN usage_records r ON r.id = c.last_row_id \
         ORDER BY c.instance_id",
    );
    assert_eq!(checkpoints, ["inst-a 3 r5", "inst-b 7 r2"]);
    let minutes = strings(
        &db,
        "SELECT CONCAT(TIMESTAMPDIFF(MINUTE, minute, UTC_TIMESTAMP()) DIV 60, ' ', requests) AS s \
         FROM usage_minutely ORDER BY minute",
    );
    assert_eq!(
        minutes,
        ["2 3", "0 1"],
        "three requests two hours ago, one a minute ago, none of 8 days ago"
    );
    let indexes = scalar(
        &db,
        "SELECT COUNT(*) AS n FROM information_schema.statistics WHERE table_schema = DATABASE() \
         AND index_name IN ('ix_usage_records_journal', 'ix_usage_records_created')",
    );
    assert_eq!(indexes, 0);
}

#[test]
fn up_down_up_on_a_fresh_database() {
    let env = TestEnv::new();
    let db = env.direct_mysql();
    assert!(
        !database_exists(&db),
        "a fresh test database does not exist yet"
    );
    let versions = migration_versions();
    assert!(!versions.is_empty());

    let c = db.clone();
    let ran = mysql::blocking(move || setup::ensure_database_and_migrate(&c)).expect("migrate");
    assert_eq!(
        ran,
        versions.len(),
        "every migration runs on a fresh database"
    );
    assert!(database_exists(&db));
    assert_eq!(table_names(&db), TABLES);
    assert_eq!(applied(&db), versions);
    let charset = strings(
        &db,
        "SELECT CAST(default_character_set_name AS CHAR) AS s FROM information_schema.schemata \
         WHERE schema_name = DATABASE()",
    );
    assert_eq!(charset, ["utf8mb4"]);

    let c = db.clone();
    let reverted = mysql::blocking(move || setup::revert_all(&c)).expect("revert");
    assert_eq!(reverted, versions.len(), "every down.sql runs");
    assert_eq!(
        table_names(&db),
        ["__diesel_schema_migrations"],
        "down.sql leaves no relay table behind"
    );
    assert!(applied(&db).is_empty());

    let c = db.clone();
    let ran = mysql::blocking(move || setup::ensure_database_and_migrate(&c)).expect("migrate");
    assert_eq!(ran, versions.len());
    assert_eq!(table_names(&db), TABLES);
    assert_eq!(applied(&db), versions);

    let c = db.clone();
    let ran = mysql::blocking(move || setup::ensure_database_and_migrate(&c)).expect("migrate");
    assert_eq!(ran, 0, "migrating a migrated database does nothing");
    assert_eq!(table_names(&db), TABLES);
}

fn admin_rows(env: &TestEnv) -> Vec<String> {
    strings(
        &env.direct_mysql(),
        "SELECT CONCAT(username, ' ', password_hash) AS s FROM admin_users ORDER BY id",
    )
}

#[test]
fn init_twice_leaves_the_same_state() {
    let env = TestEnv::new()
        .with("ADMIN_USERNAME", "ops")
        .with("ADMIN_PASSWORD", "init-test-password-81");
    let db = env.direct_mysql();

    let first = run_cli(&["init"], &env);
    let stdout = String::from_utf8_lossy(&first.stdout).to_string();
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("admin: created `ops` (password from ADMIN_PASSWORD)"),
        "{stdout}"
    );
    assert!(stdout.contains("redis: connected"), "{stdout}");
    assert!(
        !stdout.contains("init-test-password-81"),
        "a given password is not echoed"
    );
    let tables = table_names(&db);
    assert_eq!(tables, TABLES);
    let versions = applied(&db);
    let admins = admin_rows(&env);
    assert_eq!(admins.len(), 1, "{admins:?}");
    let (user, hash) = admins[0].split_once(' ').expect("username hash");
    assert_eq!(user, "ops");
    assert!(hash.starts_with("$argon2"), "{hash}");
    assert!(password::verify("init-test-password-81", hash));

    let second = run_cli(&["init"], &env);
    let stdout = String::from_utf8_lossy(&second.stdout);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("admin: `ops` already exists, unchanged"),
        "{stdout}"
    );
    assert!(
        stdout.contains("0 migration(s) applied"),
        "nothing left to migrate: {stdout}"
    );
    assert_eq!(table_names(&db), tables);
    assert_eq!(applied(&db), versions);
    assert_eq!(admin_rows(&env), admins, "the admin row is untouched");
    assert_eq!(scalar(&db, "SELECT COUNT(*) AS n FROM admin_users"), 1);
}

#[test]
fn init_without_password_prints_a_generated_one_once() {
    let env = TestEnv::new();
    assert_eq!(
        env.var("ADMIN_PASSWORD"),
        None,
        "the default test env has none"
    );

    let first = run_cli(&["init"], &env);
    let stdout = String::from_utf8_lossy(&first.stdout).to_string();
    assert_eq!(
        first.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let marker = "admin: created `admin` with generated password: ";
    let start = stdout
        .find(marker)
        .unwrap_or_else(|| panic!("no generated password printed: {stdout}"))
        + marker.len();
    let generated: String = stdout[start..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    assert!(
        generated.len() >= 16 && generated.chars().all(|c| c.is_ascii_alphanumeric()),
        "{generated:?}"
    );
    assert_eq!(
        stdout.matches(&generated).count(),
        1,
        "printed once: {stdout}"
    );
    let admins = admin_rows(&env);
    assert_eq!(admins.len(), 1);
    let (user, hash) = admins[0].split_once(' ').expect("username hash");
    assert_eq!(user, "admin");
    assert!(
        password::verify(&generated, hash),
        "the printed password works"
    );
    assert!(!password::verify("wrong password", hash));

    let second = run_cli(&["init"], &env);
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert_eq!(second.status.code(), Some(0), "{stdout}");
    assert!(!stdout.contains(&generated), "shown once only: {stdout}");
    assert!(!stdout.contains("generated password"), "{stdout}");
    assert!(
        stdout.contains("admin: `admin` already exists, unchanged"),
        "{stdout}"
    );
    assert_eq!(admin_rows(&env), admins);
}

/// The isolation the other tests rely on: a `TestEnv` removes its database and its Redis
/// keys when dropped, and touches no other prefix.
#[test]
fn test_env_cleans_up_after_itself() {
    let env = TestEnv::new();
    let other = TestEnv::new();
    let db = env.direct_mysql();
    let c = db.clone();
    mysql::blocking(move || setup::ensure_database_and_migrate(&c)).expect("migrate");
    let key = format!("{}probe", env.key_prefix);
    let other_key = format!("{}probe", other.key_prefix);
    for k in [&key, &other_key] {
        let _: () = redis::cmd("SET")
            .arg(k)
            .arg("1")
            .query(&mut env.redis())
            .expect("SET");
    }
    assert_eq!(env.redis_keys(), vec![key.clone()]);
    let redis_url = env.redis_url();
    drop(env);

    assert!(!database_exists(&db), "database dropped");
    let mut conn = redis::Client::open(redis_url)
        .expect("url")
        .get_connection()
        .expect("connect");
    let exists: (i64, i64) = redis::pipe()
        .cmd("EXISTS")
        .arg(&key)
        .cmd("EXISTS")
        .arg(&other_key)
        .query(&mut conn)
        .expect("EXISTS");
    assert_eq!(exists, (0, 1), "only the dropped env's keys are deleted");
}
