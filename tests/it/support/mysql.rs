//! Blocking MySQL helpers for checks and clean-up. They run on a thread of their own, so
//! they can be called from a test's async runtime (diesel-async's blocking wrapper cannot
//! run inside it) as well as from plain tests.

use claude_relay::config::MysqlConfig;
use diesel::Connection;
use diesel::connection::SimpleConnection;
use diesel_async::AsyncMysqlConnection;
use diesel_async::async_connection_wrapper::AsyncConnectionWrapper;
use secrecy::ExposeSecret;

type SyncMysql = AsyncConnectionWrapper<AsyncMysqlConnection>;

/// Runs `f` on a fresh thread (no async runtime there) and returns its result.
pub fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(f)
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

fn connect_server(config: &MysqlConfig) -> Result<SyncMysql, String> {
    SyncMysql::establish(config.server_url().expose_secret()).map_err(|e| e.to_string())
}

/// `DROP DATABASE IF EXISTS` of `config.database`.
pub fn drop_database(config: &MysqlConfig) -> Result<(), String> {
    let config = config.clone();
    blocking(move || {
        let mut conn = connect_server(&config)?;
        conn.batch_execute(&format!("DROP DATABASE IF EXISTS `{}`", config.database))
            .map_err(|e| e.to_string())
    })
}

/// True when `config.database` exists on the server.
pub fn database_exists(config: &MysqlConfig) -> bool {
    let name = config.database.clone();
    let n = scalar(
        &server_only(config),
        &format!(
            "SELECT COUNT(*) AS n FROM information_schema.schemata WHERE schema_name = '{name}'"
        ),
    );
    n == 1
}

fn server_only(config: &MysqlConfig) -> MysqlConfig {
    let mut c = config.clone();
    c.database = String::new();
    c
}

/// The tables of `config.database`, sorted.
pub fn table_names(config: &MysqlConfig) -> Vec<String> {
    let config = config.clone();
    let mut names = blocking(move || claude_relay::persistence::setup::table_names(&config))
        .expect("list tables");
    names.sort();
    names
}

/// The one integer `sql` selects as column `n` (e.g. `SELECT COUNT(*) AS n FROM t`).
pub fn scalar(config: &MysqlConfig, sql: &str) -> i64 {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let config = config.clone();
    let sql = sql.to_string();
    blocking(move || {
        let mut conn = if config.database.is_empty() {
            connect_server(&config)
        } else {
            SyncMysql::establish(config.database_url().expose_secret()).map_err(|e| e.to_string())
        }
        .expect("connect to MySQL");
        let row: Row = diesel::RunQueryDsl::get_result(diesel::sql_query(&sql), &mut conn)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        row.n
    })
}

/// The first column of every row `sql` selects as column `s`, as text.
pub fn strings(config: &MysqlConfig, sql: &str) -> Vec<String> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Text)]
        s: String,
    }
    let config = config.clone();
    let sql = sql.to_string();
    blocking(move || {
        let mut conn =
            SyncMysql::establish(config.database_url().expose_secret()).expect("connect to MySQL");
        let rows: Vec<Row> = diesel::RunQueryDsl::load(diesel::sql_query(&sql), &mut conn)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        rows.into_iter().map(|r| r.s).collect()
    })
}

/// `LOCK TABLES <table> WRITE` held on a connection of its own until dropped: every other
/// session's reads and writes of the table wait meanwhile (what a slow archive looks like
/// to the relay, with MySQL still answering its probes).
pub struct TableLock {
    release: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TableLock {
    pub fn write(config: &MysqlConfig, table: &str) -> TableLock {
        let (locked_tx, locked_rx) = std::sync::mpsc::channel::<()>();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let config = config.clone();
        let table = table.to_string();
        let thread = std::thread::spawn(move || {
            let mut conn = SyncMysql::establish(config.database_url().expose_secret())
                .expect("connect to MySQL");
            conn.batch_execute(&format!("LOCK TABLES `{table}` WRITE"))
                .expect("LOCK TABLES");
            locked_tx.send(()).ok();
            release_rx.recv().ok();
            conn.batch_execute("UNLOCK TABLES").expect("UNLOCK TABLES");
        });
        locked_rx.recv().expect("the table is locked");
        TableLock {
            release: Some(release_tx),
            thread: Some(thread),
        }
    }
}

impl Drop for TableLock {
    fn drop(&mut self) {
        if let Some(tx) = self.release.take() {
            tx.send(()).ok();
        }
        if let Some(t) = self.thread.take()
            && t.join().is_err()
            && !std::thread::panicking()
        {
            panic!("the table lock's thread failed");
        }
    }
}

/// Runs `sql` (one or more statements) on the test database.
pub fn execute(config: &MysqlConfig, sql: &str) {
    let config = config.clone();
    let sql = sql.to_string();
    blocking(move || {
        let mut conn =
            SyncMysql::establish(config.database_url().expose_secret()).expect("connect to MySQL");
        conn.batch_execute(&sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    })
}
