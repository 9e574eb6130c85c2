//! `PersistenceActor`: owns the MySQL pool (diesel-async + deadpool with time-outs). It
//! probes MySQL on an interval, creates the database and applies the embedded migrations
//! when it first reaches the server, bounds every call with a time-out, fails fast while
//! the circuit is open and reports `BackendState` changes. The SQL lives in `persistence/`.

use std::time::{Duration, Instant};

use actix::prelude::*;
use diesel_async::AsyncMysqlConnection;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::pooled_connection::deadpool::{Object, Pool};
use futures_util::future::BoxFuture;
use secrecy::ExposeSecret;

use super::state::{Backend, BackendState, Circuit, PING_TIMED_OUT, StateReporter, Subscribe};
use crate::config::MysqlConfig;
use crate::error::{StoreError, error_chain};
use crate::persistence::setup;

/// A pooled MySQL connection.
pub type DbConn = Object<AsyncMysqlConnection>;

/// A unit of MySQL work: gets a pooled connection, returns a result.
pub type StoreJob<T> = Box<dyn FnOnce(DbConn) -> BoxFuture<'static, Result<T, StoreError>> + Send>;

/// Runs one job against MySQL, bounded by the call time-out (pool wait included).
pub struct Exec<T> {
    pub job: StoreJob<T>,
    pub timeout: Option<Duration>,
    pub route: Route,
}

/// Which connections a job may run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The primary's pool.
    Primary,
    /// A report or listing: a read replica that is up and not lagging, else the primary.
    Report,
    /// The usage archive writer: the primary, on its own connection. Its inserts are
    /// prepared statements of up to 2,304 parameters, whose descriptions a connection keeps
    /// (about 1 MB per connection); on one connection they cost 1 MB, not 1 MB per pooled
    /// connection.
    Archive,
}

impl<T: Send + 'static> Message for Exec<T> {
    type Result = Result<T, StoreError>;
}

/// Pool figures for /metrics and `diagnose`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PoolStatus {
    pub max_size: usize,
    pub size: usize,
    pub available: usize,
    pub in_use: usize,
    /// The read replicas, as their last probe found them.
    pub replicas: Vec<ReplicaStatus>,
}

/// One read replica for /health, /metrics and `diagnose`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    /// `host:port`.
    pub host: String,
    /// Reports and listings are read from it.
    pub readable: bool,
    /// Seconds behind the primary at the last probe that reached it.
    pub lag_seconds: Option<u64>,
    /// Why it is not read from.
    pub last_error: Option<String>,
}

#[derive(Message)]
#[rtype(result = "PoolStatus")]
pub struct GetPoolStatus;

pub struct PersistenceActor {
    config: MysqlConfig,
    probe_interval: Duration,
    /// False when the mode does not use MySQL: no connection, every call unavailable.
    enabled: bool,
    /// False until the database exists and is migrated; `serve` creates and migrates it on
    /// first contact, `init` does that itself before starting the actor.
    schema_ready: bool,
    pool: Pool<AsyncMysqlConnection>,
    /// One connection to the primary for the archive writer (see [`Route::Archive`]).
    archive_pool: Pool<AsyncMysqlConnection>,
    probing: bool,
    circuit: Circuit,
    reporter: StateReporter,
    /// The read replicas (`MYSQL_REPLICA_HOSTS`), in order.
    replicas: Vec<Replica>,
    /// Round-robin position over the usable replicas.
    next_replica: usize,
}

/// One read replica: its own pool, and whether the last probe found it up and close enough.
struct Replica {
    name: String,
    pool: Pool<AsyncMysqlConnection>,
    /// Up, replicating, and at most `replica_max_lag` behind (set by the probe, cleared by a
    /// failed call).
    usable: bool,
    probing: bool,
    /// False until the first probe's outcome was logged.
    reported: bool,
    /// Seconds behind at the last probe that reached it.
    lag: Option<u64>,
    /// Why it is not read from (the probe's or a failed call's error).
    last_error: Option<String>,
}

/// Builds the pool with every deadpool time-out set: without them a silent MySQL hangs
/// `pool.get()` forever. (Fails only without a runtime for the time-outs.)
pub fn build_pool(config: &MysqlConfig) -> std::io::Result<Pool<AsyncMysqlConnection>> {
    build_pool_of(config, config.connection_limit)
}

