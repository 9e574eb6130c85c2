//! The contract of the data layer: the same operations, the same test code, run in each
//! storage mode (`hybrid`, `redis`, `mysql`) through `RouterHandle`.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::TimeDelta;
use claude_relay::actors::router::{EntryKind, HealthStatus};
use claude_relay::config::StorageMode;
use claude_relay::domain::account::{AccountStatus, StatusChange};
use claude_relay::domain::crypto::CredentialCipher;
use claude_relay::domain::limits::{
    Admission, AdmissionRequest, CostLimit, CostLimitKind, Counters, WindowLimits,
    key_counter_names,
};
use claude_relay::domain::usage_event::UsageEvent;
use claude_relay::error::AppError;
use claude_relay::ledger::CounterContext;

use super::{
    RECOVER, count, env_in, event, new_account, new_key, now_micros, start, updates, wait_status,
};
use crate::support::eventually;

in_every_mode!(
    keys_crud,
    accounts_crud,
    entries_with_ttl,
    locks,
    counters,
    admission,
    usage_archive,
);

async fn keys_crud(mode: StorageMode) {
    let env = env_in(mode);
    let actors = start(&env);
    let router = &actors.router;
    wait_status(router, HealthStatus::Healthy).await;

    let (_, k1) = new_key(&env, "first");
    let (_, mut k2) = new_key(&env, "second");
    k2.created_at = k1.created_at + TimeDelta::seconds(1);
    assert_eq!(router.create_key(k1.clone()).await.expect("create"), k1);
    assert!(
        matches!(
            router.create_key(k1.clone()).await,
            Err(AppError::InvalidRequest(_))
        ),
        "the same key value twice is refused"
    );
    router.create_key(k2.clone()).await.expect("create k2");

    assert_eq!(router.get_key(&k1.id).await.expect("get"), Some(k1.clone()));
    assert_eq!(
        router.find_key_by_hash(&k1.key_hash).await.expect("find"),
        Some(k1.clone())
    );
    assert_eq!(
        router
            .find_key_by_hash(&"0".repeat(64))
            .await
            .expect("find"),
        None
    );
    assert_eq!(
        router
            .get_key(&uuid::Uuid::new_v4().to_string())
            .await
            .expect("get"),
        None
    );
    let ids = |keys: Vec<claude_relay::domain::api_key::ApiKey>| {
        keys.into_iter().map(|k| k.id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(router.list_keys(false).await.expect("list")),
        vec![k2.id.clone(), k1.id.clone()],
        "newest first"
    );

    // Update: every reader sees the new record at once (caches invalidated).
    let mut updated = k1.clone();
    updated.name = "renamed".into();
    updated.tags = vec!["team-a".into(), "prod".into()];
    updated.concurrency_limit = 3;
    updated.daily_cost_limit_micros = 5_000_000;
    updated.updated_at = now_micros();
    assert_eq!(
        router.save_key(updated.clone(), None).await.expect("save"),
        updated
    );
    assert_eq!(
        router.get_key(&k1.id).await.expect("get"),
        Some(updated.clone())
    );
    assert_eq!(
        router.find_key_by_hash(&k1.key_hash).await.expect("find"),
        Some(updated.clone())
    );

    // Regenerate: the old value stops working, the new one works.
    let (_, fresh) = new_key(&env, "unused");
    let mut regenerated = updated.clone();
    regenerated.key_hash = fresh.key_hash.clone();
    router
        .save_key(regenerated.clone(), Some(k1.key_hash.clone()))
        .await
        .expect("regenerate");
    assert_eq!(
        router.find_key_by_hash(&k1.key_hash).await.expect("find"),
        None
    );
    assert_eq!(
        router
            .find_key_by_hash(&fresh.key_hash)
            .await
            .expect("find"),
        Some(regenerated.clone())
    );

    // Soft delete hides the key from the default list but keeps it.
    let mut deleted = regenerated.clone();
    deleted.is_active = false;
    deleted.deleted_at = Some(now_micros());
    deleted.deleted_by = Some("admin".into());
    router
        .save_key(deleted.clone(), None)
        .await
        .expect("soft delete");
    assert_eq!(
        ids(router.list_keys(false).await.expect("list")),
        vec![k2.id.clone()]
    );
    assert_eq!(
        ids(router.list_keys(true).await.expect("list")),
        vec![k2.id.clone(), k1.id.clone()]
    );
    assert_eq!(
        router.get_key(&k1.id).await.expect("get"),
        Some(deleted.clone())
    );
    assert_eq!(
        router
            .find_key_by_hash(&fresh.key_hash)
            .await
            .expect("find"),
        Some(deleted.clone())
    );

    // Restore.
    let mut restored = deleted.clone();
    restored.is_active = true;
    restored.deleted_at = None;
    restored.deleted_by = None;
    router
        .save_key(restored.clone(), None)
        .await
        .expect("restore");
    assert_eq!(
        ids(router.list_keys(false).await.expect("list")),
        vec![k2.id.clone(), k1.id.clone()]
    );

    // Hard delete.
    assert!(router.delete_key(&k1.id).await.expect("delete"));
    assert!(!router.delete_key(&k1.id).await.expect("delete again"));
    assert_eq!(router.get_key(&k1.id).await.expect("get"), None);
    assert_eq!(
        router
            .find_key_by_hash(&fresh.key_hash)
            .await
            .expect("find"),
        None
    );
    assert_eq!(
        ids(router.list_keys(true).await.expect("list")),
        vec![k2.id.clone()]
    );

    // Saving a key that does not exist is NotFound, and writes nothing.
    let (_, ghost) = new_key(&env, "ghost");
    assert!(matches!(
        router.save_key(ghost.clone(), None).await,
        Err(AppError::NotFound(_))
    ));
    assert_eq!(router.get_key(&ghost.id).await.expect("get"), None);
    if mode.uses_mysql() {
        assert_eq!(count(&env, "SELECT COUNT(*) AS n FROM api_keys"), 1);
    }
}

async fn accounts_crud(mode: StorageMode) {
    let env = env_in(mode);
    let actors = start(&env);
    let router = &actors.router;
    wait_status(router, HealthStatus::Healthy).await;

    let a1 = new_account(&env, "one", 10);
    let a2 = new_account(&env, "two", 5);
    assert_eq!(router.create_account(a1.clone()).await.expect("create"), a1);
    router.create_account(a2.clone()).await.expect("create");
    assert_eq!(
        router.get_account(&a1.id).await.expect("get"),
        Some(a1.clone())
    );
    let ids = |v: Vec<claude_relay::domain::account::Account>| {
        v.into_iter().map(|a| a.id).collect::<Vec<_>>()
    };
    assert_eq!(
        ids(router.list_accounts().await.expect("list")),
        vec![a2.id.clone(), a1.id.clone()],
        "priority order"
    );

    // Credentials are stored encrypted and open with ENCRYPTION_KEY.
    let cipher = CredentialCipher::new(env.var("ENCRYPTION_KEY").expect("key")).expect("cipher");
    let stored = router
        .get_account(&a1.id)
        .await
        .expect("get")
        .expect("some");
    assert!(!stored.credentials_encrypted.contains("sk-upstream-test"));
    assert_eq!(
        cipher.open(&stored.credentials_encrypted).expect("open"),
        r#"{"apiKey":"sk-upstream-test"}"#
    );
    if mode.uses_mysql() {
        assert_eq!(
            count(
                &env,
                "SELECT COUNT(*) AS n FROM claude_accounts WHERE credentials_encrypted LIKE '%sk-upstream%'"
            ),
            0
        );
    }

    let mut renamed = a1.clone();
    renamed.name = "one, renamed".into();
    renamed.priority = 1;
    router.save_account(renamed.clone()).await.expect("save");
    assert_eq!(
        router.get_account(&a1.id).await.expect("get"),
        Some(renamed.clone())
    );
    let snapshot = router.account_snapshot().await.expect("snapshot");
    assert_eq!(ids(snapshot.clone()), vec![a1.id.clone(), a2.id.clone()]);
    assert_eq!(snapshot[0], renamed);

    // A status change is stored and reaches the scheduler's snapshot.
    let until = now_micros() + TimeDelta::seconds(60);
    router
        .change_account_status(
            &a1.id,
            StatusChange {
                status: AccountStatus::RateLimited,
                until: Some(until),
                message: "429 from upstream".into(),
            },
        )
        .await
        .expect("status");
    let stored = router
        .get_account(&a1.id)
        .await
        .expect("get")
        .expect("some");
    assert_eq!(stored.status, AccountStatus::RateLimited);
    assert_eq!(stored.status_until, Some(until));
    assert_eq!(stored.error_message, "429 from upstream");
    let snapshot = router.account_snapshot().await.expect("snapshot");
    let in_snapshot = snapshot.iter().find(|a| a.id == a1.id).expect("listed");
    assert_eq!(in_snapshot.status, AccountStatus::RateLimited);
    assert_eq!(in_snapshot.status_until, Some(until));

    assert!(router.delete_account(&a2.id).await.expect("delete"));
    assert!(!router.delete_account(&a2.id).await.expect("delete again"));
    assert_eq!(router.get_account(&a2.id).await.expect("get"), None);
    assert_eq!(
        ids(router.list_accounts().await.expect("list")),
        vec![a1.id.clone()]
    );
    assert_eq!(
        ids(router.account_snapshot().await.expect("snapshot")),
        vec![a1.id.clone()]
    );
    assert!(matches!(
        router.save_account(a2.clone()).await,
        Err(AppError::NotFound(_))
    ));
    if mode.uses_mysql() {
        assert_eq!(count(&env, "SELECT COUNT(*) AS n FROM claude_accounts"), 1);
    }
}

async fn entries_with_ttl(mode: StorageMode) {
    let env = env_in(mode);
    let actors = start(&env);
    let router = &actors.router;
    wait_status(router, HealthStatus::Healthy).await;

    // Set / get, and kinds are separate namespaces. `set_at` is taken before the 1 s entry
    // is set, so the expiry check below is a true lower bound however slow the calls are.
    // Entries expire by the wall clock (Redis's, or the relay's in MySQL): measured on it.
    let set_at = chrono::Utc::now();
    router
        .set_entry(
            EntryKind::Sticky,
            "s1",
            "account-1".into(),
            Duration::from_secs(1),
        )
        .await
        .expect("set");
    router
        .set_entry(
            EntryKind::AdminSession,
            "s1",
            "admin".into(),
            Duration::from_secs(60),
        )
        .await
        .expect("set");
    router
        .set_entry(
            EntryKind::OauthToken,
            "acct",
            "v1:sealed-token".into(),
            Duration::from_secs(60),
        )
        .await
        .expect("set");
    assert_eq!(
        router
            .get_entry(EntryKind::Sticky, "s1")
            .await
            .expect("get"),
        Some("account-1".into())
    );
    assert_eq!(
        router
            .get_entry(EntryKind::AdminSession, "s1")
            .await
            .expect("get"),
        Some("admin".into())
    );
    assert_eq!(
        router
            .get_entry(EntryKind::OauthToken, "acct")
            .await
            .expect("get"),
        Some("v1:sealed-token".into())
    );
    assert_eq!(
        router
            .get_entry(EntryKind::Sticky, "nope")
            .await
            .expect("get"),
        None
    );

    // A 1 s entry expires by itself (and not long after).
    eventually(Duration::from_secs(10), "sticky entry expiry", || async {
        match router.get_entry(EntryKind::Sticky, "s1").await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(
        chrono::Utc::now() - set_at >= chrono::TimeDelta::milliseconds(900),
        "expired early"
    );

    // Touch extends a live entry; an absent one is not created. `s3`, set alike and not
    // touched, tells when the first TTL has run out. 3 s: the touch must land while `s2`
    // still lives, even when the machine is slow.
    for id in ["s2", "s3"] {
        router
            .set_entry(
                EntryKind::Sticky,
                id,
                "account-2".into(),
                Duration::from_secs(3),
            )
            .await
            .expect("set");
    }
    assert!(
        router
            .touch_entry(EntryKind::Sticky, "s2", Duration::from_secs(30))
            .await
            .expect("touch")
    );
    assert!(
        !router
            .touch_entry(EntryKind::Sticky, "absent", Duration::from_secs(30))
            .await
            .expect("touch")
    );
    eventually(Duration::from_secs(10), "untouched twin expiry", || async {
        match router.get_entry(EntryKind::Sticky, "s3").await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(
        router
            .get_entry(EntryKind::Sticky, "s2")
            .await
            .expect("get"),
        Some("account-2".into()),
        "touched entry outlives its first TTL"
    );
    assert_eq!(
        router
            .get_entry(EntryKind::Sticky, "absent")
            .await
            .expect("get"),
        None
    );

    // Set replaces; delete removes once.
    router
        .set_entry(
            EntryKind::Sticky,
            "s2",
            "account-3".into(),
            Duration::from_secs(30),
        )
        .await
        .expect("set");
    assert_eq!(
        router
            .get_entry(EntryKind::Sticky, "s2")
            .await
            .expect("get"),
        Some("account-3".into())
    );
    assert!(
        router
            .delete_entry(EntryKind::Sticky, "s2")
            .await
            .expect("delete")
    );
    assert!(
        !router
            .delete_entry(EntryKind::Sticky, "s2")
            .await
            .expect("delete")
    );
    assert_eq!(
        router
            .get_entry(EntryKind::Sticky, "s2")
            .await
            .expect("get"),
        None
    );
}

async fn locks(mode: StorageMode) {
    let env = env_in(mode);
    let actors = start(&env);
    let router = &actors.router;
    wait_status(router, HealthStatus::Healthy).await;

    let long = Duration::from_secs(30);
    assert!(
        router
            .acquire_lock("refresh:a", "t1", long)
            .await
            .expect("lock")
    );
    assert!(
        !router
            .acquire_lock("refresh:a", "t2", long)
            .await
            .expect("lock")
    );
    assert!(
        !router
            .release_lock("refresh:a", "t2")
            .await
            .expect("unlock")
    );
    assert!(
        !router
            .acquire_lock("refresh:a", "t2", long)
            .await
            .expect("lock"),
        "a wrong-token release left the lock in place"
    );
    assert!(
        router
            .release_lock("refresh:a", "t1")
            .await
            .expect("unlock")
    );
    assert!(
        !router
            .release_lock("refresh:a", "t1")
            .await
            .expect("unlock twice")
    );
    assert!(
        router
            .acquire_lock("refresh:a", "t2", long)
            .await
            .expect("lock")
    );
    // Another name is another lock.
    assert!(
        router
            .acquire_lock("refresh:b", "t1", long)
            .await
            .expect("lock")
    );

    // A lock whose holder died ends with its TTL.
    assert!(
        router
            .acquire_lock("refresh:c", "dead", Duration::from_millis(500))
            .await
            .expect("lock")
    );
    assert!(
        !router
            .acquire_lock("refresh:c", "t3", long)
            .await
            .expect("lock")
    );
    eventually(Duration::from_secs(10), "expired lock taken", || async {
        match router.acquire_lock("refresh:c", "t3", long).await {
            Ok(true) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
}

async fn counters(mode: StorageMode) {
    let env = env_in(mode);
    let actors = start(&env);
    let router = &actors.router;
    wait_status(router, HealthStatus::Healthy).await;

    let key_id = uuid::Uuid::new_v4().to_string();
    let account_id = uuid::Uuid::new_v4().to_string();
    let events: Vec<UsageEvent> = (0..3).map(|i| event(&key_id, &account_id, i)).collect();
    for e in &events {
        router
            .record_usage(e.clone(), updates(e))
            .await
            .expect("record");
    }
    let names = key_counter_names(&key_id, events[0].created_at, 8, 1, 0);
    let model = &events[0].model;
    let read = router
        .read_counters(vec![
            names.total.clone(),
            names.daily.clone(),
            format!("usage:account:{account_id}:total"),
            format!("usage:key:{key_id}:model:{model}:total"),
            format!("usage:key:{}:total", uuid::Uuid::new_v4()),
        ])
        .await
        .expect("read");
    let expected = Counters {
        requests: 3,
        input_tokens: 100 + 101 + 102,
        output_tokens: 30,
        cache_create_tokens: 9,
        cache_read_tokens: 15,
        cost_micros: 3_000,
    };
    assert_eq!(read[..4], [expected; 4]);
    assert_eq!(
        read[4],
        Counters::default(),
        "unknown counters read as zero"
    );
}

async fn admission(mode: StorageMode) {
    let env = env_in(mode);
    let actors = start(&env);
    let router = &actors.router;
    wait_status(router, HealthStatus::Healthy).await;

    let key_id = uuid::Uuid::new_v4().to_string();
    let scope = format!("key:{key_id}");
    let lease = || uuid::Uuid::new_v4().to_string();
    let request = |lease_id: &str, cap: u32, window: Option<WindowLimits>| AdmissionRequest {
        lease_scope: scope.clone(),
        lease_id: lease_id.to_string(),
        lease_ttl_ms: 60_000,
        concurrency_limit: cap,
        window,
        cost_limits: Vec::new(),
    };

    // Concurrency cap.
    let (a, b, c) = (lease(), lease(), lease());
    assert_eq!(
        router.admit(request(&a, 2, None)).await.expect("admit"),
        Admission::Granted
    );
    assert_eq!(
        router.admit(request(&b, 2, None)).await.expect("admit"),
        Admission::Granted
    );
    assert_eq!(
        router.admit(request(&c, 2, None)).await.expect("admit"),
        Admission::ConcurrencyExceeded
    );
    assert_eq!(router.count_leases(&scope).await.expect("count"), 2);
    router.release_lease(&scope, &a).await;
    assert_eq!(router.count_leases(&scope).await.expect("count"), 1);
    assert_eq!(
        router.admit(request(&c, 2, None)).await.expect("admit"),
        Admission::Granted
    );
    router.release_lease(&scope, &b).await;
    router.release_lease(&scope, &c).await;
    assert_eq!(router.count_leases(&scope).await.expect("count"), 0);

    // Request window: the 4th request of a 3-request window is refused with Retry-After.
    let window = |name: &str, requests: i64, tokens: i64| WindowLimits {
        name: name.to_string(),
        ttl_seconds: 120,
        resets_in_seconds: 42,
        max_requests: requests,
        max_tokens: tokens,
        max_cost_micros: 0,
    };
    let w = window(&format!("rate:key:{key_id}:requests"), 3, 0);
    for i in 0..3 {
        let id = lease();
        assert_eq!(
            router
                .admit(request(&id, 0, Some(w.clone())))
                .await
                .expect("admit"),
            Admission::Granted,
            "request {i}"
        );
        router.release_lease(&scope, &id).await;
    }
    assert_eq!(
        router
            .admit(request(&lease(), 0, Some(w.clone())))
            .await
            .expect("admit"),
        Admission::RequestsExceeded {
            retry_after_secs: 42
        }
    );
    assert_eq!(
        router
            .read_counters(vec![w.name.clone()])
            .await
            .expect("read")[0]
            .requests,
        3,
        "a refused request is not counted"
    );
    assert_eq!(
        router.count_leases(&scope).await.expect("count"),
        0,
        "no lease taken"
    );

    // Token window: tokens recorded into the window refuse the next request.
    let w = window(&format!("rate:key:{key_id}:tokens"), 0, 100);
    assert_eq!(
        router
            .admit(request(&lease(), 0, Some(w.clone())))
            .await
            .expect("admit"),
        Admission::Granted
    );
    // (An event of another key: only the window named here is shared.)
    let e = event(&uuid::Uuid::new_v4().to_string(), "", 50);
    router
        .record_usage(
            e.clone(),
            CounterContext {
                rate_window: Some((w.name.clone(), 120)),
                ..updates(&e)
            },
        )
        .await
        .expect("record");
    assert_eq!(
        router
            .admit(request(&lease(), 0, Some(w)))
            .await
            .expect("admit"),
        Admission::TokensExceeded {
            retry_after_secs: 42
        }
    );

    // Daily cost limit, checked in the same call against the key's day counter.
    let names = key_counter_names(&key_id, chrono::Utc::now(), 8, 1, 0);
    let with_cost = |max_micros: i64| AdmissionRequest {
        cost_limits: vec![CostLimit {
            kind: CostLimitKind::Daily,
            counter: names.daily.clone(),
            max_micros,
        }],
        ..request(&lease(), 0, None)
    };
    assert_eq!(
        router.admit(with_cost(2_000)).await.expect("admit"),
        Admission::Granted
    );
    for i in 0..2 {
        let e = event(&key_id, "", i);
        router
            .record_usage(e.clone(), updates(&e))
            .await
            .expect("record");
    }
    assert_eq!(
        router.admit(with_cost(2_000)).await.expect("admit"),
        Admission::CostLimitExceeded(CostLimitKind::Daily)
    );
    assert_eq!(
        router.admit(with_cost(2_001)).await.expect("admit"),
        Admission::Granted
    );
}

async fn usage_archive(mode: StorageMode) {
    let env = env_in(mode);
    let actors = start(&env);
    let router = &actors.router;
    wait_status(router, HealthStatus::Healthy).await;

    let key_id = uuid::Uuid::new_v4().to_string();
    let events: Vec<UsageEvent> = (0..5).map(|i| event(&key_id, "acct", i)).collect();
    for e in &events {
        router
            .record_usage(e.clone(), updates(e))
            .await
            .expect("record");
    }
    let expected_ids: BTreeSet<String> = events.iter().map(|e| e.request_id.clone()).collect();
    if mode.uses_mysql() {
        eventually(RECOVER, "5 archive rows", || async {
            let n = count(&env, "SELECT COUNT(*) AS n FROM usage_records");
            if n == 5 {
                Ok(())
            } else {
                Err(format!("{n} rows"))
            }
        })
        .await;
        // Recording an event again (a replay) adds nothing.
        router
            .record_usage(events[0].clone(), updates(&events[0]))
            .await
            .expect("record again");
        assert!(router.drain_usage(RECOVER).await, "journal drained");
        let stored: BTreeSet<String> = crate::support::mysql::strings(
            &env.direct_mysql(),
            "SELECT request_id AS s FROM usage_records",
        )
        .into_iter()
        .collect();
        assert_eq!(stored, expected_ids);
        assert_eq!(
            count(
                &env,
                "SELECT CAST(SUM(requests) AS SIGNED) AS n FROM usage_daily"
            ),
            5
        );
        assert_eq!(
            count(
                &env,
                "SELECT CAST(SUM(input_tokens) AS SIGNED) AS n FROM usage_daily"
            ),
            100 + 101 + 102 + 103 + 104
        );
        assert_eq!(
            count(
                &env,
                "SELECT CAST(SUM(cost_micros) AS SIGNED) AS n FROM usage_daily"
            ),
            5_000
        );
    } else {
        let records = actors
            .cache
            .recent_records(&key_id, 100)
            .await
            .expect("records");
        let stored: BTreeSet<String> = records
            .iter()
            .map(|r| {
                serde_json::from_str::<UsageEvent>(r)
                    .expect("an event")
                    .request_id
            })
            .collect();
        assert_eq!(records.len(), 5);
        assert_eq!(stored, expected_ids);
        let archive: i64 = super::redis_query(
            super::shared_redis_port(),
            ::redis::cmd("LLEN").arg(format!("{}usage:archive", env.key_prefix)),
        );
        assert_eq!(archive, 5);
    }
}

/// Concurrent patches of one account (a request's 5-hour window, a refreshed token, the
/// profile) each start from the others' writes: none is lost. A patch read the row before
/// another wrote it, then wrote its stale copy back (a refreshed token was undone so).
async fn concurrent_account_patches_lose_nothing(mode: StorageMode) {
    let env = env_in(mode);
    let actors = start(&env);
    let router = &actors.router;
    wait_status(router, HealthStatus::Healthy).await;
    let mut account = new_account(&env, "patched", 10);
    account.description.clear();
    router
        .create_account(account.clone())
        .await
        .expect("create");

    let patches = (0..20).map(|i| {
        let patch = std::sync::Arc::new(move |a: &mut claude_relay::domain::account::Account| {
            a.description.push_str(&format!("<{i}>"));
            true
        });
        router.patch_account(&account.id, patch)
    });
    for r in futures_util::future::join_all(patches).await {
        r.expect("patch");
    }
    let stored = router
        .get_account(&account.id)
        .await
        .expect("get")
        .expect("found");
    let seen: BTreeSet<String> = (0..20)
        .map(|i| format!("<{i}>"))
        .filter(|t| stored.description.contains(t.as_str()))
        .collect();
    assert_eq!(seen.len(), 20, "{}", stored.description);
    assert_eq!(
        stored.description.len(),
        (0..20).map(|i: i32| i.to_string().len() + 2).sum::<usize>()
    );
}

#[actix_rt::test]
async fn concurrent_account_patches_lose_nothing_in_hybrid_mode() {
    concurrent_account_patches_lose_nothing(StorageMode::Hybrid).await;
}

#[actix_rt::test]
async fn concurrent_account_patches_lose_nothing_in_mysql_mode() {
    concurrent_account_patches_lose_nothing(StorageMode::Mysql).await;
}

/// Redis mode serialises this instance's patches (not those of several instances).
#[actix_rt::test]
async fn concurrent_account_patches_lose_nothing_in_redis_mode() {
    concurrent_account_patches_lose_nothing(StorageMode::Redis).await;
}
