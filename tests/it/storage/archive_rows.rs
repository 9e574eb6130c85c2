//! Archive rows go to MySQL through prepared statements of fixed row counts (128, 64, …, 1):
//! every column of every row reads back as written whatever the batch's size, and a batch
//! written again adds nothing, whether it is looked up first or meets the unique request id.

use std::collections::BTreeMap;
use std::sync::Arc;

use claude_relay::actors::router::HealthStatus;
use claude_relay::config::StorageMode;
use claude_relay::domain::usage_event::UsageEvent;
use claude_relay::persistence::usage::{self, ArchiveItem};

use super::{count, env_in, event, start, wait_status};

/// Events with every kind of value: upstream id or none, journal or none, text that is not
/// plain ASCII, a stream, a large latency.
fn items(key_id: &str, n: i64) -> Vec<ArchiveItem> {
    let instance: Arc<str> = Arc::from("archive-rows-instance");
    (0..n)
        .map(|i| {
            let mut e = event(key_id, if i % 3 == 0 { "" } else { "acct-é" }, i);
            e.upstream_request_id = (i % 2 == 0).then(|| format!("msg_{i}"));
            e.model = if i % 5 == 0 {
                "claude-opus-4-1".into()
            } else {
                "claude-sonnet-4-5".into()
            };
            e.is_stream = i % 4 == 0;
            e.status_code = if i == 7 { 529 } else { 200 };
            e.latency_ms = 1_000_000 + u32::try_from(i).unwrap_or(0);
            e.cost_micros = 123_456_789 * i;
            ArchiveItem {
                event: e,
                journal: (i % 2 == 1).then(|| (instance.clone(), u64::try_from(i).unwrap_or(0))),
                counters: Vec::new(),
            }
        })
        .collect()
}

#[actix_rt::test]
async fn archive_rows_read_back_as_written_in_every_statement_size_and_once() {
    let env = env_in(StorageMode::Hybrid);
    let actors = start(&env);
    wait_status(&actors.router, HealthStatus::Healthy).await;
    let store = &actors.store;
    let key_id = uuid::Uuid::new_v4().to_string();
    // 203 = 128 + 64 + 8 + 2 + 1: five statement sizes in one batch.
    let batch = items(&key_id, 203);
    let written = {
        let batch = batch.clone();
        store
            .exec(move |c| Box::pin(usage::insert_journal_batch(c, batch, 8)))
            .await
            .expect("insert")
    };
    assert_eq!(written, 203);

    let read: Vec<UsageEvent> = {
        let key_id = key_id.clone();
        store
            .exec(move |c| Box::pin(usage::recent_for_key(c, key_id, 1_000)))
            .await
            .expect("read back")
    };
    let by_id: BTreeMap<&str, &UsageEvent> =
        read.iter().map(|e| (e.request_id.as_str(), e)).collect();
    assert_eq!(by_id.len(), 203);
    for item in &batch {
        assert_eq!(
            by_id.get(item.event.request_id.as_str()),
            Some(&&item.event)
        );
    }
    let journaled = count(
        &env,
        &format!(
            "SELECT COUNT(*) AS n FROM usage_records WHERE api_key_id = '{key_id}' \
         AND instance_id = 'archive-rows-instance' AND journal_seq % 2 = 1"
        ),
    );
    assert_eq!(journaled, 101, "the odd rows name their journal record");
    let without = count(
        &env,
        &format!(
            "SELECT COUNT(*) AS n FROM usage_records WHERE api_key_id = '{key_id}' \
         AND instance_id IS NULL AND journal_seq IS NULL"
        ),
    );
    assert_eq!(without, 102);

    // Written again: the journal path meets the unique request id and looks up; the other
    // looks up first. Neither adds a row or a roll-up.
    for journal_path in [true, false] {
        let batch = batch.clone();
        let again = store
            .exec(move |c| {
                Box::pin(async move {
                    if journal_path {
                        usage::insert_journal_batch(c, batch, 8).await
                    } else {
                        usage::insert_batch(c, batch, 8).await
                    }
                })
            })
            .await
            .expect("insert again");
        assert_eq!(again, 0);
    }
    let rows = count(
        &env,
        &format!("SELECT COUNT(*) AS n FROM usage_records WHERE api_key_id = '{key_id}'"),
    );
    assert_eq!(rows, 203);
    let requests = count(
        &env,
        &format!(
            "SELECT CAST(SUM(requests) AS SIGNED) AS n FROM usage_daily WHERE api_key_id = '{key_id}'"
        ),
    );
    assert_eq!(requests, 203);
}
