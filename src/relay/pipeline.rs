//! One relayed request from start to end: key checks, body checks, admission, account
//! choice, the upstream call, and the answer (passed through, streamed, or an error), with
//! usage recorded and the lease released on every path. OpenAI-dialect requests take the
//! same path; `Dialect` translates at its two seams (the request body, the answer).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use actix_web::{HttpRequest, HttpResponse};
use bytes::Bytes;
use chrono::Utc;
use serde_json::Value;

use super::dialect::{Dialect, Prepared, RequestFacts, RequestTree};
use super::queue::{ConcurrencyQueue, QueueRefusal};
use super::scheduler::{self, Choice, LastUsed};
use super::stream::{RelayStream, StreamEnd};
use super::upstream::{self, UpstreamAuth, UpstreamClients, UpstreamError};
use super::{auth, oauth, subscription};
use crate::actors::router::{EntryKind, LeaseRef, RouterHandle};
use crate::config::Config;
use crate::config::JournalFull;
use crate::domain::account::{
    Account, AccountType, Cooldown, cooldown_after_upstream, reset_from_headers,
};
use crate::domain::api_key::ApiKey;
use crate::domain::client::{self, ClientRequest};
use crate::domain::crypto::CredentialCipher;
use crate::domain::limits::{
    self, Admission, AdmissionRequest, CostLimit, CostLimitKind, WindowLimits,
};
use crate::domain::pricing::{PriceTable, is_opus};
use crate::domain::usage::Usage;
use crate::domain::usage_event::UsageEvent;
use crate::error::AppError;
use crate::http::metrics::{Metrics, RequestId, WorkerMetrics};
use crate::ledger::CounterContext;

/// Longest model name accepted.
const MAX_MODEL_LEN: usize = 128;
/// Slack added to the upstream time-out for a lease, so a live request never loses it.
const LEASE_SLACK_MS: u64 = 60_000;

/// A lease lives as long as the longest request may, plus the slack (at most as long as the
/// time-out again: a short REQUEST_TIMEOUT frees a crashed instance's slots soon).
fn lease_ttl_ms(config: &Config) -> u64 {
    let timeout = u64::try_from(config.request_timeout.as_millis()).unwrap_or(u64::MAX);
    timeout.saturating_add(LEASE_SLACK_MS.min(timeout))
}

/// Token counts as stored (i64 columns; a count never comes near the limit).
fn tokens(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// What every relay request needs. Each HTTP worker has its own copy: its `router` is the
/// worker's handle (hot path on the worker's thread); the rest is shared by all workers.
#[derive(Clone)]
pub struct RelayShared {
    pub router: RouterHandle,
    pub config: Arc<Config>,
    pub prices: Arc<PriceTable>,
    pub cipher: CredentialCipher,
    pub encryption_key: Arc<str>,
    pub last_used: Arc<LastUsed>,
    pub opened: Arc<oauth::OpenedCredentials>,
    pub metrics: Arc<Metrics>,
    /// The worker's share of the request metrics.
    pub worker_metrics: Arc<WorkerMetrics>,
    pub queue: Arc<ConcurrencyQueue>,
}

/// Which upstream endpoint a request goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Messages,
    CountTokens,
}

impl Endpoint {
    fn path(self) -> &'static str {
        match self {
            Endpoint::Messages => "/v1/messages",
            Endpoint::CountTokens => "/v1/messages/count_tokens",
        }
    }
}

/// Releases the lease when a request ends before usage recording took it over.
struct LeaseGuard {
    router: RouterHandle,
    lease: Option<LeaseRef>,
}

impl LeaseGuard {
    fn take(&mut self) -> Option<LeaseRef> {
        self.lease.take()
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            let router = self.router.clone();
            actix::spawn(async move { router.end_lease(&lease).await });
        }
    }
}

