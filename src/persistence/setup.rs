//! Database creation, the embedded migrations, and the liveness ping.

use diesel::Connection;
use diesel::connection::SimpleConnection;
use diesel_async::AsyncMysqlConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use diesel_async::pooled_connection::deadpool::Pool;
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};
use secrecy::ExposeSecret;

use crate::config::MysqlConfig;

pub const MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations");

type SyncMysql = AsyncConnectionWrapper<AsyncMysqlConnection>;

/// Creates the database if missing and applies pending migrations; returns how many ran.
/// Blocking: call it from a blocking thread.
pub fn ensure_database_and_migrate(config: &MysqlConfig) -> Result<usize, String> {
    create_database(config)?;
    let mut conn = connect(config)?;
    let applied = conn
        .run_pending_migrations(MIGRATIONS)
        .map_err(|e| format!("migration failed: {e}"))?;
    for m in &applied {
        log::info!("applied migration {m}");
    }
    Ok(applied.len())
}

/// `CREATE DATABASE IF NOT EXISTS` with utf8mb4. Blocking.
pub fn create_database(config: &MysqlConfig) -> Result<(), String> {
    let mut server = SyncMysql::establish(config.server_url().expose_secret()).map_err(|e| {
        format!(
            "cannot connect to MySQL at {}:{}: {e}",
            config.host, config.port
        )
    })?;
    // The name was validated as [A-Za-z0-9_$]+ by Config, so quoting it is safe.
    server
        .batch_execute(&format!(
            "CREATE DATABASE IF NOT EXISTS `{}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci",
            config.database
        ))
        .map_err(|e| format!("cannot create database {}: {e}", config.database))
}

/// A blocking connection to the relay's database (migrations, tools). Blocking.
pub fn connect(config: &MysqlConfig) -> Result<SyncMysql, String> {
    SyncMysql::establish(config.database_url().expose_secret())
        .map_err(|e| format!("cannot connect to database {}: {e}", config.database))
}

/// Reverts every applied migration (tests of down.sql). Blocking.
pub fn revert_all(config: &MysqlConfig) -> Result<usize, String> {
    let mut conn = connect(config)?;
    let reverted = conn
        .revert_all_migrations(MIGRATIONS)
        .map_err(|e| format!("revert failed: {e}"))?;
    Ok(reverted.len())
}

/// Versions of the applied migrations, newest last. Blocking.
pub fn applied_migrations(config: &MysqlConfig) -> Result<Vec<String>, String> {
    let mut conn = connect(config)?;
    let mut versions: Vec<String> = conn
        .applied_migrations()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|v| v.to_string())
        .collect();
    versions.sort();
    Ok(versions)
}

/// Names of the tables in the relay's database, sorted. Blocking.
pub fn table_names(config: &MysqlConfig) -> Result<Vec<String>, String> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        table_name: String,
    }
    let mut conn = connect(config)?;
    let rows: Vec<Row> = diesel::RunQueryDsl::load(
        diesel::sql_query(
            "SELECT CAST(table_name AS CHAR) AS table_name FROM information_schema.tables \
         WHERE table_schema = DATABASE() ORDER BY table_name",
        ),
        &mut conn,
    )
    .map_err(|e| e.to_string())?;
    Ok(rows.into_iter().map(|r| r.table_name).collect())
}

/// `SELECT 1` through the pool.
pub async fn ping(pool: &Pool<AsyncMysqlConnection>) -> Result<(), String> {
    let mut conn = pool.get().await.map_err(|e| pool_error(&e))?;
    diesel_async::RunQueryDsl::execute(diesel::sql_query("SELECT 1"), &mut conn)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn pool_error(e: &diesel_async::pooled_connection::deadpool::PoolError) -> String {
    use deadpool::managed::PoolError;
    match e {
        PoolError::Timeout(_) => "connection timed out".into(),
        PoolError::Backend(b) => format!("cannot connect: {b}"),
        other => other.to_string(),
    }
}

/// `SHOW GLOBAL STATUS` figures the relay watches (threads, slow queries, row-lock waits).
pub async fn server_status(
    mut conn: crate::actors::persistence::DbConn,
) -> Result<std::collections::HashMap<String, String>, crate::error::StoreError> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text, column_name = "Variable_name")]
        name: String,
        #[diesel(sql_type = diesel::sql_types::Text, column_name = "Value")]
        value: String,
    }
    let rows: Vec<Row> = diesel_async::RunQueryDsl::load(
        diesel::sql_query(
            "SHOW GLOBAL STATUS WHERE Variable_name IN \
             ('Threads_connected', 'Slow_queries', 'Innodb_row_lock_waits', 'Uptime')",
        ),
        &mut conn,
    )
    .await?;
    Ok(rows.into_iter().map(|r| (r.name, r.value)).collect())
}

#[derive(diesel::QueryableByName)]
struct ReplicaStatus {
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    #[diesel(column_name = Seconds_Behind_Master)]
    lag: Option<i64>,
}

/// How far the replica behind `pool` lags its primary (`Seconds_Behind_Master`); an error
/// when the server replicates nothing or replication is stopped (the column is NULL).
pub async fn replica_lag(pool: &Pool<AsyncMysqlConnection>) -> Result<u64, String> {
    let mut conn = pool.get().await.map_err(|e| pool_error(&e))?;
    let rows: Vec<ReplicaStatus> =
        diesel_async::RunQueryDsl::load(diesel::sql_query("SHOW SLAVE STATUS"), &mut conn)
            .await
            .map_err(|e| e.to_string())?;
    match rows.into_iter().next() {
        None => Err("not a replica (SHOW SLAVE STATUS is empty)".into()),
        Some(ReplicaStatus { lag: None }) => Err("replication is stopped".into()),
        Some(ReplicaStatus { lag: Some(lag) }) => {
            u64::try_from(lag).map_err(|_| format!("Seconds_Behind_Master is {lag}"))
        }
    }
}
