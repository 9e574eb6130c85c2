//! Account upkeep after an upstream answer: the 5-hour usage window of a subscription
//! (OAuth) account, opened by the first request after the previous one ended and told its
//! status by the upstream's `anthropic-ratelimit-unified-5h-status`; and the daily quota of
//! a console account, checked against the cost the relay counted for it today. Both are
//! written off the hot path (spawned) and only when something changes.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::actors::router::RouterHandle;
use crate::domain::account::{
    Account, AccountStatus, AccountType, SessionWindow, StatusChange, WindowStatus,
    account_day_counter, next_local_midnight, quota_reached,
};

/// The header the upstream reports the 5-hour window's state in.
pub const WINDOW_STATUS_HEADER: &str = "anthropic-ratelimit-unified-5h-status";

/// Notes a request on `account` answered with `headers` at `now`: a new window when none
/// is running, the upstream's status when it changed.
pub fn note_window(
    router: &RouterHandle,
    account: &Account,
    headers: &reqwest::header::HeaderMap,
    now: DateTime<Utc>,
) {
    if account.account_type != AccountType::ClaudeOauth {
        return;
    }
    let status = headers
        .get(WINDOW_STATUS_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(WindowStatus::parse);
    if SessionWindow::after_request(account.session_window.as_ref(), now, status).is_none() {
        return;
    }
    if status == Some(WindowStatus::AllowedWarning) && account.auto_stop_on_warning {
        log::warn!(
            "account {} is near its 5-hour limit: out of rotation until the window ends",
            account.id
        );
    }
    let (router, id) = (router.clone(), account.id.clone());
    actix::spawn(async move {
        let patch = Arc::new(move |a: &mut Account| {
            match SessionWindow::after_request(a.session_window.as_ref(), now, status) {
                Some(w) => {
                    a.session_window = Some(w);
                    true
                }
                None => false,
            }
        });
        if let Err(e) = router.patch_account(&id, patch).await {
            log::warn!("5-hour window of account {id} not stored: {e}");
        }
    });
}

/// After a request of a console account with a daily quota was counted (`cost_micros`
/// its cost): when its cost today reached the quota, the account leaves rotation until
/// the next local day. The request is counted a moment later (off the hot path), so when
/// only it can have reached the quota, its count is waited for (at most 2 s).
pub fn check_daily_quota(
    router: &RouterHandle,
    account_id: String,
    quota: f64,
    cost_micros: i64,
    offset_hours: i32,
) {
    let router = router.clone();
    actix::spawn(async move {
        let now = Utc::now();
        let name = account_day_counter(&account_id, now, offset_hours);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        let spent = loop {
            let spent = match router.read_counters(vec![name.clone()]).await {
                Ok(v) => v.first().map_or(0, |c| c.cost_micros),
                Err(e) => {
                    log::debug!("daily quota of account {account_id} not checked: {e}");
                    return;
                }
            };
            let maybe_uncounted = quota_reached(quota, spent.saturating_add(cost_micros));
            if quota_reached(quota, spent)
                || !maybe_uncounted
                || tokio::time::Instant::now() >= deadline
            {
                break spent;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        if !quota_reached(quota, spent) {
            return;
        }
        let dollars = spent as f64 / 1_000_000.0;
        let change = StatusChange {
            status: AccountStatus::QuotaExceeded,
            until: Some(next_local_midnight(now, offset_hours)),
            message: format!("daily quota reached: ${dollars:.4} of ${quota:.4}"),
        };
        log::warn!("account {account_id}: {}", change.message);
        if let Err(e) = router.change_account_status(&account_id, change).await {
            log::warn!("quota stop of account {account_id} not stored: {e}");
        }
    });
}