/// Checks the Messages request: `model` a plain name, `messages` an array.
fn check_body(facts: &RequestFacts) -> Result<(), AppError> {
    let model = facts
        .model
        .as_deref()
        .ok_or_else(|| AppError::InvalidRequest("model: field required".into()))?;
    if model.is_empty()
        || model.len() > MAX_MODEL_LEN
        || !model
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:@/-[]".contains(c))
    {
        return Err(AppError::InvalidRequest(
            "model: not a valid model name".into(),
        ));
    }
    if !facts.has_messages {
        return Err(AppError::InvalidRequest(
            "messages: field required (an array)".into(),
        ));
    }
    Ok(())
}

fn admission_error(admission: Admission) -> Option<AppError> {
    let rate = |what: &str, retry: u64| AppError::RateLimited {
        message: format!("rate limit exceeded: {what} in the current window"),
        retry_after_secs: retry.max(1),
    };
    match admission {
        Admission::Granted => None,
        Admission::ConcurrencyExceeded => Some(AppError::RateLimited {
            message: "concurrency limit exceeded for this API key".into(),
            retry_after_secs: 1,
        }),
        Admission::RequestsExceeded { retry_after_secs } => {
            Some(rate("too many requests", retry_after_secs))
        }
        Admission::TokensExceeded { retry_after_secs } => {
            Some(rate("too many tokens", retry_after_secs))
        }
        Admission::CostExceeded { retry_after_secs } => {
            Some(rate("cost limit reached", retry_after_secs))
        }
        Admission::CostLimitExceeded(kind) => Some(AppError::QuotaExceeded {
            code: kind.code(),
            message: match kind {
                CostLimitKind::Daily => "daily cost limit of this API key reached".into(),
                CostLimitKind::Total => "total cost limit of this API key reached".into(),
                CostLimitKind::WeeklyOpus => {
                    "weekly Opus cost limit of this API key reached".into()
                }
            },
        }),
    }
}

/// An admission's answer, the sticky session's account, and whether the router granted it.
type Admitted = (Admission, Option<String>, bool);

/// Waits in the key's concurrency queue and asks for a slot again as the head of its
/// line; 429 when the line is full or no slot frees in time.
async fn wait_for_slot(
    shared: &RelayShared,
    key_id: &str,
    admission: AdmissionRequest,
    sticky_entry: Option<String>,
) -> Result<Admitted, AppError> {
    let router = &shared.router;
    let renew = shared.config.sticky_session_ttl;
    let outcome = shared
        .queue
        .wait_turn(key_id, || {
            let (admission, sticky_entry) = (admission.clone(), sticky_entry.clone());
            async move {
                let admitted = router
                    .admit_for_request(admission, sticky_entry, renew)
                    .await?;
                Ok((admitted.0 != Admission::ConcurrencyExceeded).then_some(admitted))
            }
        })
        .await?;
    outcome.map_err(|refusal| AppError::RateLimited {
        message: match refusal {
            QueueRefusal::Full => {
                "concurrency limit exceeded for this API key and its queue is full".into()
            }
            QueueRefusal::TimedOut => format!(
                "concurrency limit exceeded for this API key: no slot freed within {} ms",
                shared.queue.wait().as_millis()
            ),
        },
        retry_after_secs: 1,
    })
}