fn build_pool_of(
    config: &MysqlConfig,
    max_size: usize,
) -> std::io::Result<Pool<AsyncMysqlConnection>> {
    let manager = AsyncDieselConnectionManager::<AsyncMysqlConnection>::new(
        config.database_url().expose_secret(),
    );
    Pool::builder(manager)
        .max_size(max_size)
        .wait_timeout(Some(config.timeout))
        .create_timeout(Some(config.timeout))
        .recycle_timeout(Some(config.timeout))
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .map_err(|e| std::io::Error::other(format!("mysql pool: {e}")))
}

impl PersistenceActor {
    /// Starts the actor on its own thread and returns the handle callers use.
    pub fn spawn(
        config: MysqlConfig,
        probe_interval: Duration,
        auto_migrate: bool,
        enabled: bool,
    ) -> std::io::Result<PersistenceHandle> {
        let pool = build_pool(&config)?;
        let archive_pool = build_pool_of(&config, 1)?;
        let replicas = config
            .replicas
            .iter()
            .map(|(host, port)| {
                Ok(Replica {
                    name: format!("{host}:{port}"),
                    pool: build_pool(&config.replica(host, *port))?,
                    usable: false,
                    probing: false,
                    reported: false,
                    lag: None,
                    last_error: None,
                })
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        let arbiter = Arbiter::new();
        let addr =
            PersistenceActor::start_in_arbiter(&arbiter.handle(), move |_| PersistenceActor {
                pool,
                archive_pool,
                config,
                probe_interval,
                enabled,
                schema_ready: !auto_migrate,
                probing: false,
                circuit: Circuit::default(),
                reporter: StateReporter::default(),
                replicas,
                next_replica: 0,
            });
        Ok(PersistenceHandle {
            addr,
            calls: Default::default(),
        })
    }

    /// Asks every replica how far behind it is; one that does not answer, does not
    /// replicate, or lags more than `replica_max_lag` is not read from until it recovers.
    fn probe_replicas(&mut self, ctx: &mut Context<Self>) {
        let max_lag = self.config.replica_max_lag.as_secs();
        let timeout = self.config.timeout.min(Duration::from_millis(900));
        for index in 0..self.replicas.len() {
            let replica = &mut self.replicas[index];
            if replica.probing {
                continue;
            }
            replica.probing = true;
            let pool = replica.pool.clone();
            let work = async move {
                match tokio::time::timeout(timeout, setup::replica_lag(&pool)).await {
                    Ok(Ok(lag)) if lag <= max_lag => (Some(lag), Ok(lag)),
                    Ok(Ok(lag)) => (
                        Some(lag),
                        Err(format!("{lag} s behind (at most {max_lag} s allowed)")),
                    ),
                    Ok(Err(e)) => (None, Err(e)),
                    Err(_) => (None, Err("probe timed out".to_string())),
                }
            };
            ctx.spawn(work.into_actor(self).map(move |(lag, result), act, _ctx| {
                let replica = &mut act.replicas[index];
                replica.probing = false;
                replica.lag = lag;
                replica.last_error = result.as_ref().err().cloned();
                let usable = result.is_ok();
                if usable != replica.usable || !replica.reported {
                    replica.reported = true;
                    match &result {
                        Ok(lag) => log::info!(
                            "mysql replica {} is read from again ({lag} s behind)",
                            replica.name
                        ),
                        Err(e) => log::warn!(
                            "mysql replica {} is not read from (reports use the primary): {e}",
                            replica.name
                        ),
                    }
                }
                replica.usable = usable;
            }));
        }
    }

    /// The pool a call runs on: a usable replica (round robin) for reports and listings,
    /// the archive writer's connection for it, else the primary. Returns the replica's index
    /// when it is one.
    fn pool_for(&mut self, route: Route) -> (Pool<AsyncMysqlConnection>, Option<usize>) {
        if route == Route::Archive {
            return (self.archive_pool.clone(), None);
        }
        if route == Route::Report {
            let n = self.replicas.len();
            for step in 0..n {
                let index = (self.next_replica + step) % n;
                if self.replicas[index].usable {
                    self.next_replica = index + 1;
                    return (self.replicas[index].pool.clone(), Some(index));
                }
            }
        }
        (self.pool.clone(), None)
    }

    fn probe(&mut self, ctx: &mut Context<Self>) {
        self.probe_replicas(ctx);
        if self.probing {
            return;
        }
        self.probing = true;
        let pool = self.pool.clone();
        let config = self.config.clone();
        let needs_schema = !self.schema_ready;
        let timeout = self.config.timeout.min(Duration::from_millis(900));
        let work = async move {
            if needs_schema {
                // Database creation and migrations run on a blocking thread (diesel's
                // migration harness is synchronous); bounded so a frozen server cannot hang us.
                let setup_timeout = config.timeout.max(Duration::from_secs(30));
                let job = tokio::task::spawn_blocking(move || {
                    setup::ensure_database_and_migrate(&config)
                });
                match tokio::time::timeout(setup_timeout, job).await {
                    Ok(Ok(Ok(_applied))) => {}
                    Ok(Ok(Err(e))) => return Err(e),
                    Ok(Err(_)) => return Err("migration task failed".to_string()),
                    Err(_) => return Err("schema setup timed out".to_string()),
                }
            }
            let started = Instant::now();
            match tokio::time::timeout(timeout, setup::ping(&pool)).await {
                Ok(Ok(())) => Ok(started.elapsed()),
                Ok(Err(e)) => Err(e),
                Err(_) => Err(PING_TIMED_OUT.to_string()),
            }
        };
        ctx.spawn(work.into_actor(self).map(move |result, act, _ctx| {
            act.probing = false;
            match result {
                Ok(latency) => {
                    if needs_schema {
                        act.schema_ready = true;
                    }
                    act.circuit.success();
                    act.reporter.report(
                        Backend::Mysql,
                        BackendState {
                            up: true,
                            latency: Some(Duration::from_micros(
                                u64::try_from(latency.as_micros())
                                    .unwrap_or(u64::MAX)
                                    .div_ceil(100)
                                    * 100,
                            )),
                            last_error: None,
                        },
                    );
                }
                Err(error) => {
                    // A busy server (every pooled connection taken) answers late too.
                    if act.circuit.probe_failed(&error) {
                        act.reporter
                            .report(Backend::Mysql, BackendState::down(error));
                    }
                }
            }
        }));
    }
}

impl Actor for PersistenceActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if !self.enabled {
            return;
        }
        self.probe(ctx);
        ctx.run_interval(self.probe_interval, |act, ctx| act.probe(ctx));
    }
}

