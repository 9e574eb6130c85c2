//! `RouterActor`: receives the requests of the HTTP layer and the CLI, decides per message
//! and per storage mode which backend answers, and applies the fallbacks of SPEC §1 from the
//! `BackendState` the storage actors report. HTTP code talks to it through `RouterHandle`.
//! The data classes live in the files beside this one, one `impl` block each.

mod admin;

use std::time::{Duration, Instant};

use actix::prelude::*;

pub use admin::EnsureAdmin;

use super::cache::CacheHandle;
use super::persistence::PersistenceHandle;
use super::state::{Backend, BackendState, BackendStateChanged};
use crate::config::{Config, StorageMode};

/// Overall health as `/health` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Healthy,
    Degraded,
    Unhealthy,
}

/// One backend as `/health` reports it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackendView {
    pub connected: bool,
    pub latency: Option<String>,
    /// False when the mode does not use this backend.
    pub used: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The router's view of the deployment, for `/health`.
#[derive(Debug, Clone)]
pub struct HealthReport {
    pub status: HealthStatus,
    pub mode: StorageMode,
    pub redis: BackendView,
    pub mysql: BackendView,
    pub uptime: Duration,
}

/// Asks for the current health; answered from memory, never waits on a backend.
#[derive(Message)]
#[rtype(result = "HealthReport")]
pub struct GetHealth;

pub struct RouterActor {
    config: Config,
    cache: CacheHandle,
    store: PersistenceHandle,
    redis: BackendState,
    mysql: BackendState,
    started_at: Instant,
}

impl RouterActor {
    pub fn new(config: Config, cache: CacheHandle, store: PersistenceHandle) -> Self {
        RouterActor {
            config,
            cache,
            store,
            redis: BackendState::down("not connected yet"),
            mysql: BackendState::down("not connected yet"),
            started_at: Instant::now(),
        }
    }

    /// Starts the router on its own thread and returns its handle.
    pub fn spawn(config: Config, cache: CacheHandle, store: PersistenceHandle) -> RouterHandle {
        let arbiter = Arbiter::new();
        let addr = RouterActor::start_in_arbiter(&arbiter.handle(), move |_| {
            RouterActor::new(config, cache, store)
        });
        RouterHandle { addr }
    }

    fn redis_up(&self) -> bool {
        self.config.mode.uses_redis() && self.redis.up
    }

    fn mysql_up(&self) -> bool {
        self.config.mode.uses_mysql() && self.mysql.up
    }

    fn health(&self) -> HealthReport {
        let mode = self.config.mode;
        let status = match mode {
            StorageMode::Hybrid => match (self.redis.up, self.mysql.up) {
                (true, true) => HealthStatus::Healthy,
                (false, false) => HealthStatus::Unhealthy,
                _ => HealthStatus::Degraded,
            },
            StorageMode::Redis if self.redis.up => HealthStatus::Healthy,
            StorageMode::Mysql if self.mysql.up => HealthStatus::Healthy,
            _ => HealthStatus::Unhealthy,
        };
        HealthReport {
            status,
            mode,
            redis: view(&self.redis, mode.uses_redis()),
            mysql: view(&self.mysql, mode.uses_mysql()),
            uptime: self.started_at.elapsed(),
        }
    }
}

fn view(state: &BackendState, used: bool) -> BackendView {
    BackendView {
        connected: used && state.up,
        latency: state
            .latency
            .filter(|_| used && state.up)
            .map(|d| format_latency(d)),
        used,
        error: if used && !state.up {
            state.last_error.clone()
        } else {
            None
        },
    }
}

/// "2ms" for whole milliseconds, "0.4ms" below 10 ms.
fn format_latency(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{:.1}ms", ms)
    } else {
        format!("{}ms", ms.round() as u64)
    }
}

impl Actor for RouterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let me = ctx.address().recipient::<BackendStateChanged>();
        if self.config.mode.uses_redis() {
            self.cache.subscribe(me.clone());
        }
        if self.config.mode.uses_mysql() {
            self.store.subscribe(me);
        }
    }
}

impl Handler<BackendStateChanged> for RouterActor {
    type Result = ();

    fn handle(&mut self, msg: BackendStateChanged, _ctx: &mut Self::Context) {
        match msg.backend {
            Backend::Redis => self.redis = msg.state,
            Backend::Mysql => self.mysql = msg.state,
        }
    }
}

impl Handler<GetHealth> for RouterActor {
    type Result = MessageResult<GetHealth>;

    fn handle(&mut self, _: GetHealth, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.health())
    }
}

/// Cloneable access to the router for HTTP handlers and commands.
#[derive(Clone)]
pub struct RouterHandle {
    pub(crate) addr: Addr<RouterActor>,
}

impl RouterHandle {
    /// The current health, or `None` when the router did not answer within `limit`.
    pub async fn health(&self, limit: Duration) -> Option<HealthReport> {
        tokio::time::timeout(limit, self.addr.send(GetHealth))
            .await
            .ok()?
            .ok()
    }
}
