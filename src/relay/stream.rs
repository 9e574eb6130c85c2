//! SSE pass-through: upstream chunks go to the client as they arrive (rewritten into the
//! client's dialect when it is not Anthropic's) while usage is collected on the way; the
//! end of the stream (complete, upstream failure or client gone) is reported exactly once
//! so usage is recorded and the lease released.

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

/// Called once when the stream ends, with the usage seen.
pub type Finish = Box<dyn FnOnce(Option<Usage>, StreamEnd)>;

type Upstream = Pin<Box<dyn Stream<Item = Result<Bytes, reqwest::Error>>>>;

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
    rewrite: Option<Box<dyn StreamRewrite>>,
    done: bool,
}

impl RelayStream {
    pub fn new(upstream: Upstream, finish: Finish) -> Self {
        RelayStream {
            upstream,
            usage: SseUsageCollector::new(),
            finish: Some(finish),
            rewrite: None,
            done: false,
        }
    }

    /// Sends the client `rewrite`'s translation instead of the upstream's bytes.
    pub fn with_rewrite(mut self, rewrite: Option<Box<dyn StreamRewrite>>) -> Self {
        self.rewrite = rewrite;
        self
    }

    fn end(&mut self, how: StreamEnd) {
        if let Some(finish) = self.finish.take() {
            finish(self.usage.usage(), how);
        }
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
                    log::warn!("upstream stream failed: {}", e.without_url());
                    self.end(StreamEnd::UpstreamFailed);
                    self.done = true;
                    let message = "the upstream connection failed during the answer";
                    let frame = match self.rewrite.as_mut() {
                        Some(rewrite) => rewrite.failure(message),
                        None => error_frame(message),
                    };
                    return Poll::Ready(Some(Ok(frame)));
                }
                Poll::Ready(None) => {
                    self.end(StreamEnd::Complete);
                    self.done = true;
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
        self.end(StreamEnd::ClientGone);
    }
}
