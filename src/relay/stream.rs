//! SSE pass-through: upstream chunks go to the client as they arrive while usage is
//! collected on the way; the end of the stream (complete, upstream failure or client
//! gone) is reported exactly once so usage is recorded and the lease released.

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

pub struct RelayStream {
    upstream: Upstream,
    usage: SseUsageCollector,
    finish: Option<Finish>,
    error_frame: Option<Bytes>,
    done: bool,
}

impl RelayStream {
    pub fn new(upstream: Upstream, finish: Finish) -> Self {
        RelayStream {
            upstream,
            usage: SseUsageCollector::new(),
            finish: Some(finish),
            error_frame: None,
            done: false,
        }
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
        if let Some(frame) = self.error_frame.take() {
            self.done = true;
            return Poll::Ready(Some(Ok(frame)));
        }
        if self.done {
            return Poll::Ready(None);
        }
        match self.upstream.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(chunk))) => {
                self.usage.feed(&chunk);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(Some(Err(e))) => {
                log::warn!("upstream stream failed: {}", e.without_url());
                self.end(StreamEnd::UpstreamFailed);
                self.done = true;
                Poll::Ready(Some(Ok(error_frame(
                    "the upstream connection failed during the answer",
                ))))
            }
            Poll::Ready(None) => {
                self.end(StreamEnd::Complete);
                self.done = true;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
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
