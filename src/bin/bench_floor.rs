//! `bench_floor`: the least CPU a relay spends here. A pass-through with nothing of the relay
//! in it (no key check, no limits, no storage, no journal): it reads the client's request,
//! sends its body to the upstream with hyper-util's pooled client (Nagle off; the relay's
//! client until stop 33, which now keeps its own connections per worker: a floor measured
//! with it is a little high) and answers with the upstream's status, content type and body.
//! `bench/floor.sh` measures it under the relay benchmark's load, side by side with the
//! relay, so the relay's own share of its CPU per request is known.
//!
//! `BENCH_FLOOR_SERVER=actix` (default) serves with actix-web, one worker per core, as the
//! relay does; `hyper` serves with hyper's HTTP/1 server, one single-threaded runtime per
//! core accepting on one shared listener.
//!
//! Environment: `BENCH_FLOOR_PORT` (default 3960), `BENCH_FLOOR_UPSTREAM` (default
//! `http://127.0.0.1:18080/v1/messages`), `BENCH_FLOOR_WORKERS` (default: the cores).
#![allow(
    clippy::expect_used,
    clippy::print_stdout,
    reason = "a benchmark: any failure stops it loudly, and it reports on stdout"
)]

use std::convert::Infallible;
use std::net::TcpListener;

use actix_web::{App, HttpResponse, HttpServer, web};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

type Upstream = Client<HttpConnector, Full<Bytes>>;

fn upstream_client() -> Upstream {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(512)
        .pool_timer(TokioTimer::new())
        .build(connector)
}

/// Sends `body` upstream; answers with the upstream's status, content type and body.
async fn forward(
    client: &Upstream,
    uri: &http::Uri,
    body: Bytes,
) -> (http::StatusCode, Option<http::HeaderValue>, Bytes) {
    let request = http::Request::post(uri.clone())
        .header("content-type", "application/json")
        .header("anthropic-version", "2023-06-01")
        .header("x-api-key", "sk-upstream-test")
        .body(Full::new(body))
        .expect("request");
    let response = client.request(request).await.expect("upstream answered");
    let (parts, incoming) = response.into_parts();
    let body = incoming.collect().await.expect("upstream body").to_bytes();
    (
        parts.status,
        parts.headers.get("content-type").cloned(),
        body,
    )
}

struct Floor {
    client: Upstream,
    uri: http::Uri,
}

async fn actix_relay(floor: web::Data<Floor>, body: Bytes) -> HttpResponse {
    let (status, content_type, body) = forward(&floor.client, &floor.uri, body).await;
    let mut answer = HttpResponse::build(
        actix_web::http::StatusCode::from_u16(status.as_u16()).expect("status"),
    );
    if let Some(ct) = content_type {
        answer.insert_header(("content-type", ct.as_bytes()));
    }
    answer.body(body)
}

fn serve_actix(listener: TcpListener, uri: http::Uri, workers: usize) -> std::io::Result<()> {
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(Floor {
                    client: upstream_client(),
                    uri: uri.clone(),
                }))
                .route("/api/v1/messages", web::post().to(actix_relay))
        })
        .workers(workers)
        .on_connect(|conn, _| {
            if let Some(socket) = conn.downcast_ref::<actix_web::rt::net::TcpStream>() {
                socket.set_nodelay(true).ok();
            }
        })
        .listen(listener)?
        .run()
        .await
    })
}

async fn hyper_relay(
    floor: std::rc::Rc<Floor>,
    request: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let body = request
        .into_body()
        .collect()
        .await
        .expect("client body")
        .to_bytes();
    let (status, content_type, body) = forward(&floor.client, &floor.uri, body).await;
    let mut answer = http::Response::new(Full::new(body));
    *answer.status_mut() = status;
    if let Some(ct) = content_type {
        answer.headers_mut().insert("content-type", ct);
    }
    Ok(answer)
}

fn serve_hyper(listener: TcpListener, uri: http::Uri, workers: usize) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let threads: Vec<_> = (0..workers)
        .map(|_| {
            let (listener, uri) = (listener.try_clone().expect("listener"), uri.clone());
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                    let floor = std::rc::Rc::new(Floor {
                        client: upstream_client(),
                        uri,
                    });
                    loop {
                        // A failed accept ends this worker; when all have ended, main fails.
                        let Ok((stream, _)) = listener.accept().await else {
                            break;
                        };
                        stream.set_nodelay(true).ok();
                        let floor = floor.clone();
                        tokio::task::spawn_local(async move {
                            let service = hyper::service::service_fn(move |request| {
                                hyper_relay(floor.clone(), request)
                            });
                            hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await
                                .ok();
                        });
                    }
                })
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("worker");
    }
    Err(std::io::Error::other(
        "the workers stopped accepting connections",
    ))
}

fn main() -> std::io::Result<()> {
    let var = |name: &str| std::env::var(name).ok();
    let port: u16 = var("BENCH_FLOOR_PORT").map_or(3960, |p| p.parse().expect("port"));
    let uri: http::Uri = var("BENCH_FLOOR_UPSTREAM")
        .unwrap_or_else(|| "http://127.0.0.1:18080/v1/messages".into())
        .parse()
        .expect("upstream URL");
    // As many workers as the relay runs by default (`Config::http_worker_count`).
    let workers = var("BENCH_FLOOR_WORKERS").map_or_else(
        || std::thread::available_parallelism().map_or(1, |n| n.get()),
        |w| w.parse().expect("workers"),
    );
    let listener = TcpListener::bind(("127.0.0.1", port))?;
    let server = var("BENCH_FLOOR_SERVER").unwrap_or_else(|| "actix".into());
    println!("floor ({server}, {workers} workers) on {port}");
    match server.as_str() {
        "hyper" => serve_hyper(listener, uri, workers),
        _ => serve_actix(listener, uri, workers),
    }
}
