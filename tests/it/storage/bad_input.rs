//! Bad input at the data layer: over-long or malformed ids, names with control characters
//! or invalid UTF-8 are refused with a clear `InvalidRequest`, in every mode, and nothing
//! is written.

use std::time::Duration;

use claude_relay::actors::router::{EntryKind, HealthStatus};
use claude_relay::config::StorageMode;
use claude_relay::domain::account::{AccountStatus, StatusChange};
use claude_relay::domain::api_key::{validate_id, validate_name};
use claude_relay::error::AppError;

use super::{count, env_in, new_account, new_key, start, wait_status};

in_every_mode!(the_router_refuses_bad_ids_and_names_and_writes_nothing);

/// Ids that must never reach a backend.
fn bad_ids() -> Vec<String> {
    vec![
        String::new(),
        "a".repeat(500),
        "a".repeat(37),
        "../../etc/passwd".into(),
        "id with spaces".into(),
        "id\nnewline".into(),
        "x'; DROP TABLE api_keys; --".into(),
        "ключ".into(),
        "apikey:*".into(),
    ]
}

#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(result: Result<T, AppError>, what: &str, mentions: &str) {
    match result {
        Err(AppError::InvalidRequest(message)) => assert!(
            message.contains(mentions),
            "{what}: message {message:?} does not mention {mentions:?}"
        ),
        other => panic!("{what}: expected InvalidRequest, got {other:?}"),
    }
}

#[test]
fn validators_refuse_over_long_and_malformed_ids_and_names() {
    for id in bad_ids().iter().filter(|id| id.len() != 37) {
        assert!(validate_id(id).is_err(), "{id:?} accepted");
    }
    assert!(validate_id(&uuid::Uuid::new_v4().to_string()).is_ok());
    assert!(validate_id(&"a".repeat(64)).is_ok());
    assert!(validate_id(&"a".repeat(65)).is_err());
    assert_eq!(
        validate_name(&"n".repeat(256)),
        Err("name must be at most 255 characters".into())
    );
    assert!(
        validate_name(&"é".repeat(255)).is_ok(),
        "counted in characters"
    );
    assert_eq!(validate_name("   "), Err("name must not be empty".into()));
    assert_eq!(
        validate_name("tab\there"),
        Err("name must not contain control characters".into())
    );
    assert!(validate_name("bell\u{7}").is_err());
    // Invalid UTF-8 cannot become a Rust `String`: the boundary rejects it before any
    // name check; the lossy form is valid text again.
    let bytes = b"caf\xe9 \xff name".to_vec();
    assert!(String::from_utf8(bytes.clone()).is_err());
    let lossy = String::from_utf8_lossy(&bytes).to_string();
    assert!(lossy.contains('\u{FFFD}'));
}

async fn the_router_refuses_bad_ids_and_names_and_writes_nothing(mode: StorageMode) {
    let env = env_in(mode);
    let actors = start(&env);
    let router = &actors.router;
    wait_status(router, HealthStatus::Healthy).await;
    let (_, good) = new_key(&env, "good");
    router.create_key(good.clone()).await.expect("create");
    let account = new_account(&env, "good", 1);
    router
        .create_account(account.clone())
        .await
        .expect("create");

    for id in bad_ids() {
        assert_invalid(
            router.get_key(&id).await,
            &format!("get key {id:?}"),
            "api key id",
        );
        assert_invalid(
            router.delete_key(&id).await,
            &format!("delete key {id:?}"),
            "api key id",
        );
        let (_, mut key) = new_key(&env, "bad id");
        key.id = id.clone();
        assert_invalid(
            router.create_key(key.clone()).await,
            &format!("create key {id:?}"),
            "api key id",
        );
        assert_invalid(
            router.save_key(key, None).await,
            &format!("save key {id:?}"),
            "api key id",
        );
        assert_invalid(
            router.get_account(&id).await,
            &format!("get account {id:?}"),
            "account id",
        );
        assert_invalid(
            router.delete_account(&id).await,
            &format!("delete account {id:?}"),
            "account id",
        );
        let mut bad_account = new_account(&env, "bad id", 1);
        bad_account.id = id.clone();
        assert_invalid(
            router.create_account(bad_account.clone()).await,
            &format!("create account {id:?}"),
            "account id",
        );
        assert_invalid(
            router.save_account(bad_account).await,
            &format!("save account {id:?}"),
            "account id",
        );
        let change = StatusChange {
            status: AccountStatus::Blocked,
            until: None,
            message: String::new(),
        };
        assert_invalid(
            router.change_account_status(&id, change).await,
            &format!("status of {id:?}"),
            "account id",
        );
    }
    let bad_names = ["", "   ", "line\nbreak", "nul\u{0}byte"]
        .into_iter()
        .map(String::from)
        .chain([
            "n".repeat(256),
            String::from_utf8_lossy(b"\xff\x01").to_string(),
        ]);
    for name in bad_names {
        let (_, mut key) = new_key(&env, "x");
        key.name = name.clone();
        assert_invalid(
            router.create_key(key).await,
            &format!("key name {name:?}"),
            "name",
        );
        let mut renamed = good.clone();
        renamed.name = name.clone();
        assert_invalid(
            router.save_key(renamed, None).await,
            &format!("rename key {name:?}"),
            "name",
        );
        let mut bad = new_account(&env, "x", 1);
        bad.name = name.clone();
        assert_invalid(
            router.create_account(bad).await,
            &format!("account name {name:?}"),
            "name",
        );
    }
    let (_, mut long_description) = new_key(&env, "x");
    long_description.description = "d".repeat(2001);
    assert_invalid(
        router.create_key(long_description).await,
        "description",
        "description",
    );
    let (_, mut bad_hash) = new_key(&env, "x");
    bad_hash.key_hash = "not-a-hash".into();
    assert_invalid(router.create_key(bad_hash).await, "key hash", "hash");

    // Entry ids: over-long, empty, whitespace or control characters.
    for id in [
        "".to_string(),
        "e".repeat(161),
        "a b".into(),
        "tab\t".into(),
    ] {
        assert_invalid(
            router
                .set_entry(EntryKind::Sticky, &id, "v".into(), Duration::from_secs(5))
                .await,
            &format!("entry {id:?}"),
            "entry id",
        );
        assert_invalid(
            router.get_entry(EntryKind::Sticky, &id).await,
            "get entry",
            "entry id",
        );
        assert_invalid(
            router.acquire_lock(&id, "t", Duration::from_secs(5)).await,
            "lock",
            "entry id",
        );
    }
    let longest = "e".repeat(160);
    router
        .set_entry(
            EntryKind::AdminSession,
            &longest,
            "v".into(),
            Duration::from_secs(5),
        )
        .await
        .expect("the longest entry id fits every mode");
    assert_eq!(
        router
            .get_entry(EntryKind::AdminSession, &longest)
            .await
            .expect("get"),
        Some("v".into())
    );

    // Nothing was written: the two good records only, unchanged.
    assert_eq!(
        router.list_keys(true).await.expect("list"),
        vec![good.clone()]
    );
    assert_eq!(router.list_accounts().await.expect("list"), vec![account]);
    if mode.uses_mysql() {
        assert_eq!(count(&env, "SELECT COUNT(*) AS n FROM api_keys"), 1);
        assert_eq!(count(&env, "SELECT COUNT(*) AS n FROM claude_accounts"), 1);
    }
}
