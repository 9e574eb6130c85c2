//! `/metrics` (Prometheus text) and the middleware that counts and times every request,
//! logs one access line with a request id, and returns that id in a `request-id` header.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use prometheus::local::{LocalHistogram, LocalIntCounter};
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use super::AppState;
use crate::actors::router::BackendSample;

/// Latency buckets (seconds) from 100 µs to 10 min.
const BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
    60.0, 600.0,
];

/// Every metric of one relay process (one registry per process, no globals).
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    pub relay_overhead: Histogram,
    pub upstream_latency: Histogram,
    key_cache: IntGaugeVec,
    backend_calls: IntGaugeVec,
    cached_item_reads: IntGaugeVec,
    pool: IntGaugeVec,
    backend_up: IntGaugeVec,
    backend_latency: GaugeVec,
    usage_events: IntGaugeVec,
    journal_backlog_events: IntGauge,
    journal_backlog_bytes: IntGauge,
    journal_oldest_seconds: Gauge,
    journal_uncounted: IntGauge,
    ledger_rebuilds: IntGaugeVec,
    replica_readable: IntGaugeVec,
    replica_lag: IntGaugeVec,
    queue_waiting: IntGauge,
    redis_memory: IntGauge,
    redis_clients: IntGauge,
    mysql_threads: IntGauge,
    mysql_slow_queries: IntGauge,
    mysql_row_lock_waits: IntGauge,
    uptime: Gauge,
    started: Instant,
    pub sample: Mutex<BackendSample>,
    /// Every worker's share of the request metrics, added to the shared ones when read.
    workers: Mutex<Vec<Arc<WorkerMetrics>>>,
}

