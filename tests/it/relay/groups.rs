//! Keys bound to an account group (issue 13): served by the group's accounts only, by
//! priority then least recently used, with sticky sessions; 503 when none is available.

use std::time::Duration;

use chrono::Utc;
use claude_relay::domain::account::{Account, AccountStatus, StatusChange};
use claude_relay::domain::group::AccountGroup;

use super::harness::{Relay, SONNET, error_body, request, session_request, start};
use crate::support::eventually;
use crate::support::fixtures::{console_account, store_account};

async fn group(relay: &Relay, name: &str) -> AccountGroup {
    let now = Utc::now();
    relay
        .router()
        .save_group(AccountGroup {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.into(),
            description: String::new(),
            platform: "claude".into(),
            created_at: now,
            updated_at: now,
        })
        .await
        .unwrap()
}

/// A console account on the mock in `group`, scope `group` (not in the shared pool).
async fn member(relay: &Relay, group: &AccountGroup, credential: &str, priority: i32) -> Account {
    let mut a = console_account(
        &relay.app.config,
        credential,
        &relay.mock.url,
        credential,
        priority,
    );
    a.scope = "group".into();
    a.group_ids = vec![group.id.clone()];
    store_account(relay.router(), a).await
}

async fn credential_of(relay: &Relay, key: &str, body: &serde_json::Value) -> String {
    let (status, _, answer) = relay.message(key, body).await;
    assert_eq!(status, 200, "{answer}");
    relay.last_credential()
}

#[actix_rt::test]
async fn a_group_key_uses_only_the_group_by_priority_lru_and_sticky_sessions() {
    let relay = start(|_| {}).await;
    let g = group(&relay, "team").await;
    let other = group(&relay, "other").await;
    let a = member(&relay, &g, "sk-group-a", 10).await;
    member(&relay, &g, "sk-group-b", 10).await;
    member(&relay, &g, "sk-group-low", 90).await;
    member(&relay, &other, "sk-other-group", 1).await;
    relay.console("pool", "sk-pool", 1).await;
    let (_, bound) = relay
        .key(|k| k.claude_account_id = Some(format!("group:{}", g.id)))
        .await;
    let (_, free) = relay.key(|_| {}).await;

    let mut seen = Vec::new();
    for i in 0..4 {
        seen.push(credential_of(&relay, &bound, &request(SONNET, false, &format!("g {i}"))).await);
    }
    let (x, y) = (seen[0].clone(), seen[1].clone());
    assert_ne!(x, y, "{seen:?}");
    assert!(
        ["sk-group-a", "sk-group-b"].contains(&x.as_str()),
        "{seen:?}"
    );
    assert!(
        ["sk-group-a", "sk-group-b"].contains(&y.as_str()),
        "{seen:?}"
    );
    assert_eq!(seen, vec![x.clone(), y.clone(), x.clone(), y.clone()]);
    // Group accounts are not in the shared pool; the pool is not used by the group key.
    assert_eq!(
        credential_of(&relay, &free, &request(SONNET, false, "free")).await,
        "sk-pool"
    );

    // A session stays on its account.
    let session = session_request("user-group-1", "hello");
    let first = credential_of(&relay, &bound, &session).await;
    eventually(Duration::from_secs(10), "sticky kept", || async {
        let again = credential_of(&relay, &bound, &session).await;
        if again == first { Ok(()) } else { Err(again) }
    })
    .await;
    for _ in 0..3 {
        assert_eq!(credential_of(&relay, &bound, &session).await, first);
    }

    // Both priority-10 members out: the lower priority member serves, never the pool.
    let mut out = vec![a.id.clone()];
    out.extend(
        relay
            .router()
            .list_accounts()
            .await
            .unwrap()
            .iter()
            .filter(|acc| acc.name == "sk-group-b")
            .map(|acc| acc.id.clone()),
    );
    for id in &out {
        relay
            .router()
            .change_account_status(
                id,
                StatusChange {
                    status: AccountStatus::TempUnavailable,
                    until: Some(Utc::now() + chrono::Duration::minutes(10)),
                    message: "test".into(),
                },
            )
            .await
            .unwrap();
    }
    eventually(Duration::from_secs(10), "low priority member", || async {
        let c = credential_of(&relay, &bound, &request(SONNET, false, "fallback")).await;
        if c == "sk-group-low" { Ok(()) } else { Err(c) }
    })
    .await;
    assert_eq!(
        credential_of(&relay, &bound, &session).await,
        "sk-group-low"
    );
}

#[actix_rt::test]
async fn a_group_key_gets_503_when_no_member_is_available() {
    let relay = start(|_| {}).await;
    let g = group(&relay, "empty").await;
    relay.console("pool", "sk-pool", 1).await;
    let (_, bound) = relay
        .key(|k| k.claude_account_id = Some(format!("group:{}", g.id)))
        .await;
    let (status, _, body) = relay.message(&bound, &request(SONNET, false, "x")).await;
    assert_eq!(
        (status, body),
        (
            503,
            error_body(
                "api_error",
                "no account of the group this API key is bound to is available"
            )
        )
    );
    assert_eq!(relay.mock.message_count(), 0);
}
