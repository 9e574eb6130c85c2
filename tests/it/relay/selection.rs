//! Account selection (SPEC §6): priority, least recently used, sticky sessions, dedicated
//! keys, upstream rate limits with a reset time, and OAuth token refresh.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use chrono::{DateTime, Utc};
use claude_relay::actors::router::EntryKind;
use claude_relay::domain::account::{AccountStatus, StatusChange};
use claude_relay::relay::scheduler::session_hash;
use futures_util::future::join_all;
use serde_json::Value;

use super::harness::{Relay, SONNET, credential_of, error_body, request, session_request, start};
use crate::support::fixtures::{oauth_account, store_account};
use crate::support::{Behaviour, eventually};

/// Sends `n` requests, each of a session of its own (first message `{tag} {i}`); returns
/// the upstream credential of each.
async fn credentials_of_requests(
    relay: &Relay,
    plaintext: &str,
    tag: &str,
    n: usize,
) -> Vec<String> {
    let mut seen = Vec::new();
    for i in 0..n {
        let (status, _, body) = relay
            .message(plaintext, &request(SONNET, false, &format!("{tag} {i}")))
            .await;
        assert_eq!(status, 200, "{body}");
        seen.push(relay.last_credential());
    }
    seen
}

/// Waits until the account's stored status is `want`; returns it.
async fn wait_status(
    relay: &Relay,
    id: &str,
    want: AccountStatus,
) -> claude_relay::domain::account::Account {
    eventually(
        Duration::from_secs(10),
        &format!("account {want:?}"),
        || async {
            let a = relay.router().get_account(id).await.unwrap().unwrap();
            let snapshot = relay.router().account_snapshot().await.unwrap();
            let in_snapshot = snapshot
                .iter()
                .any(|s| s.id == id && s.status == want && s.status_until == a.status_until);
            if a.status == want && in_snapshot {
                Ok(a)
            } else {
                Err(format!("{:?} until {:?}", a.status, a.status_until))
            }
        },
    )
    .await
}

/// Waits until the sticky entry of `body`'s session is `want` (an account id or none).
async fn wait_sticky(relay: &Relay, body: &Value, want: Option<&str>) {
    let hash = session_hash(body).expect("a session");
    eventually(Duration::from_secs(10), "sticky entry", || async {
        let got = relay
            .router()
            .get_entry(EntryKind::Sticky, &hash)
            .await
            .map_err(|e| e.to_string())?;
        if got.as_deref() == want {
            Ok(())
        } else {
            Err(format!("{got:?}"))
        }
    })
    .await;
}

fn rate_limited(reset: DateTime<Utc>) -> Behaviour {
    Behaviour::Fail {
        status: 429,
        body: r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your rate limit"}}"#.into(),
        headers: vec![(
            "anthropic-ratelimit-unified-reset".into(),
            reset.timestamp().to_string(),
        )],
    }
}

#[actix_rt::test]
async fn lower_priority_value_is_chosen_first() {
    let relay = start(|_| {}).await;
    relay.console("second", "sk-second", 20).await;
    let first = relay.console("first", "sk-first", 5).await;
    relay.console("third", "sk-third", 50).await;
    let (_, plaintext) = relay.key(|_| {}).await;

    assert_eq!(
        credentials_of_requests(&relay, &plaintext, "batch 1", 4).await,
        vec!["sk-first"; 4]
    );
    // Once the first is out of service, the next priority takes over.
    relay
        .router()
        .change_account_status(
            &first.id,
            StatusChange {
                status: AccountStatus::Error,
                until: None,
                message: "test".into(),
            },
        )
        .await
        .unwrap();
    wait_status(&relay, &first.id, AccountStatus::Error).await;
    assert_eq!(
        credentials_of_requests(&relay, &plaintext, "batch 2", 2).await,
        vec!["sk-second"; 2]
    );
}

#[actix_rt::test]
async fn equal_priorities_alternate_least_recently_used_first() {
    let relay = start(|_| {}).await;
    relay.console("a", "sk-a", 10).await;
    relay.console("b", "sk-b", 10).await;
    let (_, plaintext) = relay.key(|_| {}).await;

    let seen = credentials_of_requests(&relay, &plaintext, "batch 3", 6).await;
    assert_ne!(seen[0], seen[1], "{seen:?}");
    let (x, y) = (seen[0].clone(), seen[1].clone());
    assert_eq!(seen, vec![x.clone(), y.clone(), x.clone(), y.clone(), x, y]);
}