/// Registers a freshly defined metric (an invalid definition or a repeated name fails).
fn register<T: prometheus::core::Collector + Clone + 'static>(
    r: &Registry,
    c: prometheus::Result<T>,
) -> prometheus::Result<T> {
    let c = c?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    /// Every metric of the relay, registered; fails only on an invalid definition.
    pub fn new() -> prometheus::Result<Arc<Metrics>> {
        let r = Registry::new_custom(Some("claude_relay".into()), None)?;
        let hist =
            |name: &str, help: &str| HistogramOpts::new(name, help).buckets(BUCKETS.to_vec());
        Ok(Arc::new(Metrics {
            requests: register(
                &r,
                IntCounterVec::new(
                    Opts::new("http_requests_total", "HTTP requests by route and status"),
                    &["route", "status"],
                ),
            )?,
            latency: register(
                &r,
                HistogramVec::new(
                    hist(
                        "http_request_duration_seconds",
                        "time to response headers by route",
                    ),
                    &["route"],
                ),
            )?,
            relay_overhead: register(
                &r,
                Histogram::with_opts(hist(
                    "relay_overhead_seconds",
                    "time the relay adds: total to response headers minus the upstream's time",
                )),
            )?,
            upstream_latency: register(
                &r,
                Histogram::with_opts(hist(
                    "upstream_duration_seconds",
                    "upstream time to response headers",
                )),
            )?,
            key_cache: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "key_cache_lookups",
                        "in-process key cache lookups by result",
                    ),
                    &["result"],
                ),
            )?,
            backend_calls: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "backend_calls",
                        "calls (round trips) to each backend since start",
                    ),
                    &["backend"],
                ),
            )?,
            cached_item_reads: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "cached_item_reads",
                        "reads from storage of what the relay caches in process, since start",
                    ),
                    &["item"],
                ),
            )?,
            pool: register(
                &r,
                IntGaugeVec::new(
                    Opts::new("mysql_pool_connections", "MySQL pool connections by state"),
                    &["state"],
                ),
            )?,
            backend_up: register(
                &r,
                IntGaugeVec::new(
                    Opts::new("backend_up", "1 when the backend is reachable"),
                    &["backend"],
                ),
            )?,
            backend_latency: register(
                &r,
                GaugeVec::new(
                    Opts::new("backend_probe_latency_seconds", "last probe round trip"),
                    &["backend"],
                ),
            )?,
            usage_events: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "usage_events",
                        "usage events since start by outcome (dropped must stay 0)",
                    ),
                    &["outcome"],
                ),
            )?,
            journal_backlog_events: register(
                &r,
                IntGauge::new(
                    "usage_journal_unarchived_events",
                    "usage events in the local journal not archived yet",
                ),
            )?,
            journal_backlog_bytes: register(
                &r,
                IntGauge::new(
                    "usage_journal_unarchived_bytes",
                    "bytes of the usage events not archived yet",
                ),
            )?,
            journal_oldest_seconds: register(
                &r,
                Gauge::new(
                    "usage_journal_oldest_unarchived_seconds",
                    "age of the oldest usage event not archived yet",
                ),
            )?,
            queue_waiting: register(
                &r,
                IntGauge::new(
                    "concurrency_queue_waiting",
                    "requests over their key's concurrency limit waiting for a slot",
                ),
            )?,
            replica_readable: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "mysql_replica_readable",
                        "1 when reports and listings are read from this replica",
                    ),
                    &["replica"],
                ),
            )?,
            replica_lag: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "mysql_replica_lag_seconds",
                        "seconds behind the primary at the last probe (-1: not reached)",
                    ),
                    &["replica"],
                ),
            )?,
            ledger_rebuilds: register(
                &r,
                IntGaugeVec::new(
                    Opts::new(
                        "usage_counter_rebuilds",
                        "limit counter losses this instance caught up with (caught_up) and \
                         rebuilt from the archive itself (rebuilt)",
                    ),
                    &["by"],
                ),
            )?,
            journal_uncounted: register(
                &r,
                IntGauge::new(
                    "usage_journal_uncounted_events",
                    "usage events whose counters are not in Redis yet (replayed when it is back)",
                ),
            )?,
            redis_memory: register(
                &r,
                IntGauge::new("redis_used_memory_bytes", "Redis used_memory"),
            )?,
            redis_clients: register(
                &r,
                IntGauge::new("redis_connected_clients", "Redis connected_clients"),
            )?,
            mysql_threads: register(
                &r,
                IntGauge::new("mysql_threads_connected", "MySQL Threads_connected"),
            )?,
            mysql_slow_queries: register(
                &r,
                IntGauge::new("mysql_slow_queries", "MySQL Slow_queries"),
            )?,
            mysql_row_lock_waits: register(
                &r,
                IntGauge::new("mysql_row_lock_waits", "MySQL Innodb_row_lock_waits"),
            )?,
            uptime: register(&r, Gauge::new("uptime_seconds", "seconds since start"))?,
            started: Instant::now(),
            sample: Mutex::new(BackendSample::default()),
            workers: Mutex::default(),
            registry: r,
        }))
    }

    /// A share of the request metrics for one worker, summed into these ones.
    pub fn for_worker(&self) -> Arc<WorkerMetrics> {
        let worker = Arc::new(WorkerMetrics {
            local: Mutex::new(LocalMetrics {
                relay_overhead: self.relay_overhead.local(),
                upstream_latency: self.upstream_latency.local(),
                routes: HashMap::default(),
                unflushed: 0,
            }),
        });
        if let Ok(mut workers) = self.workers.lock() {
            workers.push(worker.clone());
        }
        worker
    }

    /// Adds what every worker observed since its last flush to the shared metrics.
    fn flush_workers(&self) {
        let workers = self.workers.lock().map(|w| w.clone()).unwrap_or_default();
        for worker in workers {
            if let Ok(mut local) = worker.local.lock() {
                local.flush();
            }
        }
    }

    /// The request count and latency of `route` answered with `status`.
    fn route_metrics(&self, route: &str, status: StatusCode) -> RouteMetrics {
        RouteMetrics {
            requests: self
                .requests
                .with_label_values(&[route, status.as_str()])
                .local(),
            latency: self.latency.with_label_values(&[route]).local(),
        }
    }
}

/// Observations a worker sums before it adds them to the shared metrics (reading
/// `/metrics` adds them at once).
const FLUSH_EVERY: u32 = 64;

/// Most paths a worker keeps the metrics of (paths with ids in them are many; the rest are
/// looked up each time).
const KEPT_PATHS: usize = 256;

