//! `/health`, `/health/live`, `/health/ready` (SPEC §9) against real backends, with real
//! outages: a test-owned redis-server stopped and started, a TCP proxy in front of MariaDB
//! (or Redis) cut, frozen and opened again.

use std::cell::Cell;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{RedisServer, TcpProxy, TestEnv, eventually, free_port, spawn_app};

/// Generous bound for a backend to be found (again): 4 tests share 2 cores.
const RECOVER: Duration = Duration::from_secs(20);

fn keys(v: &Value) -> BTreeSet<&str> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .map(String::as_str)
        .collect()
}

/// A connected backend: `{"connected":true,"latency":"<number>ms","used":true}`.
fn assert_connected(body: &Value, backend: &str) {
    let b = &body["databases"][backend];
    assert_eq!(
        keys(b),
        BTreeSet::from(["connected", "latency", "used"]),
        "{body}"
    );
    assert_eq!(b["connected"], true, "{body}");
    assert_eq!(b["used"], true, "{body}");
    let latency = b["latency"]
        .as_str()
        .unwrap_or_else(|| panic!("latency: {body}"));
    let number = latency
        .strip_suffix("ms")
        .unwrap_or_else(|| panic!("latency {latency:?} does not end in ms"));
    let ms: f64 = number
        .parse()
        .unwrap_or_else(|_| panic!("latency {latency:?} is not <number>ms"));
    assert!((0.0..1000.0).contains(&ms), "latency {latency}");
}

/// A used backend that is down: `{"connected":false,"latency":null,"used":true,"error":"…"}`.
fn assert_down(body: &Value, backend: &str) {
    let b = &body["databases"][backend];
    assert_eq!(b["connected"], false, "{body}");
    assert_eq!(b["latency"], Value::Null, "{body}");
    assert_eq!(b["used"], true, "{body}");
    assert!(
        b["error"].as_str().is_some_and(|e| !e.is_empty()),
        "a down backend says why: {body}"
    );
}

/// A backend the mode does not use.
fn assert_unused(body: &Value, backend: &str) {
    assert_eq!(
        body["databases"][backend],
        json!({"connected": false, "latency": null, "used": false}),
        "{body}"
    );
}

/// Top level: exactly status, mode, version, uptime, databases{redis, mysql} and the usage
/// backlog (events, bytes, oldest seconds).
fn assert_shape(body: &Value, status: &str, mode: &str) {
    assert_eq!(
        keys(body),
        BTreeSet::from([
            "databases",
            "mode",
            "status",
            "uptime",
            "usageBacklog",
            "version"
        ]),
        "{body}"
    );
    assert_eq!(
        keys(&body["usageBacklog"]),
        BTreeSet::from(["bytes", "events", "oldestSeconds"]),
        "{body}"
    );
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["mode"], mode, "{body}");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"), "{body}");
    assert!(body["uptime"].is_u64(), "uptime is whole seconds: {body}");
    assert_eq!(
        keys(&body["databases"]),
        BTreeSet::from(["mysql", "redis"]),
        "{body}"
    );
}

/// GET /health and how long it took. The time is reported, not asserted: on a loaded
/// machine any bound flakes. That /health does not wait on a backend is asserted through
/// its content instead: a router that waited would leave it with "router did not answer".
async fn timed_health(app: &crate::support::Http) -> (StatusCode, Value, Duration) {
    let started = Instant::now();
    let (code, body) = app.health().await;
    let took = started.elapsed();
    assert_ne!(body["error"], "router did not answer", "{code} {body}");
    (code, body, took)
}

