//! `claude-relay init`: create the MySQL database if missing, migrate, check Redis, create
//! the admin user (printing generated credentials once). Running it again changes nothing.

use std::time::{Duration, Instant};

use rand::Rng;
use secrecy::ExposeSecret;

use crate::actors::router::HealthStatus;
use crate::app::Actors;
use crate::config::Config;
use crate::domain::password;

/// How long `init` waits for the backends the mode needs.
const BACKEND_WAIT: Duration = Duration::from_secs(10);

pub async fn run(config: Config) -> Result<(), String> {
    if config.mode.uses_mysql() {
        let mysql = config.mysql.clone();
        let applied = tokio::task::spawn_blocking(move || {
            crate::persistence::setup::ensure_database_and_migrate(&mysql)
        })
        .await
        .map_err(|e| e.to_string())??;
        println!(
            "mysql: database `{}` ready, {applied} migration(s) applied",
            config.mysql.database
        );
    }
    let actors =
        Actors::start(&config, false).map_err(|e| format!("cannot open USAGE_JOURNAL_DIR: {e}"))?;
    let deadline = Instant::now() + BACKEND_WAIT;
    let report = loop {
        let report = actors.router.health(Duration::from_secs(1)).await;
        let ready = report.as_ref().is_some_and(|r| {
            (!r.redis.used || r.redis.connected) && (!r.mysql.used || r.mysql.connected)
        });
        if ready || Instant::now() > deadline {
            break report;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let Some(report) = report else {
        return Err("the router did not answer".into());
    };
    if report.redis.used {
        if report.redis.connected {
            println!(
                "redis: connected ({})",
                report.redis.latency.clone().unwrap_or_default()
            );
        } else {
            println!(
                "redis: NOT reachable at {}:{} ({})",
                config.redis.host,
                config.redis.port,
                report.redis.error.clone().unwrap_or_default()
            );
        }
    }
    if report.status == HealthStatus::Unhealthy || (report.mysql.used && !report.mysql.connected) {
        return Err("storage needed by init is not reachable".into());
    }
    let (password, generated) = match &config.admin_password {
        Some(p) => (p.expose_secret().to_string(), false),
        None => (generate_password(), true),
    };
    let hash = password::hash(&password).map_err(|e| e.to_string())?;
    let created = actors
        .router
        .ensure_admin(config.admin_username.clone(), hash)
        .await
        .map_err(|e| e.to_string())?;
    match (created, generated) {
        (true, true) => println!(
            "admin: created `{}` with generated password: {password}\n       (shown once; store it now)",
            config.admin_username
        ),
        (true, false) => println!(
            "admin: created `{}` (password from ADMIN_PASSWORD)",
            config.admin_username
        ),
        (false, _) => println!(
            "admin: `{}` already exists, unchanged",
            config.admin_username
        ),
    }
    println!("init complete (mode {})", config.mode.as_str());
    Ok(())
}

fn generate_password() -> String {
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(20)
        .map(char::from)
        .collect()
}
