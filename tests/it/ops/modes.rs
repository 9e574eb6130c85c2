//! `migrate to-hybrid` from our own redis mode and `migrate from-hybrid --to redis|mysql`:
//! every key keeps working, accounts and operators move, counters stay equal.

use chrono::Utc;
use claude_relay::config::{Config, StorageMode};
use claude_relay::domain::account::{
    Account, AccountStatus, AccountType, SessionWindow, SubscriptionInfo, WindowStatus,
};
use claude_relay::domain::api_key::ApiKey;
use claude_relay::domain::crypto::CredentialCipher;
use claude_relay::domain::group::AccountGroup;
use claude_relay::domain::keys::{generate_key, hash_key};
use claude_relay::domain::password;
use claude_relay::domain::pricing::is_opus;
use claude_relay::domain::usage_event::UsageEvent;
use claude_relay::ledger::CounterContext;

use super::{actors, cli_ok, counter_snapshot};
use crate::support::TestEnv;
use crate::support::mysql::{scalar, strings};

/// (plaintext, id, accepted): two active keys and a disabled one.
fn make_keys() -> Vec<(String, String, bool)> {
    (0..3)
        .map(|i| {
            (
                generate_key("cr_"),
                uuid::Uuid::new_v4().to_string(),
                i != 2,
            )
        })
        .collect()
}

fn mode(env: &TestEnv, mode: StorageMode) -> Config {
    let mut c = env.config();
    c.mode = mode;
    c
}

fn event(key_id: &str, account_id: &str, model: &str, n: i64) -> UsageEvent {
    UsageEvent {
        request_id: uuid::Uuid::new_v4().to_string(),
        upstream_request_id: None,
        api_key_id: key_id.to_string(),
        account_id: account_id.to_string(),
        model: model.to_string(),
        input_tokens: 100 * n,
        output_tokens: 20 * n,
        cache_create_5m_tokens: 10,
        cache_create_1h_tokens: 0,
        cache_read_tokens: 5 * n,
        cost_micros: 1234 * n,
        status_code: 200,
        is_stream: n % 2 == 0,
        latency_ms: 50,
        created_at: Utc::now(),
    }
}

fn at(s: &str) -> chrono::DateTime<Utc> {
    chrono::DateTime::parse_from_rfc3339(s)
        .unwrap()
        .with_timezone(&Utc)
}

/// The account group every mode must keep.
fn group() -> AccountGroup {
    AccountGroup {
        id: "6a000000-0000-4000-8000-0000000000a1".into(),
        name: "pool-a".into(),
        description: "migrated group".into(),
        platform: "claude".into(),
        created_at: at("2026-12-01T08:00:00.123456Z"),
        updated_at: at("2026-12-01T08:00:00.123456Z"),
    }
}

/// The account in the group, with the issue 13 fields every mode must keep.
fn with_subscription_fields(mut a: Account) -> Account {
    a.group_ids = vec![group().id];
    a.session_window = Some(SessionWindow {
        start: at("2026-12-01T09:00:00Z"),
        end: at("2026-12-01T14:00:00Z"),
        status: Some(WindowStatus::AllowedWarning),
    });
    a.auto_stop_on_warning = true;
    a.daily_quota = 12.5;
    a.subscription = Some(SubscriptionInfo {
        email: Some("ops@example.com".into()),
        organization_name: Some("Ops Org".into()),
        organization_uuid: Some("org-ops".into()),
        subscription_type: Some("claude_pro".into()),
        profile_fetched_at: Some(at("2026-12-01T09:00:01Z")),
    });
    a
}