/// One worker's share of the per-request metrics, summed here and added to the shared
/// metrics every [`FLUSH_EVERY`] observations and whenever `/metrics` is read. Each
/// observation of a shared histogram wrote four atomics that every worker writes, so their
/// cache lines moved between the cores on every request. Aligned so that two workers'
/// never share a line.
#[repr(align(128))]
pub struct WorkerMetrics {
    local: Mutex<LocalMetrics>,
}

struct LocalMetrics {
    relay_overhead: LocalHistogram,
    upstream_latency: LocalHistogram,
    /// By path and status, found once: the route of a path is always the same.
    routes: HashMap<String, Vec<(StatusCode, RouteMetrics)>>,
    unflushed: u32,
}

/// The metrics of one route and status.
struct RouteMetrics {
    requests: LocalIntCounter,
    latency: LocalHistogram,
}

impl RouteMetrics {
    fn observe(&self, elapsed: Duration) {
        self.requests.inc();
        self.latency.observe(elapsed.as_secs_f64());
    }

    fn flush(&self) {
        self.requests.flush();
        self.latency.flush();
    }
}

impl LocalMetrics {
    fn flush(&mut self) {
        self.relay_overhead.flush();
        self.upstream_latency.flush();
        for route in self.routes.values().flatten() {
            route.1.flush();
        }
        self.unflushed = 0;
    }

    fn observed(&mut self) {
        self.unflushed += 1;
        if self.unflushed >= FLUSH_EVERY {
            self.flush();
        }
    }
}

impl WorkerMetrics {
    /// Times of a relayed request: what the relay added, and the upstream's.
    pub fn observe_relay(&self, overhead: Duration, upstream: Duration) {
        if let Ok(mut local) = self.local.lock() {
            local.upstream_latency.observe(upstream.as_secs_f64());
            local.relay_overhead.observe(overhead.as_secs_f64());
            local.observed();
        }
    }

    /// Counts and times a finished request by its route and status.
    pub fn observe_request(
        &self,
        metrics: &Metrics,
        req: &actix_web::HttpRequest,
        status: StatusCode,
        took: Duration,
    ) {
        let Ok(mut local) = self.local.lock() else {
            return;
        };
        let path = req.path();
        if let Some(kept) = local
            .routes
            .get(path)
            .and_then(|by_status| by_status.iter().find(|(s, _)| *s == status))
        {
            kept.1.observe(took);
            local.observed();
            return;
        }
        let route = req.match_pattern();
        let found = metrics.route_metrics(route.as_deref().unwrap_or("unmatched"), status);
        found.observe(took);
        if let Some(by_status) = local.routes.get_mut(path) {
            by_status.push((status, found));
        } else if local.routes.len() < KEPT_PATHS {
            local.routes.insert(path.to_string(), vec![(status, found)]);
        } else {
            // Not kept: added at once.
            found.flush();
        }
        local.observed();
    }
}

/// The relay's id of one request: in the access log, the answer's `request-id` header and
/// the usage row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

impl RequestId {
    /// A fresh id: time-ordered (UUID v7, 74 random bits), so the archive's unique index on
    /// request ids grows at its end instead of at random pages.
    pub fn new() -> Self {
        Self::of_uuid(uuid::Uuid::now_v7())
    }

    /// [`new`](Self::new) with the ordering of `context`, one per worker: `now_v7` takes a
    /// process-wide lock (its counter), which every worker wrote for every request. Ids
    /// from one worker keep their order; all are ordered by the millisecond.
    pub fn new_in(context: &uuid::ContextV7) -> Self {
        Self::of_uuid(uuid::Uuid::new_v7(uuid::Timestamp::now(context)))
    }

    fn of_uuid(id: uuid::Uuid) -> Self {
        let mut hex = [0u8; uuid::fmt::Simple::LENGTH];
        let hex = id.simple().encode_lower(&mut hex);
        // Joined, not formatted: made for every request.
        RequestId(["req_", hex].concat())
    }