/// The admission request of a key for a model at `now`. Counter names are made only for
/// the limits the key has (most keys have none).
fn admission_request(
    key: &ApiKey,
    model: &str,
    config: &Config,
    lease_id: &str,
) -> AdmissionRequest {
    let now = Utc::now();
    let limited =
        key.rate_limit_requests > 0 || key.token_limit > 0 || key.rate_limit_cost_micros > 0;
    let window = limited
        .then(|| limits::rate_window(&key.id, key.rate_limit_window_minutes, now))
        .flatten()
        .map(|w| WindowLimits {
            name: w.name,
            ttl_seconds: w.ttl_seconds,
            resets_in_seconds: w.resets_in_seconds,
            max_requests: i64::from(key.rate_limit_requests),
            max_tokens: key.token_limit,
            max_cost_micros: key.rate_limit_cost_micros,
        });
    let opus_limit = if is_opus(model) {
        key.weekly_opus_cost_limit_micros
    } else {
        0
    };
    let wanted = [
        (CostLimitKind::Daily, key.daily_cost_limit_micros),
        (CostLimitKind::Total, key.total_cost_limit_micros),
        (CostLimitKind::WeeklyOpus, opus_limit),
    ];
    let mut cost_limits = Vec::new();
    if wanted.iter().any(|(_, max)| *max > 0) {
        let names = limits::key_counter_names(
            &key.id,
            now,
            config.timezone_offset_hours,
            key.weekly_reset_day,
            key.weekly_reset_hour,
        );
        let counters = [names.daily, names.total, names.weekly_opus];
        for ((kind, max_micros), counter) in wanted.into_iter().zip(counters) {
            if max_micros > 0 {
                cost_limits.push(CostLimit {
                    kind,
                    counter,
                    max_micros,
                });
            }
        }
    }
    AdmissionRequest {
        lease_scope: ["key:", key.id.as_str()].concat(),
        lease_id: lease_id.to_string(),
        lease_ttl_ms: lease_ttl_ms(config),
        concurrency_limit: key.concurrency_limit,
        window,
        cost_limits,
    }
}

/// How the relay authenticates to the upstream with this account, and where it sends.
async fn upstream_target<'a>(
    shared: &'a RelayShared,
    clients: &UpstreamClients,
    proxy: Option<&str>,
    account: &'a Account,
) -> Result<(UpstreamAuth, &'a str), AppError> {
    let base = account
        .base_url
        .as_deref()
        .filter(|u| !u.is_empty())
        .unwrap_or(&shared.config.claude_api_url);
    let auth = match account.account_type {
        AccountType::ClaudeConsole => {
            let key = shared.opened.api_key_header(&shared.cipher, account)?;
            UpstreamAuth::ApiKey(key.ok_or_else(|| {
                AppError::Internal(format!("console account {} has no API key", account.id))
            })?)
        }
        AccountType::ClaudeOauth => UpstreamAuth::Bearer(
            oauth::access_token(
                &shared.router,
                &shared.cipher,
                // The token endpoint is reached the way the account reaches the upstream.
                &clients.client(proxy)?,
                oauth::OauthUrls::of(&shared.config),
                account,
            )
            .await?,
        ),
    };
    Ok((auth, base.trim_end_matches('/')))
}

fn proxy_of(shared: &RelayShared, account: &Account) -> Result<Option<String>, AppError> {
    account
        .proxy_encrypted
        .as_deref()
        .filter(|p| !p.is_empty())
        .map(|p| {
            shared.cipher.open(p).map_err(|_| {
                AppError::Internal(format!(
                    "proxy of account {} cannot be decrypted",
                    account.id
                ))
            })
        })
        .transpose()
}

/// The account a request goes to: a place in the published account list (the account
/// is not copied for each request).
struct ChosenAccount {
    list: Arc<Vec<Account>>,
    index: usize,
}

impl std::ops::Deref for ChosenAccount {
    type Target = Account;

    fn deref(&self) -> &Account {
        &self.list[self.index]
    }
}

