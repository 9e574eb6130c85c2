//! Upstream rate limits per model family (issue 13): an Opus 429 leaves Sonnet requests
//! on the same account flowing; the cooldown ends at the upstream's reset time, else after
//! the short `RATE_LIMIT_COOLDOWN_SECONDS`; a 529 puts the account aside only when
//! `OVERLOAD_COOLDOWN_SECONDS` says so.

use std::time::Duration;

use chrono::{DateTime, Utc};
use claude_relay::domain::account::AccountStatus;

use super::harness::{OPUS, Relay, SONNET, request, start};
use crate::support::{Behaviour, eventually};

/// Waits until the stored account has a cooldown for `family`; returns its end.
pub async fn wait_cooldown(relay: &Relay, id: &str, family: &str) -> DateTime<Utc> {
    eventually(
        Duration::from_secs(10),
        &format!("{family} cooldown"),
        || async {
            let a = relay.router().get_account(id).await.unwrap().unwrap();
            match a.model_cooldowns.get(family) {
                Some(until) => Ok(*until),
                None => Err(format!("{:?}", a.model_cooldowns)),
            }
        },
    )
    .await
}

fn too_many(headers: Vec<(String, String)>) -> Behaviour {
    Behaviour::Fail {
        status: 429,
        body: r#"{"type":"error","error":{"type":"rate_limit_error","message":"rate limited"}}"#
            .into(),
        headers,
    }
}

#[actix_rt::test]
async fn an_opus_429_leaves_sonnet_flowing_on_the_same_account() {
    let relay = start(|_| {}).await;
    let only = relay.console("only", "sk-only", 10).await;
    let (_, plaintext) = relay.key(|_| {}).await;
    let reset = DateTime::from_timestamp(Utc::now().timestamp() + 3600, 0).unwrap();
    relay.mock.set(
        "sk-only",
        too_many(vec![(
            "anthropic-ratelimit-unified-reset".into(),
            reset.timestamp().to_string(),
        )]),
    );
    let (status, _, _) = relay.message(&plaintext, &request(OPUS, false, "o1")).await;
    assert_eq!(status, 429);
    assert_eq!(wait_cooldown(&relay, &only.id, "opus").await, reset);
    relay.mock.set("sk-only", Behaviour::Normal);

    // Sonnet still goes through the same account; Opus finds no account.
    let (status, _, body) = relay
        .message(&plaintext, &request(SONNET, false, "s1"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(relay.last_credential(), "sk-only");
    let stored = relay.router().get_account(&only.id).await.unwrap().unwrap();
    assert_eq!(stored.status, AccountStatus::Active);
    let before = relay.mock.message_count();
    eventually(Duration::from_secs(10), "opus refused", || async {
        let (status, _, body) = relay.message(&plaintext, &request(OPUS, false, "o2")).await;
        if status == 503 {
            Ok(body)
        } else {
            Err(format!("{status} {body}"))
        }
    })
    .await;
    assert_eq!(
        relay.mock.message_count(),
        before,
        "no opus request reached it"
    );

    // reset-status clears the cooldown.
    let mut a = relay.router().get_account(&only.id).await.unwrap().unwrap();
    a.model_cooldowns.clear();
    relay.router().save_account(a).await.unwrap();
    let (status, _, _) = relay.message(&plaintext, &request(OPUS, false, "o3")).await;
    assert_eq!(status, 200);
}

#[actix_rt::test]
async fn a_429_without_reset_locks_for_the_configured_short_time() {
    let relay = start(|env| {
        env.set("RATE_LIMIT_COOLDOWN_SECONDS", "2");
    })
    .await;
    let a = relay.console("a", "sk-a", 1).await;
    relay.console("b", "sk-b", 50).await;
    let (_, plaintext) = relay.key(|_| {}).await;
    relay.mock.set("sk-a", too_many(vec![]));
    let before = Utc::now();
    let (status, _, _) = relay
        .message(&plaintext, &request(SONNET, false, "1"))
        .await;
    assert_eq!(status, 429);
    let until = wait_cooldown(&relay, &a.id, "sonnet").await;
    assert!(
        until >= before + chrono::Duration::seconds(2)
            && until <= Utc::now() + chrono::Duration::seconds(2),
        "until {until}"
    );
    relay.mock.set("sk-a", Behaviour::Normal);
    let (status, _, _) = relay
        .message(&plaintext, &request(SONNET, false, "2"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(relay.last_credential(), "sk-b");
    // After the two seconds the preferred account is back.
    eventually(Duration::from_secs(10), "sk-a back", || async {
        // A new session each time (a session would stick to sk-b).
        let text = format!("3 {}", uuid::Uuid::new_v4());
        let (status, _, _) = relay
            .message(&plaintext, &request(SONNET, false, &text))
            .await;
        let c = relay.last_credential();
        if status == 200 && c == "sk-a" {
            Ok(())
        } else {
            Err(c)
        }
    })
    .await;
    assert!(Utc::now() >= until);
}

#[actix_rt::test]
async fn a_529_keeps_the_account_in_rotation_when_overload_cooldown_is_off() {
    let relay = start(|env| {
        env.set("OVERLOAD_COOLDOWN_SECONDS", "0");
    })
    .await;
    let a = relay.console("a", "sk-a", 1).await;
    relay.console("b", "sk-b", 50).await;
    let (_, plaintext) = relay.key(|_| {}).await;
    relay.mock.set(
        "sk-a",
        Behaviour::Fail {
            status: 529,
            body: r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
                .into(),
            headers: vec![],
        },
    );
    for i in 0..2 {
        let (status, _, _) = relay
            .message(&plaintext, &request(SONNET, false, &format!("{i}")))
            .await;
        assert_eq!(status, 529);
        assert_eq!(relay.last_credential(), "sk-a");
    }
    let stored = relay.router().get_account(&a.id).await.unwrap().unwrap();
    assert_eq!(
        (stored.status, stored.model_cooldowns.len()),
        (AccountStatus::Active, 0)
    );
}