#[actix_rt::test]
async fn sticky_session_is_kept_and_dropped_when_its_account_is_rate_limited() {
    let relay = start(|_| {}).await;
    let a = relay.console("a", "sk-a", 10).await;
    let b = relay.console("b", "sk-b", 10).await;
    let (_, plaintext) = relay.key(|_| {}).await;
    let id_of = |cred: &str| if cred == "sk-a" { &a.id } else { &b.id };

    let session = session_request("user_session_1", "first");
    let (status, _, _) = relay.message(&plaintext, &session).await;
    assert_eq!(status, 200);
    let home = relay.last_credential();
    let other = if home == "sk-a" { "sk-b" } else { "sk-a" };
    wait_sticky(&relay, &session, Some(id_of(&home))).await;

    // The same session stays on its account, even when LRU would pick the other one.
    for text in ["second", "third"] {
        let (status, _, _) = relay
            .message(&plaintext, &session_request("user_session_1", text))
            .await;
        assert_eq!(status, 200);
        assert_eq!(relay.last_credential(), home);
    }
    let (status, _, _) = relay
        .message(&plaintext, &session_request("user_session_2", "x"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(relay.last_credential(), other, "another session: LRU");
    let (status, _, _) = relay
        .message(&plaintext, &session_request("user_session_1", "fourth"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(relay.last_credential(), home);

    // Its account is rate-limited: the 429 goes to the client, the mapping is dropped…
    let reset = Utc::now() + chrono::Duration::hours(1);
    relay.mock.set(&home, rate_limited(reset));
    let (status, _, body) = relay
        .message(&plaintext, &session_request("user_session_1", "fifth"))
        .await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["type"], "rate_limit_error");
    // (A Sonnet 429: the account's Sonnet family waits for the reset.)
    assert_eq!(
        super::cooldowns::wait_cooldown(&relay, id_of(&home), "sonnet").await,
        DateTime::from_timestamp(reset.timestamp(), 0).unwrap()
    );
    wait_sticky(&relay, &session, None).await;

    // …and the session's next request goes to the other account, which it then keeps.
    let before = relay.mock.message_count();
    for text in ["sixth", "seventh"] {
        let (status, _, _) = relay
            .message(&plaintext, &session_request("user_session_1", text))
            .await;
        assert_eq!(status, 200);
        assert_eq!(relay.last_credential(), other);
    }
    assert_eq!(relay.mock.message_count(), before + 2);
    wait_sticky(&relay, &session, Some(id_of(other))).await;
}

/// The stored sticky entry of `body`'s session, read once.
async fn sticky_of(relay: &Relay, body: &Value) -> Option<String> {
    let hash = session_hash(body).expect("a session");
    relay
        .router()
        .get_entry(EntryKind::Sticky, &hash)
        .await
        .unwrap()
}

#[actix_rt::test]
async fn a_session_binds_only_when_it_can_change_the_account() {
    let relay = start(|_| {}).await;
    let only = relay.console("only", "sk-only", 10).await;
    let (_, free) = relay.key(|_| {}).await;
    let (_, dedicated) = relay
        .key(|k| k.claude_account_id = Some(only.id.clone()))
        .await;

    // One account: the session's requests go to it and bind nothing.
    let alone = session_request("user_alone", "first");
    for text in ["first", "second"] {
        let (status, _, body) = relay
            .message(&free, &session_request("user_alone", text))
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(relay.last_credential(), "sk-only");
    }

    // Two accounts: a session of the pool binds to the one that served it…
    let second = relay.console("second", "sk-second", 10).await;
    let pooled = session_request("user_pooled", "first");
    eventually(
        Duration::from_secs(10),
        "the second account in the list",
        || async {
            let snapshot = relay.router().scheduling_accounts().await.unwrap();
            if snapshot.iter().any(|a| a.id == second.id) {
                Ok(())
            } else {
                Err(format!("{} accounts", snapshot.len()))
            }
        },
    )
    .await;
    let (status, _, _) = relay.message(&free, &pooled).await;
    assert_eq!(status, 200);
    let served = if relay.last_credential() == "sk-only" {
        &only.id
    } else {
        &second.id
    };
    wait_sticky(&relay, &pooled, Some(served)).await;
    // …a key with its own account binds nothing, as the lone account bound nothing (its
    // writes would have landed before the pooled session's).
    let owned = session_request("user_owned", "first");
    let (status, _, _) = relay.message(&dedicated, &owned).await;
    assert_eq!(status, 200);
    assert_eq!(relay.last_credential(), "sk-only");
    let (status, _, _) = relay
        .message(&free, &session_request("user_pooled", "again"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(sticky_of(&relay, &owned).await, None);
    assert_eq!(sticky_of(&relay, &alone).await, None);
}

#[actix_rt::test]
async fn dedicated_key_gets_503_when_its_account_is_unavailable() {
    let relay = start(|_| {}).await;
    let dedicated = relay.console("dedicated", "sk-dedicated", 50).await;
    relay.console("pool", "sk-pool", 1).await;
    let (bound_key, bound) = relay
        .key(|k| k.claude_account_id = Some(dedicated.id.clone()))
        .await;
    let (_, free) = relay.key(|_| {}).await;

    let (status, _, _) = relay
        .message(&bound, &request(SONNET, false, "Hello"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(relay.last_credential(), "sk-dedicated");

    relay
        .router()
        .change_account_status(
            &dedicated.id,
            StatusChange {
                status: AccountStatus::TempUnavailable,
                until: Some(Utc::now() + chrono::Duration::minutes(10)),
                message: "test".into(),
            },
        )
        .await
        .unwrap();
    wait_status(&relay, &dedicated.id, AccountStatus::TempUnavailable).await;

    let (status, _, body) = relay
        .message(&bound, &request(SONNET, false, "Hello again"))
        .await;
    assert_eq!(
        (status, body),
        (
            503,
            error_body(
                "api_error",
                "the dedicated account of this API key is unavailable"
            )
        )
    );
    assert_eq!(relay.mock.message_count(), 1, "no fallback to the pool");
    relay.wait_no_leases(&bound_key).await;
    // Unbound keys still use the pool.
    let (status, _, _) = relay.message(&free, &request(SONNET, false, "Hi")).await;
    assert_eq!(status, 200);
    assert_eq!(relay.last_credential(), "sk-pool");
}

#[actix_rt::test]
async fn rate_limited_account_is_skipped_until_its_reset_time() {
    let relay = start(|_| {}).await;
    let preferred = relay.console("preferred", "sk-preferred", 1).await;
    relay.console("backup", "sk-backup", 50).await;
    let (_, plaintext) = relay.key(|_| {}).await;

    // Whole seconds (the header's unit), far enough ahead to check the skip first.
    let reset = DateTime::from_timestamp(Utc::now().timestamp() + 6, 0).unwrap();
    relay.mock.set("sk-preferred", rate_limited(reset));
    let (status, _, body) = relay
        .message(&plaintext, &request(SONNET, false, "one"))
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        super::cooldowns::wait_cooldown(&relay, &preferred.id, "sonnet").await,
        reset
    );

    // The upstream would answer again, but the account waits for its reset time.
    relay.mock.set("sk-preferred", Behaviour::Normal);
    assert_eq!(
        credentials_of_requests(&relay, &plaintext, "batch 4", 2).await,
        vec!["sk-backup"; 2]
    );
    assert!(Utc::now() < reset, "the check ran before the reset");

    // Polled: every request goes to the backup until the reset time, then to the preferred
    // account again.
    let mut polls = 0;
    eventually(
        Duration::from_secs(20),
        "the preferred account back after its reset",
        || {
            polls += 1;
            let tag = format!("batch 5.{polls}");
            let relay = &relay;
            let plaintext = plaintext.as_str();
            async move {
                let before = Utc::now();
                let seen = credentials_of_requests(relay, plaintext, &tag, 1).await;
                match seen[0].as_str() {
                    "sk-preferred" => Ok(()),
                    "sk-backup" => Err(format!("backup at {before}, reset {reset}")),
                    other => panic!("{other} chosen at {before}, reset {reset}"),
                }
            }
        },
    )
    .await;
    assert!(Utc::now() >= reset, "the preferred account came back early");
}

#[actix_rt::test]
async fn oauth_token_is_refreshed_once_under_20_concurrent_requests() {
    let relay = start(|_| {}).await;
    let account = store_account(
        relay.router(),
        oauth_account(
            &relay.app.config,
            "oauth",
            "sk-ant-oat01-expired",
            "sk-ant-ort01-original",
            Utc::now() - chrono::Duration::hours(1),
            10,
        ),
    )
    .await;
    let (_, plaintext) = relay.key(|_| {}).await;

    let requests = (0..20).map(|i| {
        let body = request(SONNET, false, &format!("concurrent {i}"));
        let plaintext = plaintext.clone();
        let relay = &relay;
        async move { relay.message(&plaintext, &body).await }
    });
    for (i, (status, _, body)) in join_all(requests).await.into_iter().enumerate() {
        assert_eq!(status, 200, "request {i}: {body}");
    }
    assert_eq!(relay.mock.token_refreshes(), 1);
    let received = relay.mock.received();
    assert_eq!(received.len(), 20);
    for r in &received {
        assert_eq!(credential_of(&r.headers), "sk-ant-oat01-refreshed-1");
        // Not a Claude Code request on an OAuth account: Claude Code's beta flags (with the
        // OAuth one) are sent (Claude Code shaping, issue 13).
        assert_eq!(
            r.headers.get("anthropic-beta").map(String::as_str),
            Some(claude_relay::domain::shaping::DEFAULT_BETA)
        );
        assert!(claude_relay::domain::shaping::DEFAULT_BETA.contains("oauth-2025-04-20"));
        assert_eq!(r.headers.get("x-api-key"), None);
    }
    let stored = relay
        .router()
        .get_account(&account.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, AccountStatus::Active);
    let expires = stored.token_expires_at.expect("expiry");
    assert!(
        expires > Utc::now() + chrono::Duration::hours(7),
        "{expires}"
    );
}

#[actix_rt::test]
async fn failed_oauth_refresh_puts_the_account_in_error_and_answers_503() {
    let relay = start(|_| {}).await;
    let account = store_account(
        relay.router(),
        oauth_account(
            &relay.app.config,
            "oauth",
            "sk-ant-oat01-expired",
            "sk-ant-ort01-revoked",
            Utc::now() - chrono::Duration::hours(1),
            10,
        ),
    )
    .await;
    relay.mock.set_token_status(400);
    let (key, plaintext) = relay.key(|_| {}).await;

    let (status, _, body) = relay
        .message(&plaintext, &request(SONNET, false, "Hello"))
        .await;
    assert_eq!(
        (status, body),
        (
            503,
            error_body(
                "api_error",
                "upstream account unavailable: token refresh failed"
            )
        )
    );
    let stored = wait_status(&relay, &account.id, AccountStatus::Error).await;
    assert_eq!(stored.error_message, "token refresh failed");
    assert_eq!(relay.mock.token_refreshes(), 1);

    // The account is out of the pool now: no new refresh attempt, no upstream call.
    let (status, _, body) = relay
        .message(&plaintext, &request(SONNET, false, "Hello again"))
        .await;
    assert_eq!(
        (status, body),
        (
            503,
            error_body("api_error", "no upstream account is available")
        )
    );
    assert_eq!(relay.mock.token_refreshes(), 1);
    assert_eq!(relay.mock.message_count(), 0);
    relay.wait_no_leases(&key).await;
}

#[actix_rt::test]
async fn upstream_failures_put_the_account_aside_with_the_spec_cooldowns() {
    let relay = start(|_| {}).await;
    let cases = [
        (
            529u16,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            AccountStatus::TempUnavailable,
            Some(10),
        ),
        (
            500,
            r#"{"type":"error","error":{"type":"api_error","message":"Internal server error"}}"#,
            AccountStatus::TempUnavailable,
            Some(2),
        ),
        (
            401,
            r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
            AccountStatus::Unauthorized,
            Some(30),
        ),
        (
            403,
            r#"{"type":"error","error":{"type":"permission_error","message":"This organization has been disabled."}}"#,
            AccountStatus::Blocked,
            None,
        ),
    ];
    let mut accounts = Vec::new();
    for (i, (status, body, _, _)) in cases.iter().enumerate() {
        let credential = format!("sk-fails-{status}");
        let account = relay.console(&credential, &credential, 1 + i as i32).await;
        relay.mock.set(
            &credential,
            Behaviour::Fail {
                status: *status,
                body: body.to_string(),
                headers: vec![],
            },
        );
        accounts.push(account);
    }
    relay.console("healthy", "sk-healthy", 90).await;
    let (_, plaintext) = relay.key(|_| {}).await;

    // Each request meets the best account still in the pool, gets its error unchanged,
    // and puts that account aside for the next one.
    for (i, (status, body, want, minutes)) in cases.iter().enumerate() {
        let before = Utc::now();
        let resp = relay
            .post(
                "/api/v1/messages",
                Some(&plaintext),
                &request(SONNET, false, &format!("failure {i}")),
            )
            .await;
        assert_eq!(resp.status().as_u16(), *status);
        assert_eq!(resp.text().await.unwrap(), *body);
        assert_eq!(relay.last_credential(), format!("sk-fails-{status}"));
        let account = wait_status(&relay, &accounts[i].id, *want).await;
        match minutes {
            Some(m) => {
                let until = account.status_until.expect("a timed state");
                let expected = before + chrono::Duration::minutes(*m);
                assert!(
                    until >= expected && until <= Utc::now() + chrono::Duration::minutes(*m),
                    "{status}: until {until}, expected about {expected}"
                );
            }
            None => assert_eq!(account.status_until, None, "{status}"),
        }
    }
    let (status, _, _) = relay
        .message(&plaintext, &request(SONNET, false, "after the failures"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(relay.last_credential(), "sk-healthy");
}

#[actix_rt::test]
async fn upstream_401_on_an_oauth_account_refreshes_its_token_at_once() {
    let relay = start(|_| {}).await;
    let account = store_account(
        relay.router(),
        oauth_account(
            &relay.app.config,
            "oauth",
            "sk-ant-oat01-revoked",
            "sk-ant-ort01-original",
            Utc::now() + chrono::Duration::hours(5),
            10,
        ),
    )
    .await;
    relay.mock.set(
        "sk-ant-oat01-revoked",
        Behaviour::Fail {
            status: 401,
            body: r#"{"type":"error","error":{"type":"authentication_error","message":"invalid token"}}"#.into(),
            headers: vec![],
        },
    );
    let (_, plaintext) = relay.key(|_| {}).await;
    let (status, _, _) = relay
        .message(&plaintext, &request(SONNET, false, "first"))
        .await;
    assert_eq!(status, 401);
    // The refresh runs right after the 401 and makes the account usable again.
    let refreshed = eventually(
        Duration::from_secs(10),
        "account refreshed and active",
        || async {
            let a = relay
                .router()
                .get_account(&account.id)
                .await
                .unwrap()
                .unwrap();
            if a.status == AccountStatus::Active && a.last_refresh_at.is_some() {
                Ok(a)
            } else {
                Err(format!("status {:?}", a.status))
            }
        },
    )
    .await;
    assert_eq!(relay.mock.token_refreshes(), 1);
    assert!(refreshed.token_expires_at.unwrap() > Utc::now() + chrono::Duration::hours(7));
    let (status, _, _) = relay
        .message(&plaintext, &request(SONNET, false, "second"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(relay.last_credential(), "sk-ant-oat01-refreshed-1");
}

#[actix_rt::test]
async fn an_account_at_its_max_concurrency_is_skipped_and_its_slot_returns() {
    let relay = start(|_| {}).await;
    let mut busy = relay.console("busy", "sk-busy", 1).await;
    busy.max_concurrency = 1;
    relay.router().save_account(busy.clone()).await.unwrap();
    relay.console("spare", "sk-spare", 2).await;
    let gate = Arc::new(Semaphore::new(0));
    relay
        .mock
        .set("sk-busy", Behaviour::Gated { gate: gate.clone() });
    let (_, plaintext) = relay.key(|_| {}).await;
    let (_, dedicated) = relay
        .key(|k| k.claude_account_id = Some(busy.id.clone()))
        .await;

    // A stream holds the only slot of the preferred account.
    let mut held = relay
        .post(
            "/api/v1/messages",
            Some(&plaintext),
            &request(SONNET, true, "held"),
        )
        .await;
    assert_eq!(held.status(), 200);
    assert!(held.chunk().await.unwrap().is_some(), "first event arrived");
    let scope = format!("account:{}", busy.id);
    assert_eq!(relay.router().count_leases(&scope).await.unwrap(), 1);

    // The next request goes to the other account; the dedicated key has no other: 429.
    let (status, _, body) = relay
        .message(&plaintext, &request(SONNET, false, "next"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(relay.last_credential(), "sk-spare");
    let (status, retry, body) = relay
        .message(&dedicated, &request(SONNET, false, "bound"))
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(body["error"]["type"], "rate_limit_error");

    // The stream ends: the slot comes back.
    gate.add_permits(100);
    while held.chunk().await.unwrap().is_some() {}
    eventually(Duration::from_secs(5), "account slot released", || async {
        match relay.router().count_leases(&scope).await {
            Ok(0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    relay.mock.set("sk-busy", Behaviour::Normal);
    let (status, _, body) = relay
        .message(&dedicated, &request(SONNET, false, "again"))
        .await;
    assert_eq!(status, 200, "{body}");
}
