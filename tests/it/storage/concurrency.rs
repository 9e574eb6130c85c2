//! Concurrency leases under contention, in every mode: 50 simultaneous admissions against
//! a cap of 5 grant exactly 5; a lease whose holder died (never released) ends with its TTL.

use std::time::Duration;

use claude_relay::actors::router::HealthStatus;
use claude_relay::config::StorageMode;
use claude_relay::domain::limits::{Admission, AdmissionRequest};
use futures_util::future::join_all;

use super::{env_in, start, wait_status};
use crate::support::eventually;

in_every_mode!(
    fifty_concurrent_admits_grant_exactly_the_cap,
    a_dead_holders_lease_expires
);

fn request(scope: &str, cap: u32, ttl_ms: u64) -> AdmissionRequest {
    AdmissionRequest {
        lease_scope: scope.to_string(),
        lease_id: uuid::Uuid::new_v4().to_string(),
        lease_ttl_ms: ttl_ms,
        concurrency_limit: cap,
        window: None,
        cost_limits: Vec::new(),
    }
}

async fn fifty_concurrent_admits_grant_exactly_the_cap(mode: StorageMode) {
    // Row locks queue 50 transactions on a pool of 5: give them time on a busy machine.
    let env = env_in(mode).with("MYSQL_TIMEOUT_MS", "15000");
    let actors = start(&env);
    let router = &actors.router;
    wait_status(router, HealthStatus::Healthy).await;
    let scope = format!("key:{}", uuid::Uuid::new_v4());

    let answers = join_all((0..50).map(|_| {
        let router = router.clone();
        let req = request(&scope, 5, 60_000);
        async move { router.admit(req).await }
    }))
    .await;
    let granted = answers
        .iter()
        .filter(|a| matches!(a, Ok(Admission::Granted)))
        .count();
    let refused = answers
        .iter()
        .filter(|a| matches!(a, Ok(Admission::ConcurrencyExceeded)))
        .count();
    assert_eq!((granted, refused), (5, 45), "{answers:?}");
    assert_eq!(router.count_leases(&scope).await.expect("count"), 5);
}

async fn a_dead_holders_lease_expires(mode: StorageMode) {
    let env = env_in(mode);
    let actors = start(&env);
    let router = &actors.router;
    wait_status(router, HealthStatus::Healthy).await;
    let scope = format!("key:{}", uuid::Uuid::new_v4());

    // The holder takes the only slot and dies: it never releases. While its TTL runs (3 s,
    // far more than two calls take even on a loaded machine) the slot stays taken. Leases are
    // stamped with the wall clock (they are shared by instances), so the TTL is measured on it:
    // this VM's monotonic clock was once seen 0.7 s behind it over 3 s under load.
    let taken = chrono::Utc::now();
    assert_eq!(
        router
            .admit(request(&scope, 1, 3_000))
            .await
            .expect("admit"),
        Admission::Granted
    );
    assert_eq!(
        router
            .admit(request(&scope, 1, 60_000))
            .await
            .expect("admit"),
        Admission::ConcurrencyExceeded,
        "the lease is held before its TTL"
    );
    assert_eq!(router.count_leases(&scope).await.expect("count"), 1);
    eventually(Duration::from_secs(15), "slot freed by the TTL", || async {
        match router.admit(request(&scope, 1, 60_000)).await {
            Ok(Admission::Granted) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    // A lower bound only: load can make the expiry late, never early.
    let held = chrono::Utc::now() - taken;
    assert!(
        held >= chrono::TimeDelta::milliseconds(2_900),
        "freed after {held}, before the 3 s TTL"
    );
    assert_eq!(router.count_leases(&scope).await.expect("count"), 1);
}