impl<T: Send + 'static> Handler<Exec<T>> for PersistenceActor {
    type Result = ResponseActFuture<Self, Result<T, StoreError>>;

    fn handle(&mut self, msg: Exec<T>, _ctx: &mut Self::Context) -> Self::Result {
        if !self.circuit.allows() || !self.schema_ready {
            return Box::pin(fut::ready(Err(StoreError::Unavailable)));
        }
        let (pool, replica) = self.pool_for(msg.route);
        let primary = self.pool.clone();
        let timeout = msg.timeout.unwrap_or(self.config.timeout);
        let work = async move {
            let run = async move {
                // A replica that cannot give a connection (dead since the last probe): the
                // call goes to the primary, and the replica is left until the probe finds it.
                let (conn, replica_error) = match pool.get().await {
                    Ok(conn) => (conn, None),
                    Err(e) if replica.is_some() => {
                        log::warn!("mysql replica unavailable, report read from the primary: {e}");
                        let why = Some(e.to_string());
                        match primary.get().await {
                            Ok(conn) => (conn, why),
                            Err(e) => return (Err(StoreError::from(e)), why),
                        }
                    }
                    Err(e) => return (Err(StoreError::from(e)), None),
                };
                ((msg.job)(conn).await, replica_error)
            };
            // A query on a checked-out connection has no time-out of its own.
            match tokio::time::timeout(timeout, run).await {
                Ok(result) => result,
                Err(_) => (Err(StoreError::Timeout), None),
            }
        };
        Box::pin(
            work.into_actor(self)
                .map(move |(result, replica_error), act, _ctx| {
                    if let Some(index) = replica {
                        // A replica's failure says nothing of the primary's circuit.
                        let failed_here = match (&replica_error, &result) {
                            (Some(why), _) => Some(why.clone()),
                            (None, Err(e)) if e.is_outage() => Some(e.to_string()),
                            _ => None,
                        };
                        if let Some(why) = failed_here {
                            let failed = &mut act.replicas[index];
                            failed.usable = false;
                            failed.last_error = Some(why);
                        }
                        if replica_error.is_none() {
                            return result;
                        }
                    }
                    match &result {
                        Err(e) if e.is_outage() => {
                            if act.circuit.failure() {
                                act.reporter
                                    .report(Backend::Mysql, BackendState::down(error_chain(e)));
                            }
                        }
                        _ => {
                            act.circuit.success();
                        }
                    }
                    result
                }),
        )
    }
}