/// Picks the account and, when it has a `max_concurrency`, takes one of its slots (SPEC §6
/// field); a full account is skipped, a full dedicated account answers 429.
async fn choose_with_capacity(
    shared: &RelayShared,
    accounts: Arc<Vec<Account>>,
    key: &ApiKey,
    model: &str,
    sticky: Option<&str>,
) -> Result<(ChosenAccount, Choice, LeaseGuard), AppError> {
    // Ids of full accounts left out (rare).
    let mut full: Vec<String> = Vec::new();
    let busy = || AppError::RateLimited {
        message: "every upstream account that may serve this key is at its concurrency limit"
            .into(),
        retry_after_secs: 1,
    };
    loop {
        let candidates: Vec<Account>;
        let list: &[Account] = if full.is_empty() {
            &accounts
        } else {
            candidates = accounts
                .iter()
                .filter(|a| !full.contains(&a.id))
                .cloned()
                .collect();
            &candidates
        };
        let (account, choice) =
            match scheduler::choose(list, key, model, sticky, &shared.last_used, Utc::now()) {
                Ok(c) => c,
                Err(_) if !full.is_empty() => return Err(busy()),
                Err(e) => return Err(e),
            };
        let index = accounts
            .iter()
            .position(|a| a.id == account.id)
            .ok_or_else(|| AppError::Internal("chosen account not in the list".into()))?;
        let chosen = ChosenAccount {
            list: accounts.clone(),
            index,
        };
        let mut guard = LeaseGuard {
            router: shared.router.clone(),
            lease: None,
        };
        if chosen.max_concurrency <= 0 {
            return Ok((chosen, choice, guard));
        }
        let lease_id = uuid::Uuid::new_v4().simple().to_string();
        let scope = ["account:", chosen.id.as_str()].concat();
        let request = AdmissionRequest {
            lease_scope: scope.clone(),
            lease_id: lease_id.clone(),
            lease_ttl_ms: lease_ttl_ms(&shared.config),
            concurrency_limit: u32::try_from(chosen.max_concurrency).unwrap_or(0),
            window: None,
            cost_limits: Vec::new(),
        };
        let (answer, _, via_router) = shared
            .router
            .admit_for_request(request, None, Duration::ZERO)
            .await?;
        if answer == Admission::Granted {
            guard.lease = Some(LeaseRef {
                scope,
                lease_id,
                via_router,
            });
            return Ok((chosen, choice, guard));
        }
        if choice == Choice::Dedicated {
            return Err(busy());
        }
        full.push(chosen.id.clone());
    }
}

/// Everything needed to record one request's usage.
struct UsageContext {
    router: RouterHandle,
    prices: Arc<PriceTable>,
    config: Arc<Config>,
    key: Arc<ApiKey>,
    account_id: String,
    model: String,
    window_name: Option<limits::RateWindowName>,
    started: Instant,
    stream: bool,
    request_id: String,
    upstream_request_id: Option<String>,
    /// The account's daily quota in dollars (0: none), checked once the request is counted.
    daily_quota: f64,
}

impl UsageContext {
    /// Journals the request's usage before the answer's last byte goes out, then counts it
    /// (releasing the lease in the same round trip); without usage only the lease is
    /// released. An error means the usage could not be journaled and the answer must not
    /// be served (`USAGE_JOURNAL_FULL=reject`).
    fn record(
        self,
        usage: Option<Usage>,
        status: u16,
        lease: Option<LeaseRef>,
    ) -> Result<(), AppError> {
        let router = self.router.clone();
        let Some(usage) = usage else {
            if let Some(l) = lease {
                actix::spawn(async move { router.end_lease(&l).await });
            }
            return Ok(());
        };
        let cost = self.prices.cost(&self.model, &usage);
        let quota = (self.daily_quota > 0.0)
            .then(|| (self.account_id.clone(), self.daily_quota, cost.total_micro));
        let counters = CounterContext {
            opus: is_opus(&self.model),
            weekly_reset: (self.key.weekly_reset_day, self.key.weekly_reset_hour),
            rate_window: self.window_name.map(|w| (w.name, w.ttl_seconds)),
        };
        let event = UsageEvent {
            request_id: self.request_id,
            upstream_request_id: self.upstream_request_id,
            api_key_id: self.key.id.clone(),
            account_id: self.account_id,
            model: self.model,
            input_tokens: tokens(usage.input_tokens),
            output_tokens: tokens(usage.output_tokens),
            cache_create_5m_tokens: tokens(usage.cache_create_5m_tokens),
            cache_create_1h_tokens: tokens(usage.cache_create_1h_tokens),
            cache_read_tokens: tokens(usage.cache_read_tokens),
            cost_micros: cost.total_micro,
            status_code: status,
            is_stream: self.stream,
            latency_ms: u32::try_from(self.started.elapsed().as_millis()).unwrap_or(u32::MAX),
            created_at: Utc::now(),
        };
        match router.record_usage_releasing(event, counters, lease) {
            Ok(()) => {
                if let Some((id, quota, cost)) = quota {
                    subscription::check_daily_quota(
                        &router,
                        id,
                        quota,
                        cost,
                        self.config.timezone_offset_hours,
                    );
                }
                Ok(())
            }
            Err((e, lease)) => {
                let reject = self.config.journal_full == JournalFull::Reject;
                router.usage_not_journaled(reject);
                if let Some(l) = lease {
                    actix::spawn(async move { router.end_lease(&l).await });
                }
                if reject {
                    Err(e)
                } else {
                    log::error!("answer served without its usage (USAGE_JOURNAL_FULL=serve)");
                    Ok(())
                }
            }
        }
    }
}

