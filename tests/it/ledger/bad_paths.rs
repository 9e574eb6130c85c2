//! The ledger's bad paths through the binary: a journal record damaged on disk is reported
//! and skipped (the others are archived, the process lives on); a full journal follows
//! `USAGE_JOURNAL_FULL` (reject: 503 and nothing archived; serve: 200, counted as dropped).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Answer, Ledger, RECOVER, client, count, ledger_env, metric, send};
use crate::support::{TcpProxy, eventually, mysql, spawn_binary};

const HEALTHY: Duration = Duration::from_secs(20);

/// The segment files of a journal directory.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("journal dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("seg-") && n.ends_with(".jrn"))
        })
        .collect();
    found.sort();
    found
}

/// Flips one byte in the payload of the `index`-th record of `segment` (frames are
/// `[len u32 LE][crc32 u32 LE][payload]`); returns that payload as it was.
fn damage_record(segment: &Path, index: usize) -> Vec<u8> {
    let mut bytes = std::fs::read(segment).expect("read segment");
    let mut at = 0usize;
    for _ in 0..index {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += 8 + len;
    }
    let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let payload = bytes[at + 8..at + 8 + len].to_vec();
    bytes[at + 8 + len / 2] ^= 0x01;
    std::fs::write(segment, bytes).expect("write segment");
    payload
}

#[actix_rt::test]
async fn a_damaged_journal_record_is_reported_and_skipped_and_the_others_archived() {
    let proxy = TcpProxy::to_mysql();
    let env = ledger_env().with("MYSQL_PORT", proxy.port().to_string());
    let journal = PathBuf::from(env.var("USAGE_JOURNAL_DIR").expect("journal dir"));
    let f = Ledger::new(env).await;
    let mut relay = spawn_binary(&f.env).await;
    relay.wait_for_health("healthy", HEALTHY).await;
    let http = client();
    // One answer with MySQL up puts the key in the Redis cache (a key never seen cannot be
    // verified without MySQL) and is archived at once.
    let Answer::Ok(first) = send(&http, &relay.http.base, &f.plaintext, false).await else {
        panic!("the first request is not served")
    };
    eventually(RECOVER, "the first answer archived", || async {
        let n = count(&f.env, "SELECT COUNT(*) AS n FROM usage_records");
        if n == 1 {
            Ok(())
        } else {
            Err(format!("{n} rows"))
        }
    })
    .await;
    // MySQL away: the next events stay in the journal, unarchived.
    proxy.cut();
    relay
        .wait_for_backend("mysql", false, Duration::from_secs(10))
        .await;
    let mut ids = Vec::new();
    for i in 0..10 {
        match send(&http, &relay.http.base, &f.plaintext, i % 2 == 1).await {
            Answer::Ok(id) => ids.push(id),
            Answer::Refused(status, body) => panic!("request {i}: {status} {body}"),
            Answer::Broken(e) => panic!("request {i}: {e}"),
        }
    }
    relay.kill();
    assert_eq!(count(&f.env, "SELECT COUNT(*) AS n FROM usage_records"), 1);

    let segs = segments(&journal);
    assert_eq!(segs.len(), 1, "{segs:?}");
    // Record 0 is the archived first answer; record 4 one of those waiting for MySQL.
    let payload = damage_record(&segs[0], 4);
    let text = String::from_utf8_lossy(&payload);
    let damaged = ids
        .iter()
        .find(|id| text.contains(id.as_str()))
        .unwrap_or_else(|| panic!("record 4 is one of the unarchived answers: {text}"))
        .clone();

    proxy.open();
    let mut relay = spawn_binary(&f.env).await;
    eventually(RECOVER, "10 rows archived, backlog empty", || async {
        let rows = count(&f.env, "SELECT COUNT(*) AS n FROM usage_records");
        let (_, health) = relay.health().await;
        if rows == 10 && health["usageBacklog"]["events"] == 0 {
            Ok(())
        } else {
            Err(format!("{rows} rows; {health}"))
        }
    })
    .await;
    let archived: BTreeSet<String> = mysql::strings(
        &f.env.direct_mysql(),
        "SELECT request_id AS s FROM usage_records",
    )
    .into_iter()
    .collect();
    let want: BTreeSet<String> = ids
        .iter()
        .filter(|id| **id != damaged)
        .chain([&first])
        .cloned()
        .collect();
    assert_eq!(archived, want);
    let logs = relay.logs();
    assert!(
        logs.contains("journal record skipped in") && logs.contains("seg-"),
        "the damaged record is reported: {logs}"
    );
    assert!(relay.is_running(), "the relay lives on: {logs}");
    // And it still serves and archives.
    let Answer::Ok(next) = send(&http, &relay.http.base, &f.plaintext, false).await else {
        panic!("the relay does not serve after skipping a record")
    };
    eventually(RECOVER, "the next answer archived", || async {
        let n = count(
            &f.env,
            &format!("SELECT COUNT(*) AS n FROM usage_records WHERE request_id = '{next}'"),
        );
        if n == 1 {
            Ok(())
        } else {
            Err(format!("{n} rows"))
        }
    })
    .await;
}