    /// The id the middleware gave this request (a fresh one outside the middleware).
    pub fn of(req: &actix_web::HttpRequest) -> Self {
        use actix_web::HttpMessage;
        req.extensions()
            .get::<RequestId>()
            .cloned()
            .unwrap_or_default()
    }
}

impl Default for RequestId {
    fn default() -> Self {
        Self::new()
    }
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/metrics", web::get().to(metrics));
}

async fn metrics(
    state: web::Data<AppState>,
    metrics: web::Data<Arc<Metrics>>,
    relay: web::Data<crate::relay::pipeline::RelayShared>,
) -> HttpResponse {
    let m = metrics.get_ref();
    m.queue_waiting
        .set(i64::try_from(relay.queue.waiting_total()).unwrap_or(i64::MAX));
    let router = &state.router;
    if let Some(h) = router.health(Duration::from_millis(500)).await {
        for (name, view) in [("redis", &h.redis), ("mysql", &h.mysql)] {
            if !view.used {
                continue;
            }
            m.backend_up
                .with_label_values(&[name])
                .set(i64::from(view.connected));
            let seconds = view
                .latency
                .as_deref()
                .and_then(|l| l.trim_end_matches("ms").parse::<f64>().ok())
                .map_or(0.0, |ms| ms / 1000.0);
            m.backend_latency.with_label_values(&[name]).set(seconds);
        }
    }
    let cache = router.cache_stats().await;
    m.key_cache
        .with_label_values(&["hit"])
        .set(gauge(cache.key_cache_hits));
    m.key_cache
        .with_label_values(&["miss"])
        .set(gauge(cache.key_cache_misses));
    m.backend_calls
        .with_label_values(&["redis"])
        .set(gauge(cache.redis_calls));
    m.backend_calls
        .with_label_values(&["mysql"])
        .set(gauge(cache.mysql_calls));
    m.cached_item_reads
        .with_label_values(&["account_list"])
        .set(gauge(cache.account_list_reads));
    m.cached_item_reads
        .with_label_values(&["key"])
        .set(gauge(cache.key_reads));
    let usage = router.usage_stats().await;
    m.usage_events
        .with_label_values(&["recorded"])
        .set(gauge(usage.recorded));
    m.usage_events
        .with_label_values(&["written"])
        .set(gauge(usage.archived));
    m.usage_events
        .with_label_values(&["queued"])
        .set(gauge(usage.journal.unarchived_records));
    m.usage_events
        .with_label_values(&["dropped"])
        .set(gauge(usage.dropped));
    m.usage_events
        .with_label_values(&["rejected"])
        .set(gauge(usage.rejected));
    m.usage_events
        .with_label_values(&["replayed"])
        .set(gauge(usage.replayed));
    m.usage_events
        .with_label_values(&["left_to_replay"])
        .set(gauge(usage.left_to_replay));
    m.usage_events
        .with_label_values(&["journal_write_failed"])
        .set(gauge(usage.journal.append_failures));
    m.usage_events
        .with_label_values(&["journal_corrupt"])
        .set(gauge(usage.journal.corrupt_records));
    m.journal_backlog_events
        .set(gauge(usage.journal.unarchived_records));
    m.journal_backlog_bytes
        .set(gauge(usage.journal.unarchived_bytes));
    m.journal_oldest_seconds
        .set(usage.journal.oldest_unarchived_secs);
    m.journal_uncounted
        .set(gauge(usage.journal.uncounted_records));
    m.ledger_rebuilds
        .with_label_values(&["caught_up"])
        .set(gauge(usage.rebuilds));
    m.ledger_rebuilds
        .with_label_values(&["rebuilt"])
        .set(gauge(usage.rebuilt_here));
    let pool = router.pool_status().await;
    m.pool
        .with_label_values(&["in_use"])
        .set(gauge(pool.in_use));
    m.pool
        .with_label_values(&["idle"])
        .set(gauge(pool.available));
    m.pool.with_label_values(&["max"]).set(gauge(pool.max_size));
    for replica in &pool.replicas {
        m.replica_readable
            .with_label_values(&[replica.host.as_str()])
            .set(i64::from(replica.readable));
        m.replica_lag
            .with_label_values(&[replica.host.as_str()])
            .set(
                replica
                    .lag_seconds
                    .map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX)),
            );
    }
    let sample = m.sample.lock().map(|s| s.clone()).unwrap_or_default();
    let set = |g: &IntGauge, v: Option<i64>| g.set(v.unwrap_or(-1));
    set(&m.redis_memory, sample.redis_used_memory_bytes);
    set(&m.redis_clients, sample.redis_connected_clients);
    set(&m.mysql_threads, sample.mysql_threads_connected);
    set(&m.mysql_slow_queries, sample.mysql_slow_queries);
    set(&m.mysql_row_lock_waits, sample.mysql_row_lock_waits);
    m.uptime.set(m.started.elapsed().as_secs_f64());
    m.flush_workers();
    let mut out = Vec::new();
    if TextEncoder::new()
        .encode(&m.registry.gather(), &mut out)
        .is_err()
    {
        return HttpResponse::InternalServerError().finish();
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(out)
}

