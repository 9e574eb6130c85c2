//! `MYSQL_REPLICA_HOSTS`: a test-owned MariaDB primary (binary log on) and a replica of it
//! (`mariadb-install-db` into temp dirs, two `mariadbd`). Listings read the replica (a row
//! changed on the replica alone shows in the admin key list, not in the single-key read or
//! the key check); a replica whose replication stops, or that is killed, is left for the
//! primary.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use reqwest::Method;
use tempfile::TempDir;

use super::WAIT;
use crate::ledger::{Answer, send};
use crate::support::env::{free_port, random_hex};
use crate::support::fixtures::{console_account, create_key, store_account};
use crate::support::poll::eventually_blocking;
use crate::support::{TestEnv, eventually, spawn_app, spawn_binary, start_mock};

/// A `mariadbd` of this test, on its own data directory and port; killed when dropped.
struct Mariadb {
    port: u16,
    child: Option<Child>,
    _dir: TempDir,
}

impl Mariadb {
    fn start(server_id: u32, log_bin: bool) -> Mariadb {
        let dir = tempfile::Builder::new()
            .prefix("crt-mariadb-")
            .tempdir()
            .expect("temp dir");
        let data = dir.path().join("data");
        let installed = Command::new("mariadb-install-db")
            .args(["--no-defaults", "--user=root", "--skip-test-db"])
            .arg("--auth-root-authentication-method=normal")
            .arg(format!("--datadir={}", data.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("mariadb-install-db");
        assert!(installed.success(), "mariadb-install-db failed");
        let port = free_port();
        let mut cmd = Command::new("mariadbd");
        cmd.arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={port}"))
            .arg("--bind-address=127.0.0.1")
            .arg(format!("--socket={}", dir.path().join("sock").display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg(format!("--server-id={server_id}"))
            .arg("--user=root")
            .arg("--skip-name-resolve")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if log_bin {
            cmd.arg("--log-bin=mysql-bin");
        }
        let child = cmd.spawn().expect("mariadbd");
        let server = Mariadb {
            port,
            child: Some(child),
            _dir: dir,
        };
        eventually_blocking(Duration::from_secs(60), "mariadbd answers", || {
            server.sql("SELECT 1").map(|_| ())
        });
        server
    }

    /// Runs `sql` with the `mariadb` client; its tab-separated output without headers.
    fn sql(&self, sql: &str) -> Result<String, String> {
        let out = Command::new("mariadb")
            .args(["-uroot", "-h127.0.0.1", "-N", "-B"])
            .arg(format!("-P{}", self.port))
            .arg("-e")
            .arg(sql)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).to_string())
        }
    }

    fn must(&self, sql: &str) -> String {
        self.sql(sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The names the admin key list shows.
async fn listed_names(base: &str, token: &str) -> Result<Vec<String>, String> {
    let r = reqwest::Client::new()
        .request(Method::GET, format!("{base}/admin/api-keys"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() != 200 {
        return Err(format!(
            "{} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        ));
    }
    let body: serde_json::Value = r.json().await.map_err(|e| e.to_string())?;
    Ok(body["data"]
        .as_array()
        .ok_or("no data")?
        .iter()
        .map(|k| k["name"].as_str().unwrap_or("").to_string())
        .collect())
}

async fn single_name(base: &str, token: &str, id: &str) -> String {
    let r = reqwest::Client::new()
        .request(Method::GET, format!("{base}/admin/api-keys/{id}"))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET key");
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.expect("json");
    body["data"]["name"].as_str().unwrap_or("").to_string()
}

async fn wait_listed(base: &str, token: &str, want: &[&str], what: &str) {
    eventually(WAIT, what, || async {
        match listed_names(base, token).await {
            Ok(names) if names == want => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

#[actix_rt::test]
async fn listings_read_a_replica_and_fall_back_to_the_primary_when_it_stops_or_dies() {
    let primary = Mariadb::start(1, true);
    let mut replica = Mariadb::start(2, false);
    replica.must(&format!(
        "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT={}, MASTER_USER='root', \
         MASTER_PASSWORD='', MASTER_USE_GTID=slave_pos; START SLAVE",
        primary.port
    ));
    let token = random_hex(32);
    let env = TestEnv::new()
        .with("MYSQL_HOST", "127.0.0.1")
        .with("MYSQL_PORT", primary.port.to_string())
        .with("MYSQL_REPLICA_HOSTS", format!("127.0.0.1:{}", replica.port))
        .with("MYSQL_REPLICA_MAX_LAG_SECONDS", "2")
        .with("ADMIN_TOKEN", &token);
    let db = env.database.clone();

    // A key and an account on the primary, through an in-process relay.
    let mock = start_mock().await;
    let mut setup_config = env.config();
    setup_config.journal_dir = env.dir().join("setup-journal");
    let setup = spawn_app(setup_config).await;
    setup
        .wait_for_health("healthy", Duration::from_secs(30))
        .await;
    let config = env.config();
    let (key, plaintext) = create_key(&setup.actors.router, &config, |_| {}).await;
    store_account(
        &setup.actors.router,
        console_account(&config, "c1", &mock.url, "sk-up", 10),
    )
    .await;
    eventually_blocking(WAIT, "the key replicated", || {
        replica
            .sql(&format!("SELECT COUNT(*) FROM {db}.api_keys"))
            .and_then(|n| if n == "1" { Ok(()) } else { Err(n) })
    });
    // The replica alone renames the key, and disables it: whatever reads the replica says so.
    replica.must(&format!(
        "UPDATE {db}.api_keys SET name = 'on the replica', is_active = 0 WHERE id = '{}'",
        key.id
    ));

    let relay = spawn_binary(&env).await;
    relay
        .wait_for_health("healthy", Duration::from_secs(30))
        .await;
    wait_listed(
        &relay.base,
        &token,
        &["on the replica"],
        "the list reads the replica",
    )
    .await;
    // /health and /metrics show the replica read from.
    let host = format!("127.0.0.1:{}", replica.port);
    let readable = format!("claude_relay_mysql_replica_readable{{replica=\"{host}\"}}");
    let (_, health) = relay.http.health().await;
    assert_eq!(
        health["databases"]["mysqlReplicas"],
        serde_json::json!([{"host": host, "readable": true, "lagSeconds": 0, "lastError": null}]),
        "{health}"
    );
    assert_eq!(crate::ledger::metric(&relay.http, &readable).await, 1.0);
    // The single-key read and the key check read the primary.
    assert_eq!(single_name(&relay.base, &token, &key.id).await, "test key");
    let client = crate::ledger::client();
    assert!(matches!(
        send(&client, &relay.base, &plaintext, false).await,
        Answer::Ok(_)
    ));

    // Replication stopped (Seconds_Behind_Master NULL): the primary answers the list.
    replica.must("STOP SLAVE SQL_THREAD");
    wait_listed(&relay.base, &token, &["test key"], "stopped replica left").await;
    replica.must("START SLAVE SQL_THREAD");
    wait_listed(
        &relay.base,
        &token,
        &["on the replica"],
        "replica read again",
    )
    .await;

    // Lagging: the replica applies events an hour late; a second key made on the primary
    // makes it fall behind, and past MYSQL_REPLICA_MAX_LAG_SECONDS (2) the primary answers.
    replica.must("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 3600; START SLAVE");
    // Restarting replication shows as "stopped" for a moment, and a probe may catch that
    // moment only after the replica was read from again: read from it again after five
    // probes (100 ms apart) too, so that the fall-back below is the lag's.
    wait_listed(
        &relay.base,
        &token,
        &["on the replica"],
        "delayed replica read",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    wait_listed(
        &relay.base,
        &token,
        &["on the replica"],
        "delayed replica read after five probes",
    )
    .await;
    create_key(&setup.actors.router, &config, |_| {}).await;
    let written = std::time::Instant::now();
    let both = ["test key", "test key"];
    wait_listed(&relay.base, &token, &both, "lagging replica left").await;
    let left_after = written.elapsed();
    let lag = replica.must("SHOW SLAVE STATUS\\G");
    eprintln!("lagging replica left after {left_after:?}");
    assert!(
        left_after >= Duration::from_secs(2),
        "left before it lagged 2 s: {left_after:?}; {lag}"
    );
    replica.must("STOP SLAVE; CHANGE MASTER TO MASTER_DELAY = 0; START SLAVE");
    wait_listed(
        &relay.base,
        &token,
        &["test key", "on the replica"],
        "caught-up replica read",
    )
    .await;

    // Killed: every list answers, from the primary.
    replica.kill();
    for _ in 0..5 {
        let names = listed_names(&relay.base, &token).await;
        assert!(names.is_ok(), "{names:?}");
    }
    wait_listed(&relay.base, &token, &both, "dead replica left").await;
    assert!(
        relay.logs().contains("is not read from"),
        "{}",
        relay.logs()
    );
    let (_, health) = relay.http.health().await;
    let dead = &health["databases"]["mysqlReplicas"][0];
    assert_eq!(dead["host"], host.as_str(), "{health}");
    assert_eq!(dead["readable"], false, "{health}");
    assert!(
        dead["lastError"].as_str().is_some_and(|e| !e.is_empty()),
        "{health}"
    );
    assert_eq!(health["status"], "healthy", "the primary serves: {health}");
    assert_eq!(crate::ledger::metric(&relay.http, &readable).await, 0.0);
}
