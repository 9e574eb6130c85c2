//! Builds a running relay from a `Config`: the three actors and the HTTP server.
//! Used by `serve` and by the tests (port 0).

use std::net::TcpListener;
use std::sync::Arc;

use actix::Arbiter;
use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};

use crate::actors::cache::{CacheActor, CacheHandle};
use crate::actors::persistence::{PersistenceActor, PersistenceHandle};
use crate::actors::router::{RouterActor, RouterHandle};
use crate::config::{Config, StorageMode};
use crate::domain::crypto::CredentialCipher;
use crate::domain::pricing::PriceTable;
use crate::http::metrics::Metrics;
use crate::http::{self, AppState};
use crate::ledger::journal::JournalMode;
use crate::ledger::{Journal, JournalError};
use crate::relay::pipeline::RelayShared;
use crate::relay::queue::ConcurrencyQueue;
use crate::relay::upstream::UpstreamClients;
use secrecy::ExposeSecret;

/// The storage actors and the router of one process.
#[derive(Clone)]
pub struct Actors {
    pub cache: CacheHandle,
    pub store: PersistenceHandle,
    pub router: RouterHandle,
}

impl Actors {
    /// Starts the actors (inside a running actix System). `auto_migrate` lets the
    /// persistence actor create the database and migrate when it first reaches MySQL.
    pub fn start(config: &Config, auto_migrate: bool) -> std::io::Result<Actors> {
        // The router and the cache actor share one thread: the hot path's router → cache
        // messages then cost no thread switch.
        let hot = Arbiter::new();
        let cache = CacheActor::spawn_on(
            &hot.handle(),
            config.redis.clone(),
            config.probe_interval,
            config.mode.uses_redis(),
        );
        let store = PersistenceActor::spawn(
            config.mysql.clone(),
            config.probe_interval,
            auto_migrate,
            config.mode.uses_mysql(),
        )?;
        let journal = Arc::new(open_journal(config, auto_migrate)?);
        let router = RouterActor::spawn_on(
            &hot.handle(),
            config.clone(),
            cache.clone(),
            store.clone(),
            journal,
        );
        Ok(Actors {
            cache,
            store,
            router,
        })
    }
}

/// Opens the instance's usage journal. A command run beside a serving relay (`diagnose`,
/// `rebuild-cache`, …: `serving` false) finds the directory locked and gets a private one:
/// such commands journal nothing of their own.
fn open_journal(config: &Config, serving: bool) -> std::io::Result<Journal> {
    let mode = match config.mode {
        StorageMode::Hybrid => JournalMode::Both,
        StorageMode::Redis => JournalMode::Counters,
        StorageMode::Mysql => JournalMode::Archive,
    };
    let open = |dir: &std::path::Path| {
        Journal::open(dir, config.journal_fsync, config.journal_max_bytes, mode)
    };
    match open(&config.journal_dir) {
        Ok(j) => Ok(j),
        Err(JournalError::Locked(dir)) if !serving => {
            let private = std::env::temp_dir().join(format!(
                "claude-relay-journal-{}",
                uuid::Uuid::new_v4().simple()
            ));
            log::info!(
                "usage journal {} is in use by a running relay; this command uses {}",
                dir.display(),
                private.display()
            );
            open(&private).map_err(std::io::Error::other)
        }
        Err(e) => Err(std::io::Error::other(format!(
            "USAGE_JOURNAL_DIR {}: {e}",
            config.journal_dir.display()
        ))),
    }
}

/// How often backend statistics are sampled for /metrics.
const SAMPLE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Samples backend statistics in the background, so scrapes never wait on a backend.
fn spawn_sampler(router: RouterHandle, metrics: Arc<Metrics>) {
    actix::spawn(async move {
        loop {
            let sample = router.sample_backends().await;
            if let Ok(mut s) = metrics.sample.lock() {
                *s = sample;
            }
            tokio::time::sleep(SAMPLE_INTERVAL).await;
        }
    });
}

/// How long a starting relay waits for the first probe of each backend before it serves
/// anyway (a frozen backend must not keep it from starting; its probe times out sooner).
pub const FIRST_PROBE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A relay bound to its port, ready to run.
pub struct Application {
    port: u16,
    server: Server,
    actors: Actors,
}

