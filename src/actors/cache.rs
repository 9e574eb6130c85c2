//! `CacheActor`: owns the Redis connection. It connects (and reconnects) by itself, probes
//! Redis on an interval, bounds every call with a time-out, fails fast while the circuit is
//! open and reports `BackendState` changes. Callers use `CacheHandle`; the Redis commands
//! themselves live in `cache_ops.rs` beside this file.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

use actix::prelude::*;
use futures_util::future::BoxFuture;
use redis::aio::ConnectionManagerConfig;

pub use super::cache_conn::RedisConn;
use super::cache_conn::pubsub_client;
pub use super::cache_ops::{Applied, LedgerEpoch, UsageApply};
use super::state::{Backend, BackendState, Circuit, PING_TIMED_OUT, StateReporter, Subscribe};
use crate::config::RedisConfig;
use crate::error::CacheError;
use crate::kv::KeySpace;

/// A unit of Redis work: gets a clone of the multiplexed connection, returns a result.
pub type CacheJob<T> =
    Box<dyn FnOnce(RedisConn) -> BoxFuture<'static, redis::RedisResult<T>> + Send>;

/// Runs one job against Redis, bounded by the call time-out.
pub struct Exec<T> {
    pub job: CacheJob<T>,
    /// A longer time-out than the configured call time-out (bulk work, counting round trips).
    pub timeout: Option<Duration>,
}

impl<T: Send + 'static> Message for Exec<T> {
    type Result = Result<T, CacheError>;
}

/// A message another relay instance published on the events channel.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct CacheEvent {
    pub payload: String,
}

/// Asks the cache actor to forward published events to `subscriber`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SubscribeEvents {
    pub subscriber: Recipient<CacheEvent>,
}

/// Returns a clone of the connection (for pub/sub set-up and bulk jobs), if connected.
#[derive(Message)]
#[rtype(result = "Option<RedisConn>")]
pub struct GetConnection;

pub struct CacheActor {
    config: RedisConfig,
    probe_interval: Duration,
    /// False when the mode does not use Redis: no connection, every call unavailable.
    enabled: bool,
    conn: Option<RedisConn>,
    probing: bool,
    circuit: Circuit,
    reporter: StateReporter,
    event_subscribers: Vec<Recipient<CacheEvent>>,
    /// True while the pub/sub listener runs; the probe restarts it when it ends.
    listening: Arc<AtomicBool>,
    /// Whether this actor listens to the events channel (the coordinator's does; an HTTP
    /// worker's serves only that worker's hot path).
    listens: bool,
}

impl CacheActor {
    pub fn new(config: RedisConfig, probe_interval: Duration, enabled: bool) -> Self {
        CacheActor {
            config,
            probe_interval,
            enabled,
            conn: None,
            probing: false,
            circuit: Circuit::default(),
            reporter: StateReporter::default(),
            event_subscribers: Vec::new(),
            listening: Arc::new(AtomicBool::new(false)),
            listens: true,
        }
    }

    /// Starts the pub/sub listener unless it runs; events go through the actor to its
    /// subscribers, so late subscribers get them too.
    fn listen(&mut self, ctx: &mut Context<Self>) {
        if self.listening.swap(true, Ordering::SeqCst) {
            return;
        }
        let running = self.listening.clone();
        let config = self.config.clone();
        let channel = KeySpace::new(&self.config.key_prefix).events_channel();
        let me = ctx.address();
        let timeout = self.config.timeout.max(Duration::from_millis(300));
        actix::spawn(async move {
            let listen = async {
                let client = pubsub_client(&config, timeout).await?;
                let mut pubsub = tokio::time::timeout(timeout, client.get_async_pubsub())
                    .await
                    .map_err(|_| {
                        redis::RedisError::from((redis::ErrorKind::Io, "pubsub connect timed out"))
                    })??;
                pubsub.subscribe(&channel).await?;
                let mut messages = pubsub.into_on_message();
                while let Some(msg) = messages.next().await {
                    if let Ok(payload) = msg.get_payload::<String>() {
                        me.do_send(CacheEvent { payload });
                    }
                }
                Ok::<(), redis::RedisError>(())
            };
            if let Err(e) = listen.await {
                log::debug!("pub/sub listener ended: {}", describe(&e));
            }
            running.store(false, Ordering::SeqCst);
        });
    }

    /// Starts the actor on its own thread and returns the handle callers use.
    pub fn spawn(config: RedisConfig, probe_interval: Duration, enabled: bool) -> CacheHandle {
        CacheActor::spawn_on(&Arbiter::new().handle(), config, probe_interval, enabled)
    }

