//! OpenAI Chat Completions ↔ Anthropic Messages translation (pure, no I/O): the request
//! (`request`), the JSON answer (`response`), the SSE stream (`stream`) and error bodies
//! (`error`).

pub mod error;
pub mod request;
pub mod response;
pub mod stream;

/// What the answer translation needs to know about the client's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChatOptions {
    /// The client asked for a stream (`stream: true`).
    pub stream: bool,
    /// The client asked for a final usage chunk (`stream_options.include_usage`).
    pub include_usage: bool,
}

/// The OpenAI `finish_reason` of an Anthropic `stop_reason`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn and anything new: the model stopped.
        _ => "stop",
    }
}