/// Creates the keys, an account and an operator through the router, and records usage.
async fn populate(config: &Config, keys: &[(String, String, bool)]) -> String {
    let a = actors(config).await;
    let enc = config.encryption_key.clone();
    use secrecy::ExposeSecret;
    for (plain, id, accepted) in keys {
        let mut k = ApiKey::new(
            id.clone(),
            format!("k-{id}"),
            hash_key(plain, enc.expose_secret()),
        );
        k.is_active = *accepted;
        a.router.create_key(k).await.expect("create key");
    }
    let cipher = CredentialCipher::new(enc.expose_secret()).unwrap();
    let account_id = uuid::Uuid::new_v4().to_string();
    let now = Utc::now();
    let account = Account {
        id: account_id.clone(),
        name: "console-1".into(),
        description: String::new(),
        account_type: AccountType::ClaudeConsole,
        base_url: Some("http://127.0.0.1:18080".into()),
        credentials_encrypted: cipher.seal(r#"{"apiKey":"sk-upstream-test"}"#).unwrap(),
        proxy_encrypted: None,
        token_expires_at: None,
        scope: "shared".into(),
        priority: 50,
        schedulable: true,
        is_active: true,
        status: AccountStatus::Active,
        status_until: None,
        error_message: String::new(),
        max_concurrency: 0,
        created_at: now,
        updated_at: now,
        last_used_at: None,
        last_refresh_at: None,
        group_ids: Vec::new(),
        model_cooldowns: Default::default(),
        model_mapping: Default::default(),
        user_agent: None,
        session_window: None,
        auto_stop_on_warning: false,
        daily_quota: 0.0,
        subscription: None,
    };
    let account = with_subscription_fields(account);
    a.router.save_group(group()).await.expect("create group");
    a.router
        .create_account(account)
        .await
        .expect("create account");
    a.router
        .ensure_admin("ops_admin".into(), password::hash("ops-pass").unwrap())
        .await
        .expect("admin");
    for (n, model) in [
        (1, "claude-sonnet-4-20250514"),
        (2, "claude-opus-4-1-20250805"),
        (3, "claude-sonnet-4-20250514"),
    ] {
        let e = event(&keys[0].1, &account_id, model, n);
        let updates = CounterContext {
            opus: is_opus(model),
            weekly_reset: (1, 0),
            rate_window: None,
        };
        a.router
            .record_usage(e, updates)
            .await
            .expect("record usage");
    }
    a.router
        .drain_usage(std::time::Duration::from_secs(10))
        .await;
    account_id
}

/// Every key is found by its hash in `config`'s mode and accepted or refused as made.
async fn assert_keys_work(config: &Config, keys: &[(String, String, bool)], account_id: &str) {
    use secrecy::ExposeSecret;
    let a = actors(config).await;
    for (plain, id, accepted) in keys {
        let k = a
            .router
            .find_key_by_hash(&hash_key(plain, config.encryption_key.expose_secret()))
            .await
            .expect("lookup")
            .unwrap_or_else(|| panic!("key {id} lost in {:?} mode", config.mode));
        assert_eq!(&k.id, id);
        assert_eq!(k.check_usable(Utc::now(), None).is_ok(), *accepted, "{id}");
    }
    let account = a
        .router
        .get_account(account_id)
        .await
        .expect("get account")
        .unwrap_or_else(|| panic!("account lost in {:?} mode", config.mode));
    let want = with_subscription_fields(account.clone());
    assert_eq!(
        (
            &account.group_ids,
            &account.session_window,
            account.auto_stop_on_warning,
            account.daily_quota,
            &account.subscription
        ),
        (
            &want.group_ids,
            &want.session_window,
            want.auto_stop_on_warning,
            want.daily_quota,
            &want.subscription
        ),
        "{:?} mode",
        config.mode
    );
    assert_eq!(
        a.router.list_groups().await.expect("list groups"),
        [group()],
        "{:?} mode",
        config.mode
    );
}

#[actix_rt::test]
async fn to_hybrid_from_our_redis_mode_keeps_keys_counters_and_archive() {
    let env = TestEnv::new().with("DATABASE_TYPE", "redis");
    let keys = make_keys();
    let account_id = populate(&env.config(), &keys).await;
    let counters = counter_snapshot(&env.key_prefix);
    assert!(!counters.is_empty());

    let mut env = env;
    env.set("DATABASE_TYPE", "hybrid");
    let out = cli_ok(&env, &["migrate", "to-hybrid"]);
    assert!(out.contains("source: redis-mode records"), "{out}");
    assert!(
        out.contains("after: 3 keys, 1 accounts, 1 admins, 3 archive rows"),
        "{out}"
    );
    assert_keys_work(&env.config(), &keys, &account_id).await;
    assert_eq!(
        counter_snapshot(&env.key_prefix),
        counters,
        "counters unchanged"
    );
    let db = env.direct_mysql();
    assert_eq!(scalar(&db, "SELECT COUNT(*) AS n FROM usage_records"), 3);
    let hash = strings(
        &db,
        "SELECT password_hash AS s FROM admin_users WHERE username = 'ops_admin'",
    );
    assert!(password::verify("ops-pass", &hash[0]));

    let out = cli_ok(&env, &["migrate", "to-hybrid"]);
    assert!(out.contains("records: 0 created, 0 updated"), "{out}");
    assert_eq!(counter_snapshot(&env.key_prefix), counters);
}

#[actix_rt::test]
async fn from_hybrid_to_redis_and_to_mysql_keep_every_key_working() {
    let env = TestEnv::new();
    cli_ok(&env, &["init"]);
    let keys = make_keys();
    let account_id = populate(&env.config(), &keys).await;
    let counters = counter_snapshot(&env.key_prefix);

    let out = cli_ok(&env, &["migrate", "from-hybrid", "--to", "redis"]);
    assert!(
        out.contains("after (redis mode): 3 keys, 1 accounts"),
        "{out}"
    );
    assert_keys_work(&mode(&env, StorageMode::Redis), &keys, &account_id).await;
    assert_eq!(counter_snapshot(&env.key_prefix), counters);

    let out = cli_ok(&env, &["migrate", "from-hybrid", "--to", "mysql"]);
    assert!(
        out.contains("after (mysql mode): 3 keys, 1 accounts"),
        "{out}"
    );
    let mysql = mode(&env, StorageMode::Mysql);
    assert_keys_work(&mysql, &keys, &account_id).await;
    // The counters now live in usage_counters, with the same values.
    let a = actors(&mysql).await;
    let names: Vec<String> = counters.keys().cloned().collect();
    let values = a
        .router
        .read_counters(names.clone())
        .await
        .expect("read counters");
    for (name, got) in names.iter().zip(values) {
        let want = &counters[name];
        let field = |f: &str| want.get(f).copied().unwrap_or(0);
        assert_eq!(got.requests, field("requests"), "{name}");
        assert_eq!(got.input_tokens, field("input"), "{name}");
        assert_eq!(got.cost_micros, field("cost"), "{name}");
    }
    let out = cli_ok(&env, &["migrate", "from-hybrid", "--to", "mysql"]);
    assert!(out.contains("records: 0 created, 0 updated"), "{out}");
}
