//! Archive rows go to MySQL through prepared statements of fixed row counts (128, 64, …, 1):
//! every column of every row reads back as written whatever the batch's size (text with
//! tabs, newlines, quotes, backslashes, NUL and non-ASCII too), and a batch written again adds
//! nothing, whether it is looked up first or meets the unique request id, also when only some
//! of its rows are archived already.

use std::collections::BTreeMap;
use std::sync::Arc;

use claude_relay::actors::router::HealthStatus;
use claude_relay::config::StorageMode;
use claude_relay::domain::usage_event::UsageEvent;
use claude_relay::ledger::ArchiveBoundary;
use claude_relay::persistence::ledger;
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
            e.model = match i % 7 {
                0 => "claude-opus-4-1".into(),
                3 => format!("model\t{i}\n\\N\r\\\0 \"q\" 'q' ✓"),
                _ => "claude-sonnet-4-5".into(),
            };
            if i % 6 == 2 {
                e.upstream_request_id = Some("\\N".into());
            }
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

/// The key's archive rows and the requests its daily roll-ups count.
fn rows_and_requests(env: &crate::support::TestEnv, key_id: &str) -> (i64, i64) {
    let rows = count(
        env,
        &format!("SELECT COUNT(*) AS n FROM usage_records WHERE api_key_id = '{key_id}'"),
    );
    let requests = count(
        env,
        &format!(
            "SELECT CAST(COALESCE(SUM(requests), 0) AS SIGNED) AS n FROM usage_daily \
             WHERE api_key_id = '{key_id}'"
        ),
    );
    (rows, requests)
}

/// A hybrid relay's actors on a test environment of their own, once both backends are up.
async fn healthy_hybrid() -> (crate::support::TestEnv, claude_relay::app::Actors) {
    let env = env_in(StorageMode::Hybrid);
    let actors = start(&env);
    wait_status(&actors.router, HealthStatus::Healthy).await;
    (env, actors)
}

#[actix_rt::test]
async fn archive_rows_read_back_as_written_in_every_statement_size_and_once() {
    let (env, actors) = healthy_hybrid().await;
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
    assert_eq!(rows_and_requests(&env, &key_id), (203, 203));

    // Part old, part new: the unique request id stops the journal path, the look-up finds
    // the archived ones, and only the 30 new rows are written and rolled up.
    let mut mixed: Vec<ArchiveItem> = batch[150..].to_vec();
    for (n, mut item) in items(&key_id, 30).into_iter().enumerate() {
        item.event.request_id = format!("req_mixed_{n}");
        mixed.insert(n, item);
    }
    let new_ones = store
        .exec(move |c| Box::pin(usage::insert_journal_batch(c, mixed, 8)))
        .await
        .expect("insert part of it again");
    assert_eq!(new_ones, 30);
    assert_eq!(rows_and_requests(&env, &key_id), (233, 233));
}

/// Archives journal records `seqs` of `instance` in one batch; returns what it archived.
async fn archive_journal(
    store: &claude_relay::actors::persistence::PersistenceHandle,
    key_id: &str,
    instance: &str,
    seqs: std::ops::RangeInclusive<u64>,
) -> Vec<ArchiveItem> {
    let instance: Arc<str> = Arc::from(instance);
    let batch: Vec<ArchiveItem> = seqs
        .map(|seq| ArchiveItem {
            event: event(key_id, "acct", i64::try_from(seq).unwrap_or(0)),
            journal: Some((instance.clone(), seq)),
            counters: Vec::new(),
        })
        .collect();
    let items = batch.clone();
    store
        .exec(move |c| Box::pin(usage::insert_journal_batch(c, items, 8)))
        .await
        .expect("archive");
    batch
}

async fn boundaries(
    store: &claude_relay::actors::persistence::PersistenceHandle,
) -> std::collections::HashMap<String, ArchiveBoundary> {
    let now = chrono::Utc::now();
    store
        .exec(move |c| Box::pin(ledger::snapshot(c, now, 8)))
        .await
        .expect("snapshot")
        .boundaries
}