    /// Starts the actor on an existing arbiter (the router's: their messages then never
    /// cross threads).
    pub fn spawn_on(
        arbiter: &ArbiterHandle,
        config: RedisConfig,
        probe_interval: Duration,
        enabled: bool,
    ) -> CacheHandle {
        let keys = KeySpace::new(&config.key_prefix);
        let addr = CacheActor::start_in_arbiter(arbiter, move |_| {
            CacheActor::new(config, probe_interval, enabled)
        });
        CacheHandle {
            addr,
            keys,
            calls: Arc::default(),
        }
    }

    /// Starts a cache actor with its own Redis connection on the current thread (an HTTP
    /// worker's): the worker's hot-path round trips then never leave its thread. It counts
    /// its calls into `calls` (the coordinator's counter) and listens to no events.
    pub fn start_here(
        config: RedisConfig,
        probe_interval: Duration,
        enabled: bool,
        calls: Arc<std::sync::atomic::AtomicU64>,
    ) -> CacheHandle {
        let keys = KeySpace::new(&config.key_prefix);
        let mut actor = CacheActor::new(config, probe_interval, enabled);
        actor.listens = false;
        CacheHandle {
            addr: actor.start(),
            keys,
            calls,
        }
    }

    fn manager_config(&self) -> ConnectionManagerConfig {
        // The crate's defaults retry for ~9 s per call while Redis is down; fail in well
        // under a second instead and let the probe find Redis again.
        let connect = self.config.timeout.max(Duration::from_millis(300));
        // Every call is bounded by its own time-out (`Exec`); the connection's only has to
        // let the longest single command through, a counting round trip.
        let response = connect.max(super::cache_ops::BACKGROUND_TIMEOUT);
        ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200))
            .set_connection_timeout(Some(connect))
            .set_response_timeout(Some(response))
    }

    fn probe(&mut self, ctx: &mut Context<Self>) {
        if self.probing {
            return;
        }
        self.probing = true;
        let timeout = self.config.timeout.max(Duration::from_millis(300));
        let existing = self.conn.clone();
        let config = self.config.clone();
        let manager_config = self.manager_config();
        let work = async move {
            let mut conn = match existing {
                Some(c) => c,
                None => RedisConn::connect(&config, manager_config, timeout)
                    .await
                    .map_err(|e| describe(&e))?,
            };
            let started_ping = Instant::now();
            let pong: Result<String, String> = match tokio::time::timeout(
                timeout,
                redis::cmd("PING").query_async::<String>(&mut conn),
            )
            .await
            {
                Ok(Ok(p)) => Ok(p),
                Ok(Err(e)) => Err(describe(&e)),
                Err(_) => Err(PING_TIMED_OUT.to_string()),
            };
            pong.map(|_| (conn, started_ping.elapsed()))
        };
        ctx.spawn(work.into_actor(self).map(|result, act, ctx| {
            act.probing = false;
            match result {
                Ok((conn, latency)) => {
                    act.conn = Some(conn);
                    if act.listens {
                        act.listen(ctx);
                    }
                    act.circuit.success();
                    act.reporter.report(
                        Backend::Redis,
                        BackendState {
                            up: true,
                            latency: Some(round_latency(latency)),
                            last_error: None,
                        },
                    );
                }
                Err(error) => {
                    if act.circuit.probe_failed(&error) {
                        act.drop_stale_connection();
                        act.reporter
                            .report(Backend::Redis, BackendState::down(error));
                    }
                }
            }
        }));
    }

    /// After an outage a Sentinel connection may point at a server that is no longer
    /// master: forget it so the next probe asks the sentinels again.
    fn drop_stale_connection(&mut self) {
        if self
            .conn
            .as_ref()
            .is_some_and(RedisConn::reconnects_after_outage)
        {
            self.conn = None;
        }
    }

    fn call_failed(&mut self, error: &CacheError) {
        if error.is_outage() {
            self.drop_stale_connection();
        }
        if error.is_outage() && self.circuit.failure() {
            self.reporter
                .report(Backend::Redis, BackendState::down(error.to_string()));
        }
    }
}

/// Probe latency rounded to 0.1 ms so tiny jitter does not flood subscribers with changes.
fn round_latency(d: Duration) -> Duration {
    Duration::from_micros(
        u64::try_from(d.as_micros())
            .unwrap_or(u64::MAX)
            .div_ceil(100)
            * 100,
    )
}