impl Handler<GetPoolStatus> for PersistenceActor {
    type Result = MessageResult<GetPoolStatus>;

    fn handle(&mut self, _: GetPoolStatus, _ctx: &mut Self::Context) -> Self::Result {
        let status = self.pool.status();
        MessageResult(PoolStatus {
            max_size: status.max_size,
            size: status.size,
            available: status.available,
            in_use: status.size.saturating_sub(status.available),
            replicas: self
                .replicas
                .iter()
                .map(|r| ReplicaStatus {
                    host: r.name.clone(),
                    readable: r.usable,
                    lag_seconds: r.lag,
                    last_error: (!r.usable).then(|| r.last_error.clone()).flatten(),
                })
                .collect(),
        })
    }
}

impl Handler<Subscribe> for PersistenceActor {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _ctx: &mut Self::Context) {
        self.reporter.subscribe(Backend::Mysql, msg.subscriber);
    }
}

/// Cloneable access to the persistence actor; the typed queries are in `persistence/`.
#[derive(Clone)]
pub struct PersistenceHandle {
    pub(crate) addr: Addr<PersistenceActor>,
    /// Calls sent to MySQL, for /metrics and benchmarks.
    pub(crate) calls: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl PersistenceHandle {
    /// Runs one job with the default time-out.
    pub async fn exec<T, F>(&self, job: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(DbConn) -> BoxFuture<'static, Result<T, StoreError>> + Send + 'static,
    {
        self.exec_with_timeout(None, job).await
    }

    /// Runs one job with an explicit time-out (bulk work).
    pub async fn exec_with_timeout<T, F>(
        &self,
        timeout: Option<Duration>,
        job: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(DbConn) -> BoxFuture<'static, Result<T, StoreError>> + Send + 'static,
    {
        self.run(Route::Primary, timeout, job).await
    }

    /// Runs a report or listing: on a read replica that is up and not lagging when there is
    /// one, else on the primary. Never for admission, key checks or anything that must see
    /// a write just made.
    pub async fn exec_report<T, F>(&self, job: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(DbConn) -> BoxFuture<'static, Result<T, StoreError>> + Send + 'static,
    {
        self.run(Route::Report, None, job).await
    }

    /// Runs one batch of the usage archive writer, on its own connection (see
    /// [`Route::Archive`]), with an explicit time-out.
    pub async fn exec_archive<T, F>(&self, timeout: Duration, job: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(DbConn) -> BoxFuture<'static, Result<T, StoreError>> + Send + 'static,
    {
        self.run(Route::Archive, Some(timeout), job).await
    }

    /// Sends one job to the actor, counted in [`calls`](Self::calls).
    async fn run<T, F>(
        &self,
        route: Route,
        timeout: Option<Duration>,
        job: F,
    ) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(DbConn) -> BoxFuture<'static, Result<T, StoreError>> + Send + 'static,
    {
        self.calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.addr
            .send(Exec {
                job: Box::new(job),
                timeout,
                route,
            })
            .await
            .unwrap_or(Err(StoreError::Unavailable))
    }

    /// MySQL calls made through this handle's actor since start.
    pub fn calls(&self) -> u64 {
        self.calls.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub async fn pool_status(&self) -> PoolStatus {
        self.addr.send(GetPoolStatus).await.unwrap_or_default()
    }

    pub fn subscribe(&self, subscriber: Recipient<super::state::BackendStateChanged>) {
        self.addr.do_send(Subscribe { subscriber });
    }
}
