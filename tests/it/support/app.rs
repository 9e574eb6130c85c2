//! The one way the tests start a relay in-process: `TestRelay::builder()` (an environment of
//! its own, the mock upstream its accounts and OAuth point at, the app, a wait for the
//! wanted health) on top of `spawn_app` (the same `Application` `serve` runs, inside the
//! actix System of an `#[actix_rt::test]`, on a port of its own). The suites' helpers
//! (`relay::harness::start`, `admin::start_with`) are thin wrappers over the builder.

use std::ops::Deref;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use claude_relay::app::{Actors, Application};
use claude_relay::config::Config;

use super::env::TestEnv;
use super::http::Http;
use super::mock_upstream::{MockUpstream, start_mock};

/// How long `TestRelayBuilder::start` waits for the wanted health by default.
const HEALTH_WAIT: Duration = Duration::from_secs(20);

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

/// Starts the relay as `serve` does (port 0 is replaced by a free one): returns once every
/// backend was probed once (bounded), so the state it reports is known. Does not wait for
/// any particular health: use `wait_for_health`, or `TestRelay::builder()`.
pub async fn spawn_app(mut config: Config) -> TestApp {
    // Warnings of the relay go to this test's output: shown when it fails.
    claude_relay::logging::init("warn", None);
    config.host = "127.0.0.1".into();
    // A journal of its own: a relay binary or other routers of the same test may run on the
    // environment's journal directory (one process per directory).
    config.journal_dir = config
        .journal_dir
        .join(format!("app-{}", uuid::Uuid::new_v4().simple()));
    let app = Application::start(config.clone())
        .await
        .expect("the relay binds its port");
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

/// One relay, the mock upstream it talks to and its environment (dropped in this order:
/// the relay stops before its database is dropped).
pub struct TestRelay {
    pub app: TestApp,
    pub mock: MockUpstream,
    pub env: TestEnv,
}

impl TestRelay {
    /// A relay with a fresh `TestEnv` whose upstream (`CLAUDE_API_URL`) and OAuth token URL
    /// are the mock's, waiting until it is `healthy`.
    pub fn builder<'a>() -> TestRelayBuilder<'a> {
        TestRelayBuilder {
            env: TestEnv::new(),
            edits: Vec::new(),
            want: Some("healthy"),
            wait: HEALTH_WAIT,
        }
    }
}

type Edit<'a> = Box<dyn FnOnce(&mut TestEnv, &MockUpstream) + 'a>;

pub struct TestRelayBuilder<'a> {
    env: TestEnv,
    edits: Vec<Edit<'a>>,
    want: Option<&'static str>,
    wait: Duration,
}

impl<'a> TestRelayBuilder<'a> {
    /// Starts from this environment instead of a fresh one.
    pub fn env(mut self, env: TestEnv) -> Self {
        self.env = env;
        self
    }

    /// Changes the environment before the relay starts (after the mock URLs are set, so an
    /// edit may override them).
    pub fn edit(mut self, edit: impl FnOnce(&mut TestEnv) + 'a) -> Self {
        self.edits.push(Box::new(move |env, _| edit(env)));
        self
    }

    /// As `edit`, with the mock at hand (its URL, its port).
    pub fn edit_with_mock(mut self, edit: impl FnOnce(&mut TestEnv, &MockUpstream) + 'a) -> Self {
        self.edits.push(Box::new(edit));
        self
    }

    /// Waits for this `/health` status (`healthy`, `degraded`, `unhealthy`) at start.
    pub fn wait_for(mut self, status: &'static str) -> Self {
        self.want = Some(status);
        self
    }

    /// Returns as soon as the relay runs, whatever its health.
    pub fn no_wait(mut self) -> Self {
        self.want = None;
        self
    }

    pub async fn start(self) -> TestRelay {
        let mock = start_mock().await;
        let mut env = self.env;
        env.set("CLAUDE_API_URL", mock.url.clone());
        env.set(
            "CLAUDE_OAUTH_TOKEN_URL",
            format!("{}/oauth/token", mock.url),
        );
        env.set(
            "CLAUDE_OAUTH_PROFILE_URL",
            format!("{}/api/oauth/profile", mock.url),
        );
        for edit in self.edits {
            edit(&mut env, &mock);
        }
        let app = spawn_app(env.config()).await;
        if let Some(want) = self.want {
            app.wait_for_health(want, self.wait).await;
        }
        TestRelay { app, mock, env }
    }
}