/// A Redis error as text without the URL (which may hold the password).
fn describe(e: &redis::RedisError) -> String {
    if e.is_connection_refusal() {
        "connection refused".into()
    } else if e.is_timeout() {
        "timed out".into()
    } else if e.is_io_error() || e.is_connection_dropped() {
        "connection lost".into()
    } else {
        format!("{:?}", e.kind())
    }
}

impl Actor for CacheActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if !self.enabled {
            return;
        }
        self.probe(ctx);
        ctx.run_interval(self.probe_interval, |act, ctx| act.probe(ctx));
    }
}

impl<T: Send + 'static> Handler<Exec<T>> for CacheActor {
    type Result = ResponseActFuture<Self, Result<T, CacheError>>;

    fn handle(&mut self, msg: Exec<T>, _ctx: &mut Self::Context) -> Self::Result {
        let conn = match &self.conn {
            Some(c) if self.circuit.allows() => c.clone(),
            _ => return Box::pin(fut::ready(Err(CacheError::Unavailable))),
        };
        // A call's own time-out only ever lengthens the configured one.
        let timeout = msg
            .timeout
            .map_or(self.config.timeout, |t| t.max(self.config.timeout));
        let work = async move {
            match tokio::time::timeout(timeout, (msg.job)(conn)).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(CacheError::from(e)),
                Err(_) => Err(CacheError::Timeout),
            }
        };
        Box::pin(work.into_actor(self).map(|result, act, _ctx| {
            match &result {
                Ok(_) => {
                    act.circuit.success();
                }
                Err(e) => act.call_failed(e),
            }
            result
        }))
    }
}

impl Handler<GetConnection> for CacheActor {
    type Result = Option<RedisConn>;

    fn handle(&mut self, _: GetConnection, _ctx: &mut Self::Context) -> Self::Result {
        self.conn.clone().filter(|_| self.circuit.allows())
    }
}

impl Handler<CacheEvent> for CacheActor {
    type Result = ();

    fn handle(&mut self, msg: CacheEvent, _ctx: &mut Self::Context) {
        self.event_subscribers.retain(|s| s.connected());
        for s in &self.event_subscribers {
            s.do_send(msg.clone());
        }
    }
}

impl Handler<SubscribeEvents> for CacheActor {
    type Result = ();

    fn handle(&mut self, msg: SubscribeEvents, _ctx: &mut Self::Context) {
        self.event_subscribers.push(msg.subscriber);
    }
}

impl Handler<Subscribe> for CacheActor {
    type Result = ();

    fn handle(&mut self, msg: Subscribe, _ctx: &mut Self::Context) {
        self.reporter.subscribe(Backend::Redis, msg.subscriber);
    }
}

/// Cloneable access to the cache actor; the typed operations are in `cache_ops.rs`.
#[derive(Clone)]
pub struct CacheHandle {
    pub(crate) addr: Addr<CacheActor>,
    pub(crate) keys: KeySpace,
    /// Calls sent to Redis (each one round trip), for /metrics and benchmarks.
    pub(crate) calls: Arc<std::sync::atomic::AtomicU64>,
}

impl CacheHandle {
    /// Runs one job with the default call time-out.
    pub async fn exec<T, F>(&self, job: F) -> Result<T, CacheError>
    where
        T: Send + 'static,
        F: FnOnce(RedisConn) -> BoxFuture<'static, redis::RedisResult<T>> + Send + 'static,
    {
        self.exec_with_timeout(None, job).await
    }

    /// Runs one job with an explicit time-out (bulk work).
    pub async fn exec_with_timeout<T, F>(
        &self,
        timeout: Option<Duration>,
        job: F,
    ) -> Result<T, CacheError>
    where
        T: Send + 'static,
        F: FnOnce(RedisConn) -> BoxFuture<'static, redis::RedisResult<T>> + Send + 'static,
    {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.addr
            .send(Exec {
                job: Box::new(job),
                timeout,
            })
            .await
            .unwrap_or(Err(CacheError::Unavailable))
    }

    /// Subscribes `subscriber` to Redis state changes.
    pub fn subscribe(&self, subscriber: Recipient<super::state::BackendStateChanged>) {
        self.addr.do_send(Subscribe { subscriber });
    }

    /// Forwards events published by other instances to `subscriber`.
    pub fn subscribe_events(&self, subscriber: Recipient<CacheEvent>) {
        self.addr.do_send(SubscribeEvents { subscriber });
    }

    /// Redis calls made through this handle's actor since start.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// The key builders of this deployment (prefix included).
    pub fn keys(&self) -> &KeySpace {
        &self.keys
    }
}
