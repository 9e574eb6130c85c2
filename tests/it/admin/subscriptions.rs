//! Subscription and console account limits (issue 13) through the admin API and the
//! relay: the 5-hour window of an OAuth account opened on the hour by the first request,
//! its status taken from the upstream's `anthropic-ratelimit-unified-5h-status`, shown as
//! CRS shows it and stored in MySQL; an account that stops on warning leaves rotation
//! until the window ends; a console account's daily quota in dollars takes it out of
//! rotation until the next local day.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use claude_relay::domain::account::{SessionWindow, WindowStatus, next_local_midnight};
use serde_json::{Value, json};

use super::{Admin, assert_field_error, start};
use crate::relay::harness::{SONNET, credential_of, request};
use crate::support::{Behaviour, eventually};

const STATUS: &str = "anthropic-ratelimit-unified-5h-status";

fn window_says(status: &str) -> Behaviour {
    Behaviour::WithHeaders(vec![(STATUS.into(), status.into())])
}

fn rfc(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Sends one Sonnet request with a new session; returns its status and the upstream
/// credential it went to.
async fn relay_once(admin: &Admin, key: &str) -> (u16, String) {
    let text = uuid::Uuid::new_v4().to_string();
    let resp = admin
        .app
        .client
        .post(admin.app.url("/api/v1/messages"))
        .header("x-api-key", key)
        .json(&request(SONNET, false, &text))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    assert!(status == 200 || status == 503, "{status} {body}");
    let last = admin
        .mock
        .received()
        .into_iter()
        .rev()
        .find(|r| r.path == "/v1/messages")
        .map(|r| credential_of(&r.headers))
        .unwrap_or_default();
    (status, last)
}

async fn account(admin: &Admin, id: &str) -> Value {
    let (status, body) = admin.get(&format!("/admin/claude-accounts/{id}")).await;
    assert_eq!(status, 200, "{body}");
    body["data"].clone()
}

/// Polls the account view until `check` accepts it.
async fn wait_view(admin: &Admin, id: &str, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    eventually(Duration::from_secs(10), what, || async {
        let v = account(admin, id).await;
        if check(&v) { Ok(v) } else { Err(v.to_string()) }
    })
    .await
}

async fn new_key(admin: &Admin) -> String {
    let (status, key) = admin.post("/admin/api-keys", &json!({"name": "k"})).await;
    assert_eq!(status, 200, "{key}");
    key["data"]["apiKey"].as_str().unwrap().to_string()
}

#[actix_rt::test]
async fn the_five_hour_window_is_tracked_shown_and_stops_an_account_on_warning() {
    let admin = start().await;
    let (status, max) = admin
        .post(
            "/admin/claude-accounts",
            &json!({"name": "max", "type": "claude-oauth", "accessToken": "sk-ant-oat01-max",
                    "expiresAt": 1893456000000i64, "priority": 1, "autoStopOnWarning": true}),
        )
        .await;
    assert_eq!(status, 200, "{max}");
    let max = &max["data"];
    let id = max["id"].as_str().unwrap().to_string();
    assert_eq!(max["autoStopOnWarning"], true);
    assert_eq!(max["fiveHourAutoStopped"], false);
    assert_eq!(
        max["sessionWindow"],
        json!({"hasActiveWindow": false, "windowStart": null, "windowEnd": null,
               "progress": 0, "remainingTime": null, "sessionWindowStatus": null})
    );
    let (status, _) = admin
        .post(
            "/admin/claude-accounts",
            &json!({"name": "backup", "type": "claude-console", "baseUrl": admin.mock.url,
                    "apiKey": "sk-backup", "priority": 50}),
        )
        .await;
    assert_eq!(status, 200);
    let key = new_key(&admin).await;

    // The first request opens the window on the hour; the upstream says `allowed`.
    admin.mock.set("sk-ant-oat01-max", window_says("allowed"));
    let before = Utc::now();
    assert_eq!(
        relay_once(&admin, &key).await,
        (200, "sk-ant-oat01-max".into())
    );
    let after = Utc::now();
    let v = wait_view(&admin, &id, "window opened", |v| {
        v["sessionWindow"]["sessionWindowStatus"] == "allowed"
    })
    .await;
    let start = SessionWindow::starting_at(before).start;
    let start = if rfc(start) == v["sessionWindow"]["windowStart"] {
        start
    } else {
        SessionWindow::starting_at(after).start
    };
    let end = start + chrono::Duration::hours(5);
    let w = &v["sessionWindow"];
    assert_eq!(
        (&w["hasActiveWindow"], &w["windowStart"], &w["windowEnd"]),
        (&json!(true), &json!(rfc(start)), &json!(rfc(end)))
    );
    let now = Utc::now();
    let progress = ((now - start).num_seconds() * 100 + 9000) / 18000;
    let remaining = ((end - now).num_seconds() + 30) / 60;
    assert!(
        (w["progress"].as_i64().unwrap() - progress).abs() <= 1,
        "progress {w}"
    );
    assert!(
        (w["remainingTime"].as_i64().unwrap() - remaining).abs() <= 1,
        "remaining {w}"
    );
    let row = |admin: &Admin| {
        admin.strings(&format!(
            "SELECT CONCAT_WS('|', DATE_FORMAT(session_window_start, '%Y-%m-%dT%H:%i:%s'), \
             DATE_FORMAT(session_window_end, '%Y-%m-%dT%H:%i:%s'), \
             IFNULL(session_window_status, '-'), auto_stop_on_warning) AS s \
             FROM claude_accounts WHERE id = '{id}'"
        ))
    };
    let hour = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S").to_string();
    assert_eq!(
        row(&admin),
        [format!("{}|{}|allowed|1", hour(start), hour(end))]
    );

    // The upstream warns: that answer is served, then the account sits out the window.
    admin
        .mock
        .set("sk-ant-oat01-max", window_says("allowed_warning"));
    assert_eq!(
        relay_once(&admin, &key).await,
        (200, "sk-ant-oat01-max".into())
    );
    let v = wait_view(&admin, &id, "warning stored", |v| {
        v["fiveHourAutoStopped"] == true
    })
    .await;
    assert_eq!(v["sessionWindow"]["sessionWindowStatus"], "allowed_warning");
    assert_eq!(
        v["sessionWindow"]["windowStart"],
        json!(rfc(start)),
        "same window"
    );
    assert_eq!(v["status"], "active");
    assert_eq!(
        row(&admin),
        [format!("{}|{}|allowed_warning|1", hour(start), hour(end))]
    );
    for _ in 0..3 {
        assert_eq!(relay_once(&admin, &key).await, (200, "sk-backup".into()));
    }

    // reset-status forgets the warning: the account is back.
    let (status, body) = admin
        .post(
            &format!("/admin/claude-accounts/{id}/reset-status"),
            &json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["fiveHourAutoStopped"], false);
    assert_eq!(
        body["data"]["sessionWindow"]["sessionWindowStatus"],
        Value::Null
    );
    admin.mock.set("sk-ant-oat01-max", Behaviour::Normal);
    eventually(Duration::from_secs(10), "max back", || async {
        match relay_once(&admin, &key).await {
            (200, c) if c == "sk-ant-oat01-max" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // Warned again, then the window ends: the next request opens a new window and the
    // account serves again.
    let warned_ended = SessionWindow {
        start: start - chrono::Duration::hours(6),
        end: start - chrono::Duration::hours(1),
        status: Some(WindowStatus::AllowedWarning),
    };
    let mut stored = admin.router().get_account(&id).await.unwrap().unwrap();
    stored.session_window = Some(warned_ended);
    admin.router().save_account(stored).await.unwrap();
    let v = account(&admin, &id).await;
    assert_eq!(
        v["sessionWindow"],
        json!({"hasActiveWindow": false, "windowStart": rfc(warned_ended.start),
               "windowEnd": rfc(warned_ended.end), "progress": 100, "remainingTime": 0,
               "sessionWindowStatus": "allowed_warning"})
    );
    assert_eq!(v["fiveHourAutoStopped"], false);
    eventually(
        Duration::from_secs(10),
        "max serves after the window",
        || async {
            match relay_once(&admin, &key).await {
                (200, c) if c == "sk-ant-oat01-max" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    let v = wait_view(&admin, &id, "new window", |v| {
        v["sessionWindow"]["hasActiveWindow"] == true
    })
    .await;
    let now_start = SessionWindow::starting_at(Utc::now()).start;
    assert!(
        v["sessionWindow"]["windowStart"] == json!(rfc(now_start))
            || v["sessionWindow"]["windowStart"] == json!(rfc(start)),
        "{v}"
    );
    assert_eq!(v["sessionWindow"]["sessionWindowStatus"], Value::Null);

    // Bad input changes nothing.
    let before = admin.router().get_account(&id).await.unwrap().unwrap();
    assert_field_error(
        &admin
            .put(
                &format!("/admin/claude-accounts/{id}"),
                &json!({"autoStopOnWarning": "yes"}),
            )
            .await,
        "autoStopOnWarning",
    );
    assert_eq!(
        admin.router().get_account(&id).await.unwrap().unwrap(),
        before
    );
    let (status, body) = admin
        .put(
            &format!("/admin/claude-accounts/{id}"),
            &json!({"autoStopOnWarning": false}),
        )
        .await;
    assert_eq!(
        (status, &body["data"]["autoStopOnWarning"]),
        (200, &json!(false))
    );
}

#[actix_rt::test]
async fn a_console_account_at_its_daily_quota_leaves_rotation_until_the_next_day() {
    let admin = start().await;
    // Each request costs $0.00069 (the mock's usage on Sonnet 4): the second reaches $0.001.
    let (status, a) = admin
        .post(
            "/admin/claude-console-accounts",
            &json!({"name": "quota", "apiUrl": admin.mock.url, "apiKey": "sk-quota",
                    "priority": 1, "dailyQuota": 0.001}),
        )
        .await;
    assert_eq!(status, 200, "{a}");
    let id = a["data"]["id"].as_str().unwrap().to_string();
    assert_eq!(
        (&a["data"]["dailyQuota"], &a["data"]["dailyUsage"]),
        (&json!(0.001), &json!(0.0))
    );
    let (status, _) = admin
        .post(
            "/admin/claude-console-accounts",
            &json!({"name": "spare", "apiUrl": admin.mock.url, "apiKey": "sk-spare",
                    "priority": 50}),
        )
        .await;
    assert_eq!(status, 200);
    let key = new_key(&admin).await;

    assert_eq!(relay_once(&admin, &key).await, (200, "sk-quota".into()));
    wait_view(&admin, &id, "first request counted", |v| {
        v["dailyUsage"] == json!(0.00069)
    })
    .await;
    assert_eq!(account(&admin, &id).await["status"], "active");
    assert_eq!(relay_once(&admin, &key).await, (200, "sk-quota".into()));
    let v = wait_view(&admin, &id, "quota reached", |v| {
        v["status"] == "quota_exceeded"
    })
    .await;
    let offset = admin.app.config.timezone_offset_hours;
    let until = next_local_midnight(Utc::now(), offset);
    assert_eq!(v["statusUntil"], json!(rfc(until)));
    assert_eq!(v["dailyUsage"], json!(0.00138));
    assert_eq!(v["errorMessage"], "daily quota reached: $0.0014 of $0.0010");
    assert_eq!(
        admin.strings(&format!(
            "SELECT CONCAT_WS('|', status, daily_quota) AS s FROM claude_accounts WHERE id = '{id}'"
        )),
        ["quota_exceeded|0.001"]
    );
    // The list shows today's usage of every account.
    let (_, list) = admin.get("/admin/claude-console-accounts").await;
    let usage: Vec<(String, f64)> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().to_string(),
                a["dailyUsage"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        usage,
        [("quota".to_string(), 0.00138), ("spare".to_string(), 0.0)]
    );
    for _ in 0..2 {
        assert_eq!(relay_once(&admin, &key).await, (200, "sk-spare".into()));
    }

    // Bad quotas are refused and change nothing.
    for bad in [json!(-1), json!("lots"), json!(true)] {
        assert_field_error(
            &admin
                .put(
                    &format!("/admin/claude-accounts/{id}"),
                    &json!({"dailyQuota": bad}),
                )
                .await,
            "dailyQuota",
        );
    }
    assert_eq!(account(&admin, &id).await["dailyQuota"], json!(0.001));

    // A new quota puts it back in rotation; the next counted request decides again.
    let (status, body) = admin
        .put(
            &format!("/admin/claude-accounts/{id}"),
            &json!({"dailyQuota": 5}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["data"]["status"], &body["data"]["dailyQuota"]),
        (&json!("active"), &json!(5.0))
    );
    eventually(Duration::from_secs(10), "quota account back", || async {
        match relay_once(&admin, &key).await {
            (200, c) if c == "sk-quota" => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}
