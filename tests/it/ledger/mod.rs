//! Issue 10: fault-injection load tests of the usage ledger through the real binary. Several
//! clients relay for a few seconds while Redis, MySQL or the relay itself fails; after
//! recovery the archive holds exactly the answers the clients received (no duplicates), the
//! daily roll-ups agree, and the key's limit counters in Redis equal the archive's sums.
//! This file holds the shared parts: the environment, the load driver and the exact checks.

mod bad_paths;
mod faults;
mod overspend;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use claude_relay::domain::api_key::ApiKey;
use serde_json::json;

use crate::support::env::backends;
use crate::support::fixtures::{console_account, create_key, store_account};
use crate::support::{
    Http, MockUpstream, TestApp, TestEnv, eventually, mysql, spawn_app, start_mock,
};

/// Generous bound for anything asynchronous: the suite shares 2 cores.
pub const RECOVER: Duration = Duration::from_secs(60);
/// Concurrent clients of each load.
pub const CLIENTS: usize = 8;
/// Hard bounds of one load, whatever the test waits for.
const LOAD_MAX: Duration = Duration::from_secs(40);
const REQUESTS_PER_CLIENT_MAX: u64 = 3_000;

/// A hybrid environment with a fast archive writer.
pub fn ledger_env() -> TestEnv {
    TestEnv::new().with("USAGE_BATCH_INTERVAL_MS", "100")
}

/// A test's backends with a key and an upstream account, made through an in-process relay
/// (its own journal directory, MySQL reached directly, not through the test's proxy).
pub struct Ledger {
    pub env: TestEnv,
    /// The upstream of every relay of the test (kept alive with it).
    pub _upstream: MockUpstream,
    pub setup: TestApp,
    pub key: ApiKey,
    pub plaintext: String,
}

impl Ledger {
    pub async fn new(env: TestEnv) -> Ledger {
        let mock = start_mock().await;
        let config = env.config();
        let mut setup_config = config.clone();
        setup_config.journal_dir = env.dir().join("setup-journal");
        setup_config.mysql.port = backends().mysql_port;
        setup_config.mysql.host = backends().mysql_host.clone();
        let setup = spawn_app(setup_config).await;
        setup
            .wait_for_health("healthy", Duration::from_secs(15))
            .await;
        let (key, plaintext) = create_key(&setup.actors.router, &config, |_| {}).await;
        store_account(
            &setup.actors.router,
            console_account(&config, "c1", &mock.url, "sk-up", 10),
        )
        .await;
        Ledger {
            env,
            _upstream: mock,
            setup,
            key,
            plaintext,
        }
    }

    /// Another key on the same backends; `edit` sets its limits.
    pub async fn another_key(&self, edit: impl FnOnce(&mut ApiKey)) -> (ApiKey, String) {
        create_key(&self.setup.actors.router, &self.env.config(), edit).await
    }

    /// Starts `CLIENTS` clients of this fixture's key against `targets` (base URLs).
    pub fn load(&self, targets: &Targets) -> Load {
        Load::start(targets.clone(), self.plaintext.clone())
    }
}

/// The base URLs the clients send to (client `i` uses entry `i % len`); the test swaps an
/// entry when it restarts a relay on another port.
#[derive(Clone)]
pub struct Targets(Arc<Mutex<Vec<String>>>);

impl Targets {
    pub fn new(bases: &[&Http]) -> Targets {
        Targets(Arc::new(Mutex::new(
            bases.iter().map(|h| h.base.clone()).collect(),
        )))
    }

    pub fn replace(&self, index: usize, http: &Http) {
        self.0.lock().expect("targets lock")[index] = http.base.clone();
    }

    fn pick(&self, client: usize) -> String {
        let targets = self.0.lock().expect("targets lock");
        targets[client % targets.len()].clone()
    }
}

