//! SSE pass-through: upstream chunks go to the client as they arrive (rewritten into the
//! client's dialect when it is not Anthropic's) while usage is collected on the way; the
//! end of the stream (complete, upstream failure or client gone) is reported exactly once
//! so usage is recorded and the lease released. The chunk that carries `message_stop` is held
//! back until the usage is journaled: a client never has a whole answer whose usage is not
//! recorded.

use super::upstream::BodyStream;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;

use crate::domain::usage::{SseUsageCollector, Usage};

/// How a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    Complete,
    UpstreamFailed,
    ClientGone,
}

/// Called once when the stream ends, with the usage seen; an error replaces the final event
/// (the usage could not be recorded).
pub type Finish = Box<dyn FnOnce(Option<Usage>, StreamEnd) -> Result<(), crate::error::AppError>>;

/// What a client is told instead of the end of an answer whose usage was not recorded.
const UNRECORDED: &str = "the usage of this answer could not be recorded; try again shortly";

/// The event name that ends a Messages stream.
const STOP_EVENT: &[u8] = b"message_stop";

type Upstream = BodyStream;

/// Rewrites the upstream's Anthropic SSE into another dialect's stream, chunk by chunk.
pub trait StreamRewrite {
    /// The client's bytes for the next upstream chunk (may be empty).
    fn chunk(&mut self, upstream: &[u8]) -> Bytes;
    /// The client's last bytes when the upstream ended normally (may be empty).
    fn end(&mut self) -> Bytes;
    /// The event sent when the upstream fails mid-stream.
    fn failure(&mut self, message: &str) -> Bytes;
}

pub struct RelayStream {
    upstream: Upstream,
    usage: SseUsageCollector,
    finish: Option<Finish>,
    /// The last bytes of the previous chunk (`message_stop` may straddle two chunks).
    tail: Vec<u8>,
    rewrite: Option<Box<dyn StreamRewrite>>,
    done: bool,
}

impl RelayStream {
    pub fn new(upstream: Upstream, finish: Finish) -> Self {
        RelayStream {
            upstream,
            usage: SseUsageCollector::new(),
            finish: Some(finish),
            tail: Vec::new(),
            rewrite: None,
            done: false,
        }
    }

    /// Sends the client `rewrite`'s translation instead of the upstream's bytes.
    pub fn with_rewrite(mut self, rewrite: Option<Box<dyn StreamRewrite>>) -> Self {
        self.rewrite = rewrite;
        self
    }

    /// The frame that ends a stream early, in the client's dialect.
    fn failure_frame(&mut self, message: &str) -> Bytes {
        match self.rewrite.as_mut() {
            Some(rewrite) => rewrite.failure(message),
            None => error_frame(message),
        }
    }

    /// Reports the end once; false when the usage could not be recorded.
    fn end(&mut self, how: StreamEnd) -> bool {
        let Some(finish) = self.finish.take() else {
            return true;
        };
        // `finish` also parses a last line the upstream did not end with a newline.
        let usage = std::mem::take(&mut self.usage).finish();
        match finish(usage, how) {
            Ok(()) => true,
            Err(e) => {
                log::error!("stream answer withheld: {e}");
                false
            }
        }
    }

    /// True when `chunk` (with the end of the previous one) completes `message_stop`.
    fn ends_answer(&mut self, chunk: &[u8]) -> bool {
        const KEEP: usize = STOP_EVENT.len() - 1;
        // Across the seam: the previous chunk's last bytes and this one's first.
        let head = &chunk[..chunk.len().min(KEEP)];
        let mut seam = [0u8; 2 * KEEP];
        let seam_len = self.tail.len() + head.len();
        seam[..self.tail.len()].copy_from_slice(&self.tail);
        seam[self.tail.len()..seam_len].copy_from_slice(head);
        let seam = &seam[..seam_len];
        let found = memchr::memmem::find(seam, STOP_EVENT).is_some()
            || memchr::memmem::find(chunk, STOP_EVENT).is_some();
        // A chunk shorter than KEEP is all in the seam, after the old tail.
        let window = if chunk.len() >= KEEP { chunk } else { seam };
        self.tail.clear();
        self.tail
            .extend_from_slice(&window[window.len().saturating_sub(KEEP)..]);
        found
    }
}

/// The SSE frame sent when the upstream fails after the stream started.
pub fn error_frame(message: &str) -> Bytes {
    let body = serde_json::json!({
        "type": "error",
        "error": { "type": "api_error", "message": message },
    });
    Bytes::from(format!("event: error\ndata: {body}\n\n"))
}

