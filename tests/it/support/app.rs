//! `spawn_app`: the relay in-process (the same `Application` `serve` runs), inside the
//! actix System of an `#[actix_rt::test]`, on a port of its own.

use std::ops::Deref;

use actix_web::dev::ServerHandle;
use claude_relay::app::{Actors, Application};
use claude_relay::config::Config;

use super::http::Http;

pub struct TestApp {
    pub port: u16,
    /// `http://127.0.0.1:<port>`
    pub address: String,
    pub http: Http,
    /// The actors, for tests that talk to the router directly.
    pub actors: Actors,
    /// The configuration the relay runs with.
    pub config: Config,
    server: ServerHandle,
}

/// Builds and starts the relay (port 0 is replaced by a free one). Does not wait for the
/// backends: use `wait_for_health`.
pub async fn spawn_app(mut config: Config) -> TestApp {
    config.host = "127.0.0.1".into();
    let app = Application::build(config.clone()).expect("the relay binds its port");
    let port = app.port();
    let actors = app.actors().clone();
    let server = app.into_server();
    let handle = server.handle();
    actix_rt::spawn(server);
    let http = Http::new(port);
    TestApp {
        port,
        address: http.base.clone(),
        http,
        actors,
        config,
        server: handle,
    }
}

impl TestApp {
    /// Stops the HTTP server and waits until it has.
    pub async fn stop(&self) {
        self.server.stop(false).await;
    }
}

impl Deref for TestApp {
    type Target = Http;
    fn deref(&self) -> &Http {
        &self.http
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        // `stop` sends its command at once; the returned future only waits for completion.
        drop(self.server.stop(false));
    }
}