/// Each archive batch moves its instance's checkpoint, never back; the rows archived after
/// a boundary are found from it, page by page, in sequence order, and only that instance's.
#[actix_rt::test]
async fn checkpoints_name_where_each_journal_stands_and_find_the_rows_after_it() {
    let (env, actors) = healthy_hybrid().await;
    let store = &actors.store;
    let key_id = uuid::Uuid::new_v4().to_string();
    let (a, b) = ("instance-a", "instance-b");
    let first_a = archive_journal(store, &key_id, a, 1..=5).await;
    archive_journal(store, &key_id, b, 1..=3).await;
    archive_journal(store, &key_id, a, 6..=8).await;
    let before = boundaries(store).await;
    assert_eq!(before.len(), 2);
    let (at_a, at_b) = (before[a], before[b]);
    assert_eq!((at_a.seq, at_b.seq), (8, 3));
    let last_statement_of_a = count(
        &env,
        "SELECT id AS n FROM usage_records WHERE instance_id = 'instance-a' AND journal_seq = 8",
    );
    assert_eq!(
        at_a.row_id,
        u64::try_from(last_statement_of_a).expect("id"),
        "the first id of the batch's last statement (6..=8 went as 2 rows, then 1)"
    );

    let later_a = archive_journal(store, &key_id, a, 9..=12).await;
    archive_journal(store, &key_id, b, 4..=5).await;
    // A batch met again (a crash between commit and the local checkpoint) moves nothing
    // back, whether its rows are old or the newest.
    for again in [first_a, later_a.clone()] {
        let rewritten = store
            .exec(move |c| Box::pin(usage::insert_journal_batch(c, again, 8)))
            .await
            .expect("archive again");
        assert_eq!(rewritten, 0);
    }
    let now = boundaries(store).await;
    assert_eq!((now[a].seq, now[b].seq), (12, 5));
    assert!(now[a].row_id > at_a.row_id);

    // From the older boundary, in pages of 3: 9, 10, 11, then 12, then nothing.
    let mut after = at_a;
    let mut pages = Vec::new();
    loop {
        let page = store
            .exec(move |c| Box::pin(ledger::rows_after(c, "instance-a".into(), after, 3)))
            .await
            .expect("rows after");
        let Some(last) = page.last() else { break };
        after = ArchiveBoundary {
            seq: last.seq,
            row_id: last.row_id,
        };
        pages.push(page);
    }
    let seqs: Vec<Vec<u64>> = pages
        .iter()
        .map(|p| p.iter().map(|r| r.seq).collect())
        .collect();
    assert_eq!(seqs, vec![vec![9, 10, 11], vec![12]]);
    let read: Vec<&str> = pages
        .iter()
        .flatten()
        .map(|r| r.event.request_id.as_str())
        .collect();
    let written: Vec<&str> = later_a
        .iter()
        .map(|i| i.event.request_id.as_str())
        .collect();
    assert_eq!(read, written, "the rows as first archived");
    // A boundary without a row id (an epoch built before row ids were kept) scans from the
    // start and finds the same rows.
    let bare = ArchiveBoundary { seq: 8, row_id: 0 };
    let from_start = store
        .exec(move |c| Box::pin(ledger::rows_after(c, "instance-a".into(), bare, 100)))
        .await
        .expect("rows after");
    let from_start: Vec<u64> = from_start.iter().map(|r| r.seq).collect();
    assert_eq!(from_start, vec![9, 10, 11, 12]);
    assert_eq!(
        count(&env, "SELECT COUNT(*) AS n FROM journal_checkpoints"),
        2
    );
    // Each row once in the requests per minute, however often its batch was archived.
    assert_eq!(
        count(
            &env,
            "SELECT CAST(SUM(requests) AS SIGNED) AS n FROM usage_minutely"
        ),
        5 + 3 + 3 + 4 + 2
    );
}

/// The minutely roll-up keeps a week before the newest archived event; the archive keeps
/// every row.
#[actix_rt::test]
async fn the_minutely_roll_up_keeps_a_week() {
    let (env, actors) = healthy_hybrid().await;
    let store = &actors.store;
    let key_id = uuid::Uuid::new_v4().to_string();
    let now = chrono::Utc::now();
    let at = |ago: chrono::Duration| {
        let mut e = event(&key_id, "acct", 1);
        e.created_at = now - ago;
        ArchiveItem::bare(e)
    };
    let minutes = |env: &crate::support::TestEnv| {
        count(
            env,
            "SELECT CAST(COUNT(*) AS SIGNED) AS n FROM usage_minutely",
        )
    };
    // A batch of old events alone (a backlog archived late) keeps its minute: the week is
    // counted back from the newest event of a batch.
    let old = vec![at(chrono::Duration::days(8))];
    store
        .exec(move |c| Box::pin(usage::insert_batch(c, old, 8)))
        .await
        .expect("archive the old event");
    assert_eq!(minutes(&env), 1);
    let recent = vec![
        at(chrono::Duration::days(6)),
        at(chrono::Duration::minutes(2)),
        at(chrono::Duration::zero()),
    ];
    store
        .exec(move |c| Box::pin(usage::insert_batch(c, recent, 8)))
        .await
        .expect("archive the recent events");
    let oldest_kept = count(
        &env,
        "SELECT CAST(TIMESTAMPDIFF(DAY, MIN(minute), UTC_TIMESTAMP()) AS SIGNED) AS n \
         FROM usage_minutely",
    );
    assert_eq!(
        oldest_kept, 6,
        "the 8-day-old minute is gone, the 6-day-old one kept"
    );
    assert_eq!(minutes(&env), 3);
    assert_eq!(
        rows_and_requests(&env, &key_id).0,
        4,
        "the archive keeps every row"
    );
}