/// What the clients saw.
#[derive(Debug, Default)]
pub struct Tally {
    /// `request-id` of every complete 200 answer.
    pub ok_ids: Vec<String>,
    /// Every answer that was not 200: `status body`.
    pub non_200: Vec<String>,
    /// Requests without a complete answer (connection refused or reset, torn stream).
    pub transport_errors: Vec<String>,
}

impl Tally {
    pub fn merge(&mut self, other: Tally) {
        self.ok_ids.extend(other.ok_ids);
        self.non_200.extend(other.non_200);
        self.transport_errors.extend(other.transport_errors);
    }

    /// Panics (listing them) when any answer was not 200.
    pub fn assert_all_200(&self) {
        assert!(
            self.non_200.is_empty(),
            "{} answers were not 200 (of {} 200s): {:#?}",
            self.non_200.len(),
            self.ok_ids.len(),
            self.non_200
        );
    }
}

/// `CLIENTS` clients on a thread (and runtime) of their own, so the test's blocking fault
/// injections (killing processes) never pause them.
pub struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    thread: Option<JoinHandle<Tally>>,
}

impl Load {
    fn start(targets: Targets, key: String) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let (stop_c, ok_c) = (stop.clone(), ok.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("load runtime");
            runtime.block_on(async move {
                let started = Instant::now();
                let tasks: Vec<_> = (0..CLIENTS)
                    .map(|client| {
                        tokio::spawn(one_client(
                            client,
                            targets.clone(),
                            key.clone(),
                            stop_c.clone(),
                            ok_c.clone(),
                            started,
                        ))
                    })
                    .collect();
                let mut tally = Tally::default();
                for t in tasks {
                    tally.merge(t.await.expect("client task"));
                }
                tally
            })
        });
        Load {
            stop,
            ok,
            thread: Some(thread),
        }
    }

    /// 200 answers so far.
    pub fn ok(&self) -> u64 {
        self.ok.load(Ordering::SeqCst)
    }

    /// Waits until `more` further 200 answers arrived (the relay serves at this point).
    pub async fn wait_more(&self, more: u64, what: &str) {
        let want = self.ok() + more;
        eventually(RECOVER, &format!("{what}: {want} answers 200"), || async {
            let n = self.ok();
            if n >= want {
                Ok(())
            } else {
                Err(format!("{n} answers 200"))
            }
        })
        .await;
    }

    /// Stops the clients (each finishes its request in flight) and returns what they saw.
    pub async fn finish(mut self) -> Tally {
        self.stop.store(true, Ordering::SeqCst);
        let thread = self.thread.take().expect("load thread");
        eventually(RECOVER, "the clients stopped", || async {
            if thread.is_finished() {
                Ok(())
            } else {
                Err("clients still running".into())
            }
        })
        .await;
        let tally = thread.join().expect("load thread");
        eprintln!(
            "load: {} answers 200, {} non-200, {} without an answer",
            tally.ok_ids.len(),
            tally.non_200.len(),
            tally.transport_errors.len()
        );
        tally
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// One message request (a stream when `stream`).
pub fn message(stream: bool) -> serde_json::Value {
    json!({"model": "claude-sonnet-4-20250514", "max_tokens": 16, "stream": stream,
           "messages": [{"role": "user", "content": "hello"}]})
}

/// Outcome of one request through the relay.
pub enum Answer {
    /// 200 with the whole body: the `request-id`.
    Ok(String),
    /// Another status: `status body`.
    Refused(u16, String),
    /// No complete answer.
    Broken(String),
}

/// Sends one `POST /api/v1/messages` to `base` and reads the whole answer.
pub async fn send(client: &reqwest::Client, base: &str, key: &str, stream: bool) -> Answer {
    let sent = client
        .post(format!("{base}/api/v1/messages"))
        .header("x-api-key", key)
        .json(&message(stream))
        .send()
        .await;
    let response = match sent {
        Ok(r) => r,
        Err(e) => return Answer::Broken(format!("send: {e}")),
    };
    let status = response.status().as_u16();
    let request_id = response
        .headers()
        .get("request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = match response.text().await {
        Ok(b) => b,
        Err(e) => return Answer::Broken(format!("{status} body: {e}")),
    };
    if status != 200 {
        return Answer::Refused(status, body);
    }
    if stream && !body.contains("message_stop") {
        return Answer::Broken(format!("torn stream {request_id}: {body}"));
    }
    assert!(!request_id.is_empty(), "a 200 without request-id: {body}");
    Answer::Ok(request_id)
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        // Never reuse a connection the relay may be closing (its keep-alive is 5 s).
        .pool_idle_timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .expect("reqwest client")
}

async fn one_client(
    index: usize,
    targets: Targets,
    key: String,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    started: Instant,
) -> Tally {
    let client = client();
    let mut tally = Tally::default();
    let mut n = 0u64;
    while !stop.load(Ordering::SeqCst)
        && started.elapsed() < LOAD_MAX
        && n < REQUESTS_PER_CLIENT_MAX
    {
        // Half the clients stream: the SSE path holds back its last event until journaled.
        let stream = index % 2 == 1;
        match send(&client, &targets.pick(index), &key, stream).await {
            Answer::Ok(id) => {
                tally.ok_ids.push(id);
                ok.fetch_add(1, Ordering::SeqCst);
            }
            Answer::Refused(status, body) => tally.non_200.push(format!("{status} {body}")),
            Answer::Broken(e) => {
                tally.transport_errors.push(e);
                // The relay is down (killed): pace the retries instead of spinning.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        n += 1;
    }
    tally
}

pub fn count(env: &TestEnv, sql: &str) -> i64 {
    mysql::scalar(&env.direct_mysql(), sql)
}

/// The journal backlog `/health` reports (`usageBacklog.events`); None when it does not answer.
async fn backlog(http: &Http) -> Option<u64> {
    let r = http
        .client
        .get(http.url("/health"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    let body: serde_json::Value = r.json().await.ok()?;
    body["usageBacklog"]["events"].as_u64()
}

/// Waits until every relay in `relays` has archived its journal and the archive holds at
/// least the `tally`'s 200s, then checks exactly: each 200 archived once, no duplicate
/// request id, at most `allowed_extra` rows for requests whose answer did not arrive
/// (only when the relay was killed between journaling and the last byte), daily roll-ups
/// equal, and the limit counters of every key in `key_ids` equal the archive's sums.
pub async fn assert_exact(
    env: &TestEnv,
    relays: &[&Http],
    tally: &Tally,
    allowed_extra: usize,
    key_ids: &[&str],
) {
    let want = i64::try_from(tally.ok_ids.len()).expect("count");
    eventually(RECOVER, "every journal archived", || async {
        let rows = count(env, "SELECT COUNT(*) AS n FROM usage_records");
        let mut backlogs = Vec::new();
        for r in relays {
            backlogs.push(backlog(r).await);
        }
        if rows >= want && backlogs.iter().all(|b| *b == Some(0)) {
            Ok(())
        } else {
            Err(format!("{rows} rows of {want}; backlogs {backlogs:?}"))
        }
    })
    .await;
    let rows = count(env, "SELECT COUNT(*) AS n FROM usage_records");
    let distinct = count(
        env,
        "SELECT COUNT(DISTINCT request_id) AS n FROM usage_records",
    );
    assert_eq!(rows, distinct, "duplicate request ids in the archive");
    let archived: BTreeSet<String> = mysql::strings(
        &env.direct_mysql(),
        "SELECT request_id AS s FROM usage_records",
    )
    .into_iter()
    .collect();
    let answered: BTreeSet<String> = tally.ok_ids.iter().cloned().collect();
    assert_eq!(answered.len(), tally.ok_ids.len(), "request ids repeat");
    let missing: Vec<&String> = answered.difference(&archived).collect();
    assert!(
        missing.is_empty(),
        "{} answers 200 not archived (of {}): {missing:?}",
        missing.len(),
        answered.len()
    );
    let extra: Vec<&String> = archived.difference(&answered).collect();
    assert!(
        extra.len() <= allowed_extra,
        "{} archived events without a 200 the clients saw (allowed {allowed_extra}): {extra:?}",
        extra.len()
    );
    if !extra.is_empty() {
        eprintln!(
            "{} events archived whose answer the killed relay did not finish: {extra:?}",
            extra.len()
        );
    }
    assert_eq!(
        count(
            env,
            "SELECT CAST(COALESCE(SUM(requests), 0) AS SIGNED) AS n FROM usage_daily"
        ),
        rows,
        "usage_daily requests"
    );
    for key_id in key_ids {
        assert_counters_match_archive(env, key_id).await;
    }
}

/// The key's `total` and `day:<date>` counters in Redis (requests, cost) equal the archive's
/// sums (polled: after a Redis wipe the relay rebuilds them).
pub async fn assert_counters_match_archive(env: &TestEnv, key_id: &str) {
    let key_id = key_id.to_string();
    eventually(RECOVER, "limit counters equal the archive", || async {
        let (want, got) = counters_vs_archive(env, &key_id);
        if want == got {
            Ok(())
        } else {
            Err(format!("archive {want:?}, redis {got:?}"))
        }
    })
    .await;
}

type Sums = BTreeMap<String, (i64, i64)>;

/// (archive, redis) as counter name → (requests, cost micros).
fn counters_vs_archive(env: &TestEnv, key_id: &str) -> (Sums, Sums) {
    let mut want = Sums::new();
    want.insert(
        "total".into(),
        (
            count(
                env,
                &format!("SELECT COUNT(*) AS n FROM usage_records WHERE api_key_id = '{key_id}'"),
            ),
            count(
                env,
                &format!(
                    "SELECT CAST(COALESCE(SUM(cost_micros), 0) AS SIGNED) AS n FROM usage_records WHERE api_key_id = '{key_id}'"
                ),
            ),
        ),
    );
    let dates = mysql::strings(
        &env.direct_mysql(),
        &format!(
            "SELECT DISTINCT CAST(usage_date AS CHAR) AS s FROM usage_records WHERE api_key_id = '{key_id}'"
        ),
    );
    for date in dates {
        let filter = format!("api_key_id = '{key_id}' AND usage_date = '{date}'");
        want.insert(
            format!("day:{date}"),
            (
                count(
                    env,
                    &format!("SELECT COUNT(*) AS n FROM usage_records WHERE {filter}"),
                ),
                count(
                    env,
                    &format!(
                        "SELECT CAST(COALESCE(SUM(cost_micros), 0) AS SIGNED) AS n FROM usage_records WHERE {filter}"
                    ),
                ),
            ),
        );
    }
    let mut got = Sums::new();
    for name in want.keys() {
        let hash: BTreeMap<String, i64> = env
            .redis_query(
                redis::cmd("HGETALL").arg(format!("{}usage:key:{key_id}:{name}", env.key_prefix)),
            )
            .unwrap_or_default();
        got.insert(
            name.clone(),
            (
                hash.get("requests").copied().unwrap_or(0),
                hash.get("cost").copied().unwrap_or(0),
            ),
        );
    }
    (want, got)
}

/// The value of one sample of `/metrics` (`name{labels}` exactly as printed), 0 when absent.
/// Asked up to 3 times: a pooled connection the relay just closed as idle fails once.
pub async fn metric(http: &Http, sample: &str) -> f64 {
    let mut last = None;
    for _ in 0..3 {
        let answer = async {
            http.client
                .get(http.url("/metrics"))
                .send()
                .await?
                .text()
                .await
        };
        match answer.await {
            Ok(text) => {
                return text
                    .lines()
                    .find_map(|l| l.strip_prefix(sample))
                    .and_then(|rest| rest.trim().parse().ok())
                    .unwrap_or(0.0);
            }
            Err(e) => last = Some(e),
        }
    }
    panic!("GET /metrics: {last:?}")
}