/// A count as a gauge value (saturating: counts never come near i64::MAX).
fn gauge<N: TryInto<i64>>(n: N) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use actix_web::http::StatusCode;
    use actix_web::test::TestRequest;

    use super::{FLUSH_EVERY, KEPT_PATHS, Metrics, RequestId};

    #[test]
    fn a_workers_share_reaches_the_shared_metrics_when_read_or_every_flush_every_observations() {
        let metrics = Metrics::new().unwrap();
        let (one, two) = (metrics.for_worker(), metrics.for_worker());
        let ms = Duration::from_millis(1);
        for _ in 0..3 {
            one.observe_relay(ms, 2 * ms);
        }
        two.observe_relay(ms, 2 * ms);
        let req = TestRequest::with_uri("/v1/none").to_http_request();
        for status in [StatusCode::OK, StatusCode::OK, StatusCode::NOT_FOUND] {
            one.observe_request(&metrics, &req, status, ms);
        }
        let requests = |status: &str| {
            metrics
                .requests
                .with_label_values(&["unmatched", status])
                .get()
        };
        assert_eq!(
            metrics.relay_overhead.get_sample_count(),
            0,
            "not added yet"
        );
        assert_eq!(requests("200"), 0);
        metrics.flush_workers();
        assert_eq!(metrics.relay_overhead.get_sample_count(), 4);
        assert_eq!(metrics.upstream_latency.get_sample_count(), 4);
        assert!((metrics.upstream_latency.get_sample_sum() - 0.008).abs() < 1e-9);
        assert_eq!((requests("200"), requests("404")), (2, 1));
        let latency = metrics.latency.with_label_values(&["unmatched"]);
        assert_eq!(latency.get_sample_count(), 3);

        // Without a read: added every FLUSH_EVERY observations of a worker.
        for _ in 0..FLUSH_EVERY {
            two.observe_relay(ms, ms);
        }
        assert_eq!(
            metrics.relay_overhead.get_sample_count(),
            4 + u64::from(FLUSH_EVERY)
        );
        // Paths past the ones a worker keeps are added at once.
        for n in 0..=KEPT_PATHS {
            let req = TestRequest::with_uri(&format!("/p/{n}")).to_http_request();
            one.observe_request(&metrics, &req, StatusCode::OK, ms);
        }
        metrics.flush_workers();
        assert_eq!(requests("200"), 2 + KEPT_PATHS as u64 + 1);
    }

    #[test]
    fn a_request_id_is_req_and_32_lowercase_hex_digits_and_later_ids_sort_after() {
        let first = RequestId::new().0;
        let rest = first.strip_prefix("req_").unwrap();
        assert_eq!(rest.len(), 32);
        assert!(
            rest.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(RequestId::new().0 > first, "time-ordered");
        // A worker's own ordering: its ids follow each other within a millisecond too,
        // and follow the ids made before.
        let context = uuid::ContextV7::new();
        let ids: Vec<String> = (0..100).map(|_| RequestId::new_in(&context).0).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        assert!(ids[0] > first);
        assert!(
            ids.iter()
                .all(|id| id.len() == 36 && id.starts_with("req_"))
        );
    }
}