/// Relays one request, sent in `dialect`, to the upstream and builds the answer.
pub async fn relay(
    shared: &RelayShared,
    clients: &UpstreamClients,
    req: &HttpRequest,
    body: Bytes,
    endpoint: Endpoint,
    dialect: Dialect,
) -> Result<HttpResponse, AppError> {
    let started = Instant::now();
    let config = &shared.config;
    let parsed = dialect
        .prepare(body)
        .and_then(|p| check_body(&p.facts).map(|()| p));
    let model = parsed.as_ref().ok().and_then(|p| p.facts.model.clone());
    let key = auth::authenticate(
        &shared.router,
        auth::extract_key(req),
        &config.api_key_prefix,
        &shared.encryption_key,
        model.as_deref(),
    )
    .await?;
    let Prepared {
        facts,
        tree,
        body,
        answer: format,
    } = parsed?;
    auth::check_client(&key, req, Some(&facts.marks))?;
    let model = model.unwrap_or_default();
    let stream = endpoint == Endpoint::Messages && facts.stream == Some(true);

    let mut guard = LeaseGuard {
        router: shared.router.clone(),
        lease: None,
    };
    let mut session = None;
    let mut sticky_account = None;
    let mut window_name = None;
    // The account list is published for the workers: reading it rarely waits.
    let snapshot = shared.router.scheduling_accounts();
    let accounts = if endpoint == Endpoint::Messages {
        let accounts = snapshot.await?;
        // A session that cannot change the choice (one account, or the key's own) is not
        // hashed, and has no entry read or written: for a key without limits, no round trip
        // before the upstream.
        if scheduler::sessions_matter(&accounts, &key) {
            session = match facts.marks.user_id.as_deref() {
                Some(user) => Some(scheduler::user_session_hash(user)),
                None => scheduler::session_hash(tree.get()?),
            };
        }
        // A lease is taken only under a concurrency limit: no id to make without one.
        let lease_id = if key.concurrency_limit > 0 {
            uuid::Uuid::new_v4().simple().to_string()
        } else {
            String::new()
        };
        let admission = admission_request(&key, &model, config, &lease_id);
        window_name = admission.window.as_ref().map(|w| limits::RateWindowName {
            name: w.name.clone(),
            ttl_seconds: w.ttl_seconds,
            resets_in_seconds: w.resets_in_seconds,
        });
        let scope = admission.lease_scope.clone();
        let sticky_entry = session.as_ref().map(|s| EntryKind::Sticky.name(s));
        // Kept for asking again from the concurrency queue.
        let retry = (shared.queue.enabled() && key.concurrency_limit > 0)
            .then(|| (admission.clone(), sticky_entry.clone()));
        // After a wait in the concurrency queue: a fresh account view.
        let mut refreshed = None;
        let (mut answer, mut sticky, mut via_router) = shared
            .router
            .admit_for_request(admission, sticky_entry, config.sticky_session_ttl)
            .await?;
        if answer == Admission::ConcurrencyExceeded
            && let Some((admission, sticky_entry)) = retry
        {
            (answer, sticky, via_router) =
                wait_for_slot(shared, &key.id, admission, sticky_entry).await?;
            refreshed = Some(shared.router.scheduling_accounts().await);
        }
        if let Some(e) = admission_error(answer) {
            return Err(e);
        }
        // Without a concurrency limit no lease was taken.
        guard.lease = (key.concurrency_limit > 0).then_some(LeaseRef {
            scope,
            lease_id,
            via_router,
        });
        sticky_account = sticky;
        match refreshed {
            Some(fresh) => fresh?,
            None => accounts,
        }
    } else {
        snapshot.await?
    };

    let (account, choice, account_lease) =
        choose_with_capacity(shared, accounts, &key, &model, sticky_account.as_deref()).await?;
    shared.last_used.touch(&account.id);
    // A session already bound to this account had its entry renewed by the admission.
    let bound = sticky_account.as_deref() == Some(account.id.as_str());
    if let (Some(s), Choice::Pool | Choice::Group, false) = (&session, choice, bound) {
        let (router, s, id, ttl) = (
            shared.router.clone(),
            s.clone(),
            account.id.clone(),
            config.sticky_session_ttl,
        );
        // Sticky sessions are off while Redis is down: a failure here is expected then.
        actix::spawn(async move {
            if let Err(e) = router.set_entry(EntryKind::Sticky, &s, id, ttl).await {
                log::debug!("sticky session not written (expected while Redis is down): {e}");
            }
        });
    }

    let proxy = proxy_of(shared, &account)?;
    // Only a proxied account needs reqwest here (direct ones go through hyper's client).
    let proxied = match proxy.as_deref() {
        Some(p) => Some(clients.client(Some(p))?),
        None => None,
    };
    let (upstream_auth, base) =
        upstream_target(shared, clients, proxy.as_deref(), &account).await?;
    let upstream_started = Instant::now();
    let (shaped_headers, body) = shape_for_account(config, req, &facts, &tree, &account, body)?;
    let no_headers = HeaderMap::new();
    let headers = match &shaped_headers {
        Some(shaped) => shaped,
        None if format.forwards_client_headers() => req.headers(),
        None => &no_headers,
    };
    let request = upstream::build_request(headers, &upstream_auth, body)?;
    let response = clients
        .send(proxied.as_ref(), base, endpoint.path(), request)
        .await
        .map_err(|e| {
            log::warn!("upstream request to account {} failed: {e}", account.id);
            match e {
                UpstreamError::Timeout => AppError::UpstreamTimeout,
                UpstreamError::Failed(_) => {
                    AppError::UpstreamUnreachable("the upstream API could not be reached".into())
                }
            }
        })?;

    let upstream_time = upstream_started.elapsed();
    let status = response.status;
    subscription::note_window(&shared.router, &account, &response.headers, Utc::now());
    let mut answer = HttpResponse::build(
        StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
    );
    for (name, value) in &response.headers {
        let n = name.as_str();
        if n == "content-type" || n == "retry-after" || n.starts_with("anthropic-ratelimit-") {
            answer.insert_header((n, value.as_bytes()));
        }
    }
    // The answer's `request-id` is the relay's (as in the access log and the usage row);
    // the upstream's own id is kept beside it.
    let upstream_request_id = response
        .headers
        .get("request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if let Some(id) = &upstream_request_id {
        answer.insert_header(("upstream-request-id", id.as_str()));
    }
    let usage_ctx = UsageContext {
        router: shared.router.clone(),
        prices: shared.prices.clone(),
        config: shared.config.clone(),
        key,
        account_id: account.id.clone(),
        model,
        window_name,
        started,
        stream,
        request_id: RequestId::of(req).0,
        upstream_request_id,
        daily_quota: account.daily_quota,
    };

    if !status.is_success() {
        let headers = &response.headers;
        let now = Utc::now();
        let reset = reset_from_headers(|n| headers.get(n).and_then(|v| v.to_str().ok()), now);
        let text = response.bytes().await.unwrap_or_default();
        let cooldown = cooldown_after_upstream(
            status.as_u16(),
            reset,
            &String::from_utf8_lossy(&text),
            &usage_ctx.model,
            &config.cooldowns,
            now,
        );
        let sticky = session.clone().filter(|_| choice == Choice::Sticky);
        match cooldown {
            Some(Cooldown::Family { family, until }) => {
                log::warn!(
                    "account {} rate limited for {} models until {until}",
                    account.id,
                    family.as_str()
                );
                let (router, id) = (shared.router.clone(), account.id.clone());
                actix::spawn(async move {
                    if let Err(e) = router.cool_model_family(&id, family, until).await {
                        log::warn!("cooldown of account {id} not stored: {e}");
                    }
                    if let Some(s) = sticky
                        && let Err(e) = router.delete_entry(EntryKind::Sticky, &s).await
                    {
                        log::debug!("sticky session not deleted: {e}");
                    }
                });
            }
            Some(Cooldown::Account(change)) => {
                log::warn!(
                    "account {} is now {} after upstream {}",
                    account.id,
                    change.status.as_str(),
                    status.as_u16()
                );
                let router = shared.router.clone();
                let id = account.id.clone();
                // A 401 on an OAuth account: the token is refreshed at once (SPEC §6); a
                // successful refresh makes the account usable again.
                let refresh = (status.as_u16() == 401
                    && account.account_type == AccountType::ClaudeOauth)
                    .then(|| clients.client(proxy.as_deref()).ok())
                    .flatten()
                    .map(|http| {
                        (
                            shared.cipher.clone(),
                            http,
                            shared.config.clone(),
                            Account::clone(&account),
                        )
                    });
                actix::spawn(async move {
                    if let Err(e) = router.change_account_status(&id, change).await {
                        log::warn!("account status not saved: {e}");
                    }
                    if let Some(s) = sticky
                        && let Err(e) = router.delete_entry(EntryKind::Sticky, &s).await
                    {
                        log::debug!("sticky session not deleted: {e}");
                    }
                    if let Some((cipher, http, config, account)) = refresh {
                        if let Err(e) = router
                            .delete_entry(EntryKind::OauthToken, &account.id)
                            .await
                        {
                            log::debug!("cached token not deleted: {e}");
                        }
                        if let Err(e) = oauth::refresh(
                            &router,
                            &cipher,
                            &http,
                            oauth::OauthUrls::of(&config),
                            &account,
                        )
                        .await
                        {
                            log::warn!(
                                "token refresh after 401 failed for account {}: {e}",
                                account.id
                            );
                        }
                    }
                });
            }
            None => {}
        }
        drop(guard);
        if format.is_translated() {
            answer.insert_header(("content-type", "application/json"));
        }
        return Ok(answer.body(format.upstream_error(status.as_u16(), text)));
    }

    if stream {
        let lease = guard.take();
        let code = status.as_u16();
        let finish = Box::new(move |usage: Option<Usage>, end: StreamEnd| {
            // The account's slot is held until the stream ends.
            drop(account_lease);
            if end != StreamEnd::Complete {
                log::info!("stream ended early ({end:?})");
            }
            usage_ctx.record(usage, code, lease)
        });
        let relay_stream = RelayStream::new(response.into_stream(), finish)
            .with_rewrite(format.stream_rewrite(Utc::now().timestamp()));
        observe(&shared.worker_metrics, started, upstream_time);
        return Ok(answer
            .insert_header(("cache-control", "no-cache"))
            .insert_header(("x-accel-buffering", "no"))
            .streaming(relay_stream));
    }

    let text = match response.bytes().await {
        Ok(t) => t,
        Err(e) => {
            log::warn!("upstream answer of account {} broke off: {e}", account.id);
            return Err(AppError::UpstreamUnreachable(
                "the upstream answer broke off".into(),
            ));
        }
    };
    let usage = if endpoint == Endpoint::Messages {
        Usage::from_response_bytes(&text)
    } else {
        None
    };
    let recorded = usage_ctx.record(usage, status.as_u16(), guard.take());
    drop(account_lease);
    recorded?;
    let text = format.success(text, Utc::now().timestamp())?;
    if format.is_translated() {
        answer.insert_header(("content-type", "application/json"));
    }
    observe(&shared.worker_metrics, started, upstream_started.elapsed());
    Ok(answer.body(text))
}