impl Stream for RelayStream {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        loop {
            match self.upstream.as_mut().poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    self.usage.feed(&chunk);
                    if self.finish.is_some()
                        && self.ends_answer(&chunk)
                        && !self.end(StreamEnd::Complete)
                    {
                        self.done = true;
                        let frame = self.failure_frame(UNRECORDED);
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    let out = match self.rewrite.as_mut() {
                        Some(rewrite) => rewrite.chunk(&chunk),
                        None => chunk,
                    };
                    // A rewrite may have nothing to say yet (a partial event, a ping).
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(out)));
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    log::warn!("upstream stream failed: {e}");
                    // An unfinished answer: its usage (if any) is recorded, an error ends it.
                    let _recorded = self.end(StreamEnd::UpstreamFailed);
                    self.done = true;
                    let frame =
                        self.failure_frame("the upstream connection failed during the answer");
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(None) => {
                    self.done = true;
                    if !self.end(StreamEnd::Complete) {
                        let frame = self.failure_frame(UNRECORDED);
                        return Poll::Ready(Some(Ok(frame)));
                    }
                    let tail = self.rewrite.as_mut().map(|r| r.end());
                    return Poll::Ready(tail.filter(|t| !t.is_empty()).map(Ok));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for RelayStream {
    fn drop(&mut self) {
        // Dropped before the end: the client went away. Dropping `upstream` closes the
        // upstream connection, which cancels the upstream request.
        let _recorded = self.end(StreamEnd::ClientGone);
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use futures_util::StreamExt;

    use super::*;
    use crate::relay::upstream::UpstreamError;

    const START: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"m\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n";
    /// The last event with no newline after it.
    const DELTA_UNTERMINATED: &str =
        "event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":12}}";

    /// Runs a `RelayStream` over `chunks` to its end; returns what the client got and what
    /// `finish` was called with.
    async fn relay(chunks: &[&'static str]) -> (String, Vec<(Option<Usage>, StreamEnd)>) {
        let ends = Rc::new(RefCell::new(Vec::new()));
        let seen = ends.clone();
        let upstream = futures_util::stream::iter(
            chunks
                .iter()
                .map(|c| Ok::<_, UpstreamError>(Bytes::from_static(c.as_bytes())))
                .collect::<Vec<_>>(),
        );
        let stream = RelayStream::new(
            Box::pin(upstream),
            Box::new(move |usage, how| {
                seen.borrow_mut().push((usage, how));
                Ok(())
            }),
        );
        let sent: Vec<_> = stream.collect().await;
        let text = sent
            .into_iter()
            .map(|c| String::from_utf8(c.unwrap().to_vec()).unwrap())
            .collect();
        let ends = ends.borrow().clone();
        (text, ends)
    }

    #[test]
    fn the_stop_event_is_found_in_the_chunk_that_completes_it_however_it_is_cut() {
        let text = b"data: {}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        // Where each occurrence of the stop event ends.
        let ends: Vec<usize> = memchr::memmem::find_iter(text, STOP_EVENT)
            .map(|at| at + STOP_EVENT.len())
            .collect();
        assert_eq!(ends.len(), 2);
        for size in 1..=text.len() {
            let mut stream = RelayStream::new(
                Box::pin(futures_util::stream::empty()),
                Box::new(|_, _| Ok(())),
            );
            let mut start = 0;
            for chunk in text.chunks(size) {
                let end = start + chunk.len();
                let completes = ends.iter().any(|&e| e > start && e <= end);
                assert_eq!(
                    stream.ends_answer(chunk),
                    completes,
                    "size {size} at {start}"
                );
                start = end;
            }
        }
    }

    #[tokio::test]
    async fn last_line_without_newline_counts() {
        let (text, ends) = relay(&[START, DELTA_UNTERMINATED]).await;
        assert_eq!(text, format!("{START}{DELTA_UNTERMINATED}"));
        let usage = Usage {
            input_tokens: 25,
            output_tokens: 12,
            ..Usage::default()
        };
        assert_eq!(ends, vec![(Some(usage), StreamEnd::Complete)]);
    }

    #[tokio::test]
    async fn stream_without_usage_ends_once_with_none() {
        let (_, ends) = relay(&["event: ping\ndata: {\"type\":\"ping\"}"]).await;
        assert_eq!(ends, vec![(None, StreamEnd::Complete)]);
    }
}