#[actix_rt::test]
async fn healthy_with_both_backends() {
    let env = TestEnv::new();
    let app = spawn_app(env.config()).await;
    app.wait_for_health("healthy", RECOVER).await;

    let (code, body, _) = timed_health(&app).await;
    assert_eq!(code, StatusCode::OK);
    assert_shape(&body, "healthy", "hybrid");
    assert_connected(&body, "redis");
    assert_connected(&body, "mysql");

    assert_eq!(
        app.get_json("/health/live").await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
    assert_eq!(
        app.get_json("/health/ready").await,
        (
            StatusCode::OK,
            json!({"status": "ready", "health": "healthy"})
        )
    );
}

#[actix_rt::test]
async fn redis_stopped_is_degraded_and_recovers() {
    let mut redis = RedisServer::spawn();
    let env = TestEnv::new().with("REDIS_PORT", redis.port().to_string());
    let app = spawn_app(env.config()).await;
    app.wait_for_health("healthy", RECOVER).await;

    redis.stop();
    let stopped = Instant::now();
    let (code, body) = app.wait_for_backend("redis", false, RECOVER).await;
    eprintln!("redis down seen after {:?}", stopped.elapsed());
    assert_eq!(code, StatusCode::OK, "degraded answers 200: {body}");
    assert_shape(&body, "degraded", "hybrid");
    assert_down(&body, "redis");
    assert_connected(&body, "mysql");
    assert_eq!(
        app.get_json("/health/ready").await,
        (
            StatusCode::OK,
            json!({"status": "ready", "health": "degraded"})
        )
    );
    assert_eq!(app.get_json("/health/live").await.0, StatusCode::OK);

    redis.start();
    let body = app.wait_for_health("healthy", RECOVER).await;
    assert_connected(&body, "redis");
    assert_eq!(timed_health(&app).await.0, StatusCode::OK);
}

#[actix_rt::test]
async fn mysql_cut_is_degraded_and_recovers() {
    let proxy = TcpProxy::to_mysql();
    let env = TestEnv::new().with("MYSQL_PORT", proxy.port().to_string());
    let app = spawn_app(env.config()).await;
    app.wait_for_health("healthy", RECOVER).await;

    proxy.cut();
    let (code, body) = app.wait_for_backend("mysql", false, RECOVER).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_shape(&body, "degraded", "hybrid");
    assert_down(&body, "mysql");
    assert_connected(&body, "redis");
    assert_eq!(
        app.get_json("/health/ready").await,
        (
            StatusCode::OK,
            json!({"status": "ready", "health": "degraded"})
        )
    );

    proxy.open();
    let body = app.wait_for_health("healthy", RECOVER).await;
    assert_connected(&body, "mysql");
}

#[actix_rt::test]
async fn both_down_is_unhealthy_503_and_recovers() {
    let mut redis = RedisServer::spawn();
    let proxy = TcpProxy::to_mysql();
    let env = TestEnv::new()
        .with("REDIS_PORT", redis.port().to_string())
        .with("MYSQL_PORT", proxy.port().to_string());
    let app = spawn_app(env.config()).await;
    app.wait_for_health("healthy", RECOVER).await;

    redis.stop();
    proxy.cut();
    let body = app.wait_for_health("unhealthy", RECOVER).await;
    let (code, again, _) = timed_health(&app).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{again}");
    assert_shape(&body, "unhealthy", "hybrid");
    assert_down(&body, "redis");
    assert_down(&body, "mysql");
    assert_eq!(
        app.get_json("/health/ready").await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "not_ready", "health": "unhealthy"})
        )
    );
    assert_eq!(
        app.get_json("/health/live").await,
        (StatusCode::OK, json!({"status": "ok"}))
    );

    // One back: degraded; both back: healthy, without a restart.
    redis.start();
    let body = app.wait_for_health("degraded", RECOVER).await;
    assert_connected(&body, "redis");
    assert_down(&body, "mysql");
    proxy.open();
    app.wait_for_health("healthy", RECOVER).await;
    assert_eq!(
        app.get_json("/health/ready").await,
        (
            StatusCode::OK,
            json!({"status": "ready", "health": "healthy"})
        )
    );
}

/// Polls /health while a backend hangs: every answer from the router's memory, and the
/// backend reported down within `detect`.
async fn watch_hanging_backend(app: &crate::support::Http, backend: &str, detect: Duration) {
    let frozen = Instant::now();
    let slowest = Cell::new(Duration::ZERO);
    let body = eventually(detect, &format!("{backend} reported down"), || async {
        let (_, body, took) = timed_health(app).await;
        slowest.set(slowest.get().max(took));
        if body["databases"][backend]["connected"] == false {
            Ok(body)
        } else {
            Err(body.to_string())
        }
    })
    .await;
    let detected = frozen.elapsed();
    assert_shape(&body, "degraded", "hybrid");
    assert_down(&body, backend);
    // Keep asking while it hangs, for two more seconds of the relay's own uptime: every
    // answer comes from the router's memory.
    let since = body["uptime"].as_u64().expect("uptime");
    eventually(RECOVER, "two more seconds of the hang covered", || async {
        let (code, body, took) = timed_health(app).await;
        slowest.set(slowest.get().max(took));
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(body["status"], "degraded", "{body}");
        match body["uptime"].as_u64() {
            Some(now) if now >= since + 2 => Ok(()),
            other => Err(format!("uptime {other:?}")),
        }
    })
    .await;
    eprintln!(
        "{backend} frozen: reported down after {detected:?}, slowest /health {:?}",
        slowest.get()
    );
}

#[actix_rt::test]
async fn frozen_mysql_does_not_delay_health_and_recovers() {
    let proxy = TcpProxy::to_mysql();
    let env = TestEnv::new().with("MYSQL_PORT", proxy.port().to_string());
    let app = spawn_app(env.config()).await;
    app.wait_for_health("healthy", RECOVER).await;

    proxy.freeze();
    watch_hanging_backend(&app, "mysql", RECOVER).await;

    proxy.open();
    let body = app.wait_for_health("healthy", RECOVER).await;
    assert_connected(&body, "mysql");
}

#[actix_rt::test]
async fn frozen_redis_does_not_delay_health_and_recovers() {
    let redis = RedisServer::spawn();
    let proxy = TcpProxy::new(&format!("127.0.0.1:{}", redis.port()));
    let env = TestEnv::new().with("REDIS_PORT", proxy.port().to_string());
    let app = spawn_app(env.config()).await;
    app.wait_for_health("healthy", RECOVER).await;

    proxy.freeze();
    watch_hanging_backend(&app, "redis", RECOVER).await;

    proxy.open();
    let body = app.wait_for_health("healthy", RECOVER).await;
    assert_connected(&body, "redis");
}