#[actix_rt::test]
async fn a_full_journal_with_reject_answers_503_and_archives_nothing() {
    let env = ledger_env()
        .with("USAGE_JOURNAL_MAX_BYTES", "1")
        .with("USAGE_JOURNAL_FULL", "reject");
    let f = Ledger::new(env).await;
    let relay = spawn_binary(&f.env).await;
    relay.wait_for_health("healthy", HEALTHY).await;
    for stream in [false, true] {
        let response = relay
            .http
            .client
            .post(relay.http.url("/api/v1/messages"))
            .header("x-api-key", &f.plaintext)
            .json(&super::message(stream))
            .send()
            .await
            .expect("an answer");
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        if stream {
            // Headers of a stream go out before its usage is known: the refusal is the
            // stream's last event instead of its `message_stop`.
            assert_eq!(status, 200, "{body}");
            assert!(!body.contains("message_stop"), "stream: {body}");
            assert!(
                body.contains("the usage of this answer could not be recorded; try again shortly"),
                "stream: {body}"
            );
        } else {
            assert_eq!(status, 503, "{body}");
            let json: serde_json::Value = serde_json::from_str(&body).expect("JSON error");
            assert_eq!(json["error"]["code"], "storage_unavailable", "{body}");
            assert_eq!(
                json["error"]["message"],
                "storage unavailable: the usage of this answer cannot be recorded right now, try again shortly",
                "{body}"
            );
        }
    }
    eventually(RECOVER, "2 rejected in /metrics", || async {
        let rejected = metric(
            &relay.http,
            "claude_relay_usage_events{outcome=\"rejected\"}",
        )
        .await;
        if rejected == 2.0 {
            Ok(())
        } else {
            Err(format!("rejected {rejected}"))
        }
    })
    .await;
    assert_eq!(
        metric(
            &relay.http,
            "claude_relay_usage_events{outcome=\"recorded\"}"
        )
        .await,
        0.0
    );
    assert_eq!(
        metric(
            &relay.http,
            "claude_relay_usage_events{outcome=\"dropped\"}"
        )
        .await,
        0.0
    );
    assert_eq!(count(&f.env, "SELECT COUNT(*) AS n FROM usage_records"), 0);
    assert!(
        relay
            .logs()
            .contains("not journaled: the usage journal is full"),
        "{}",
        relay.logs()
    );
}

#[actix_rt::test]
async fn a_full_journal_with_serve_answers_200_and_counts_it_dropped() {
    let env = ledger_env()
        .with("USAGE_JOURNAL_MAX_BYTES", "1")
        .with("USAGE_JOURNAL_FULL", "serve");
    let f = Ledger::new(env).await;
    let relay = spawn_binary(&f.env).await;
    relay.wait_for_health("healthy", HEALTHY).await;
    let http = client();
    for i in 0..3 {
        match send(&http, &relay.http.base, &f.plaintext, i == 1).await {
            Answer::Ok(_) => {}
            Answer::Refused(status, body) => panic!("request {i}: {status} {body}"),
            Answer::Broken(e) => panic!("request {i}: {e}"),
        }
    }
    eventually(RECOVER, "3 dropped in /metrics", || async {
        let dropped = metric(
            &relay.http,
            "claude_relay_usage_events{outcome=\"dropped\"}",
        )
        .await;
        if dropped == 3.0 {
            Ok(())
        } else {
            Err(format!("dropped {dropped}"))
        }
    })
    .await;
    assert_eq!(
        metric(
            &relay.http,
            "claude_relay_usage_events{outcome=\"rejected\"}"
        )
        .await,
        0.0
    );
    assert_eq!(count(&f.env, "SELECT COUNT(*) AS n FROM usage_records"), 0);
    assert!(
        relay
            .logs()
            .contains("answer served without its usage (USAGE_JOURNAL_FULL=serve)"),
        "{}",
        relay.logs()
    );
}
