//! The concurrency queue (issue 13): a request over its key's concurrency limit waits for a
//! slot (`CONCURRENCY_QUEUE_WAIT_MS`), is served when one frees, gets 429 when the wait
//! runs out or the line (`CONCURRENCY_QUEUE_MAX`) is full, and leaves the line when its
//! client goes away.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::harness::{Relay, SONNET, answer, error_body, request, start};
use crate::support::{Behaviour, eventually};

/// A relay whose only account streams its answer only as `gate` lets it, and a key with
/// concurrency 1 whose slot is held by a first streaming request (returned, unread).
async fn held_slot(wait_ms: &str) -> (Relay, Arc<Semaphore>, String, reqwest::Response) {
    let wait_ms = wait_ms.to_string();
    let relay = start(move |env| {
        env.set("CONCURRENCY_QUEUE_WAIT_MS", wait_ms);
        env.set("CONCURRENCY_QUEUE_MAX", "1");
    })
    .await;
    relay.console("gated", "sk-gated", 10).await;
    let gate = Arc::new(Semaphore::new(0));
    relay
        .mock
        .set("sk-gated", Behaviour::Gated { gate: gate.clone() });
    let (_, plaintext) = relay.key(|k| k.concurrency_limit = 1).await;
    let mut held = relay
        .post(
            "/api/v1/messages",
            Some(&plaintext),
            &request(SONNET, true, "one"),
        )
        .await;
    assert_eq!(held.status(), 200);
    held.chunk().await.unwrap().expect("first event");
    (relay, gate, plaintext, held)
}

#[actix_rt::test]
async fn a_queued_request_is_served_when_the_slot_frees() {
    let (relay, gate, plaintext, held) = held_slot("15000").await;
    let (client, url, key) = (
        relay.app.client.clone(),
        relay.app.url("/api/v1/messages"),
        plaintext.clone(),
    );
    let queued = actix_rt::spawn(async move {
        let resp = client
            .post(url)
            .header("x-api-key", key)
            .json(&request(SONNET, true, "two"))
            .send()
            .await
            .unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    });
    // The queued request is in the line (the only one waiting) before any probe is sent.
    eventually(Duration::from_secs(10), "one request waiting", || async {
        let text = relay
            .app
            .client
            .get(relay.app.url("/metrics"))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        if text.contains("claude_relay_concurrency_queue_waiting 1\n") {
            Ok(())
        } else {
            Err("the queued request is not waiting yet".to_string())
        }
    })
    .await;
    // The line holds one: once the queued request is in it, another is refused at once.
    // Each probe gives up after 300 ms, leaving the line if it got into it.
    let full = error_body(
        "rate_limit_error",
        "concurrency limit exceeded for this API key and its queue is full",
    );
    eventually(Duration::from_secs(10), "the line is full", || async {
        let probe = relay
            .app
            .client
            .post(relay.app.url("/api/v1/messages"))
            .header("x-api-key", &plaintext)
            .timeout(Duration::from_millis(300))
            .json(&request(SONNET, false, "probe"))
            .send()
            .await;
        match probe {
            Ok(resp) => {
                let (status, _, body) = answer(resp).await;
                if (status, &body) == (429, &full) {
                    Ok(())
                } else {
                    Err(format!("{status} {body}"))
                }
            }
            Err(e) => Err(e.to_string()),
        }
    })
    .await;
    assert_eq!(relay.mock.message_count(), 1, "the queued request waits");

    gate.add_permits(1000);
    let rest = held.text().await.unwrap();
    assert!(rest.ends_with("data: {\"type\":\"message_stop\"}\n\n"));
    let (status, text) = queued.await.unwrap();
    assert_eq!(status, 200, "{text}");
    assert!(text.ends_with("data: {\"type\":\"message_stop\"}\n\n"));
    assert_eq!(
        relay.mock.message_count(),
        2,
        "the first and the queued request only: probes that left the line were not served"
    );
}

#[actix_rt::test]
async fn a_queued_request_gets_429_when_the_wait_runs_out() {
    let (relay, gate, plaintext, held) = held_slot("400").await;
    let started = Instant::now();
    let (status, retry, body) = relay
        .message(&plaintext, &request(SONNET, false, "two"))
        .await;
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(
        (status, retry.as_deref(), body),
        (
            429,
            Some("1"),
            error_body(
                "rate_limit_error",
                "concurrency limit exceeded for this API key: no slot freed within 400 ms"
            )
        )
    );
    assert_eq!(relay.mock.message_count(), 1);
    gate.add_permits(1000);
    held.text().await.unwrap();
}