/// A Redis stall that outlasts one probe's PING but not two probes does not degrade the
/// relay: a timed-out PING counts like a failed call (two in a row open the circuit), as
/// MySQL's does. It used to open the circuit at once, so a stall of a few hundred
/// milliseconds under load took Redis out of service until the next probe.
#[actix_rt::test]
async fn a_redis_stall_shorter_than_two_probes_keeps_it_in_service() {
    let redis = RedisServer::spawn();
    // The probe's PING waits max(REDIS_TIMEOUT_MS, 300 ms) = 300 ms. A stall of 1.7 s times
    // out every probe that starts in its first 1.4 s (at most one of each prober's, 2 s
    // apart), and the next one finds Redis answering again.
    let env = TestEnv::new()
        .with("REDIS_PORT", redis.port().to_string())
        .with("REDIS_TIMEOUT_MS", "100")
        .with("BACKEND_PROBE_INTERVAL_MS", "2000");
    let app = spawn_app(env.config()).await;
    app.wait_for_health("healthy", RECOVER).await;

    let mut answers = 0;
    // Two stalls, each followed by more than a probe interval: a probe that timed out in
    // the first is followed by one that succeeds, whatever the probes' phase.
    for _ in 0..2 {
        let stall = redis.stall(1_700);
        let watch = async {
            let until = Instant::now() + Duration::from_millis(4_300);
            while Instant::now() < until {
                let (code, body, _) = timed_health(&app).await;
                assert_eq!(code, StatusCode::OK, "{body}");
                assert_eq!(body["status"], "healthy", "{body}");
                assert_connected(&body, "redis");
                answers += 1;
                actix_rt::time::sleep(Duration::from_millis(50)).await;
            }
        };
        futures_util::join!(stall, watch);
    }
    assert!(answers >= 40, "only {answers} health answers in 8.6 s");
}

#[actix_rt::test]
async fn nothing_reachable_is_unhealthy_but_live() {
    let env = TestEnv::new()
        .with("REDIS_PORT", free_port().to_string())
        .with("MYSQL_PORT", free_port().to_string());
    // `spawn_app` returns once both were probed: their state is known, and down.
    let app = spawn_app(env.config()).await;

    let (code, body, _) = timed_health(&app).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_shape(&body, "unhealthy", "hybrid");
    assert_down(&body, "redis");
    assert_down(&body, "mysql");
    assert_eq!(
        app.get_json("/health/live").await,
        (StatusCode::OK, json!({"status": "ok"}))
    );
    assert_eq!(
        app.get_json("/health/ready").await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"status": "not_ready", "health": "unhealthy"})
        )
    );
}

#[actix_rt::test]
async fn redis_mode_needs_only_redis() {
    let mut redis = RedisServer::spawn();
    // MySQL points at nothing: redis mode must not care.
    let env = TestEnv::new()
        .with("DATABASE_TYPE", "redis")
        .with("REDIS_PORT", redis.port().to_string())
        .with("MYSQL_PORT", free_port().to_string());
    let app = spawn_app(env.config()).await;
    let body = app.wait_for_health("healthy", RECOVER).await;
    let (code, body2, _) = timed_health(&app).await;
    assert_eq!(code, StatusCode::OK, "{body2}");
    assert_shape(&body, "healthy", "redis");
    assert_connected(&body, "redis");
    assert_unused(&body, "mysql");

    // Redis is everything in this mode: down means unhealthy.
    redis.stop();
    let body = app.wait_for_health("unhealthy", RECOVER).await;
    assert_down(&body, "redis");
    assert_unused(&body, "mysql");
    assert_eq!(app.health().await.0, StatusCode::SERVICE_UNAVAILABLE);
    redis.start();
    app.wait_for_health("healthy", RECOVER).await;
}

#[actix_rt::test]
async fn mysql_mode_needs_only_mysql() {
    let proxy = TcpProxy::to_mysql();
    // Redis points at nothing: mysql mode must not care.
    let env = TestEnv::new()
        .with("DATABASE_TYPE", "mysql")
        .with("REDIS_PORT", free_port().to_string())
        .with("MYSQL_PORT", proxy.port().to_string());
    let app = spawn_app(env.config()).await;
    let body = app.wait_for_health("healthy", RECOVER).await;
    let (code, body2, _) = timed_health(&app).await;
    assert_eq!(code, StatusCode::OK, "{body2}");
    assert_shape(&body, "healthy", "mysql");
    assert_connected(&body, "mysql");
    assert_unused(&body, "redis");

    proxy.cut();
    let body = app.wait_for_health("unhealthy", RECOVER).await;
    assert_down(&body, "mysql");
    assert_unused(&body, "redis");
    assert_eq!(app.health().await.0, StatusCode::SERVICE_UNAVAILABLE);
    proxy.open();
    app.wait_for_health("healthy", RECOVER).await;
}