impl Application {
    /// `build`, then waits (at most `FIRST_PROBE_WAIT`) until every backend the mode uses
    /// was probed once, so the first answers report the backends' real state instead of
    /// "not reachable" for one never tried. The port is bound already; connections made
    /// meanwhile wait in the listen backlog and are answered once the server runs.
    pub async fn start(config: Config) -> std::io::Result<Application> {
        let app = Application::build(config)?;
        if !app.actors.router.first_probes(FIRST_PROBE_WAIT).await {
            log::warn!(
                "a backend has not answered its first probe within {FIRST_PROBE_WAIT:?}; \
                 serving anyway (/health/ready stays 503 until it does)"
            );
        } else if !app.actors.router.counters_ready(FIRST_PROBE_WAIT).await {
            log::warn!(
                "the usage counters in redis are not ready within {FIRST_PROBE_WAIT:?}; \
                 serving anyway with per-instance limits (/health says degraded until they are)"
            );
        }
        Ok(app)
    }

    /// Starts the actors and binds the HTTP server (inside a running actix System); the
    /// server accepts connections once it runs. Prefer `start`.
    pub fn build(config: Config) -> std::io::Result<Application> {
        let listener = TcpListener::bind(config.bind_address())?;
        let port = listener.local_addr()?.port();
        let actors = Actors::start(&config, true)?;
        let config_arc = Arc::new(config.clone());
        let state = AppState {
            router: actors.router.clone(),
            config: config_arc.clone(),
            login_limiter: Default::default(),
        };
        let metrics =
            Metrics::new().map_err(|e| std::io::Error::other(format!("metrics registry: {e}")))?;
        spawn_sampler(actors.router.clone(), metrics.clone());
        let prices = PriceTable::bundled()
            .map_err(|e| std::io::Error::other(format!("price table: {e}")))?;
        let encryption_key = config.encryption_key.expose_secret().to_string();
        let relay = RelayShared {
            router: actors.router.clone(),
            config: config_arc,
            prices: Arc::new(prices),
            cipher: CredentialCipher::new(&encryption_key)
                .map_err(|e| std::io::Error::other(format!("ENCRYPTION_KEY: {e}")))?,
            encryption_key: encryption_key.into(),
            last_used: Arc::default(),
            opened: Arc::default(),
            worker_metrics: metrics.for_worker(),
            metrics: metrics.clone(),
            queue: Arc::new(ConcurrencyQueue::new(
                config.concurrency_queue_wait,
                config.concurrency_queue_max,
            )),
        };
        let (redis_config, probe_interval) = (config.redis.clone(), config.probe_interval);
        let redis_used = config.mode.uses_redis();
        let redis_calls = actors.cache.calls.clone();
        let metrics_data = web::Data::new(metrics);
        let body_limit = config.max_request_body_bytes;
        let upstream_timeout = config.request_timeout;
        let workers = config.http_worker_count();
        let upstream_tls = crate::relay::upstream::tls_config()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let server = HttpServer::new(move || {
            // Runs once on each worker's thread: the worker's own cache actor (and Redis
            // connection) lives there, so its requests' round trips never leave the thread.
            let worker_cache = CacheActor::start_here(
                redis_config.clone(),
                probe_interval,
                redis_used,
                redis_calls.clone(),
            );
            let relay = web::Data::new(RelayShared {
                router: relay.router.for_worker(worker_cache),
                // Copies of their own (both never change): every request clones these
                // handles, and a count both workers write would move between their cores.
                config: Arc::new(Config::clone(&relay.config)),
                prices: Arc::new(PriceTable::clone(&relay.prices)),
                // Written on every request: each worker keeps its own (the account times
                // are read across all of them; the opened credentials are opened per worker).
                last_used: Arc::new(relay.last_used.for_worker()),
                worker_metrics: relay.metrics.for_worker(),
                opened: Arc::default(),
                ..relay.clone()
            });
            App::new()
                .app_data(web::Data::new(state.clone()))
                .app_data(relay)
                .app_data(metrics_data.clone())
                // One set of upstream clients per worker: their connections live on it.
                .app_data(web::Data::new(UpstreamClients::new(
                    upstream_timeout,
                    &upstream_tls,
                )))
                .app_data(web::PayloadConfig::new(body_limit))
                .app_data(web::JsonConfig::default().limit(body_limit))
                .wrap(http::Edge::new(metrics_data.get_ref().clone()))
                .configure(http::routes)
        })
        // Nagle off on client sockets: SSE events and small answers otherwise wait for the
        // client's delayed ACK (~40 ms).
        .on_connect(|conn, _ext| {
            if let Some(socket) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
                // Best effort: a socket without it still works, only slower.
                socket.set_nodelay(true).ok();
            }
        })
        .workers(workers)
        .listen(listener)?
        .run();
        Ok(Application {
            port,
            server,
            actors,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn actors(&self) -> &Actors {
        &self.actors
    }

    /// Serves until the server is stopped (signal or handle).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }

    /// The server future and its handle, for tests that run it in the background.
    pub fn into_server(self) -> Server {
        self.server
    }
}