/// What the account changes in the request: its model mapping (the upstream's model name)
/// and custom user agent; and Claude Code shaping: on an OAuth account, a request from a
/// client other than Claude Code gets Claude Code's headers and system prompt
/// (`domain::shaping`). Otherwise the client's headers and body go as they came.
fn shape_for_account(
    config: &Config,
    req: &HttpRequest,
    facts: &RequestFacts,
    tree: &RequestTree,
    account: &Account,
    body: Bytes,
) -> Result<(Option<HeaderMap>, Bytes), AppError> {
    let value = |v: &str| {
        HeaderValue::from_str(v)
            .map_err(|_| AppError::Internal("a configured header value is not valid".into()))
    };
    let model = facts.model.as_deref().unwrap_or("");
    let mapped = account.upstream_model(model);
    let profile = config
        .claude_code_shaping
        .as_ref()
        .filter(|_| account.account_type == AccountType::ClaudeOauth)
        .filter(|_| {
            !client::is_claude_code(&ClientRequest {
                path: req.path(),
                headers: req.headers(),
                body: Some(&facts.marks),
            })
        });
    if profile.is_none() && mapped == model && account.user_agent.is_none() {
        return Ok((None, body));
    }
    // Shaping or a model mapping rewrites the body: only now is its tree needed.
    let request = tree.get()?;
    let mut headers = req.headers().clone();
    let mut shaped = match profile {
        Some(profile) => {
            let client_beta = headers
                .get("anthropic-beta")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let sdk_headers: Vec<HeaderName> = headers
                .keys()
                .filter(|k| k.as_str().starts_with("x-stainless-"))
                .cloned()
                .collect();
            for name in sdk_headers {
                headers.remove(name);
            }
            headers.insert(USER_AGENT, value(&profile.user_agent)?);
            headers.insert(HeaderName::from_static("x-app"), value("cli")?);
            headers.insert(
                HeaderName::from_static("anthropic-beta"),
                value(&profile.beta_with(client_beta.as_deref()))?,
            );
            headers.insert(
                HeaderName::from_static("anthropic-dangerous-direct-browser-access"),
                value("true")?,
            );
            Some(profile.shape_body(request))
        }
        None => None,
    };
    if let Some(ua) = account.user_agent.as_deref().filter(|u| !u.is_empty()) {
        headers.insert(USER_AGENT, value(ua)?);
    }
    if mapped != model {
        shaped.get_or_insert_with(|| request.clone())["model"] = Value::from(mapped);
    }
    let body = match shaped {
        Some(v) => Bytes::from(
            serde_json::to_vec(&v)
                .map_err(|e| AppError::Internal(format!("shaping the request body: {e}")))?,
        ),
        None => body,
    };
    Ok((Some(headers), body))
}

/// Relay overhead: the whole request so far minus the upstream's part.
fn observe(metrics: &WorkerMetrics, started: Instant, upstream: std::time::Duration) {
    metrics.observe_relay(started.elapsed().saturating_sub(upstream), upstream);
}
