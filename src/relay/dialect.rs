//! The API a client speaks: Anthropic Messages (passed through untouched) or OpenAI Chat
//! Completions (translated into a Messages request before the pipeline, and its answer
//! translated back). The pipeline calls these seams and is otherwise one code path.

use bytes::Bytes;
use serde_json::Value;

use super::stream::StreamRewrite;
use crate::domain::openai::stream::ChatStreamTranslator;
use crate::domain::openai::{self, ChatOptions};
use crate::error::AppError;

/// The request format of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Anthropic,
    OpenAiChat,
}

/// How the upstream's answer reaches the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerFormat {
    /// As the upstream sent it.
    Anthropic,
    /// Translated into a chat completion (or its chunks).
    OpenAiChat(ChatOptions),
}

/// A client's request in Messages form.
pub struct Prepared {
    /// The parsed Messages request (a JSON object).
    pub request: Value,
    /// The bytes sent upstream: the client's own for Anthropic, the translation otherwise.
    pub body: Bytes,
    pub answer: AnswerFormat,
}

impl Dialect {
    /// Parses (and translates) the client's body; `Err` names what is wrong with it.
    pub fn prepare(self, body: Bytes) -> Result<Prepared, AppError> {
        match self {
            Dialect::Anthropic => {
                let request: Value = serde_json::from_slice(&body).map_err(|e| {
                    AppError::InvalidRequest(format!("request body is not valid JSON: {e}"))
                })?;
                if !request.is_object() {
                    return Err(AppError::InvalidRequest(
                        "request body must be a JSON object".into(),
                    ));
                }
                Ok(Prepared {
                    request,
                    body,
                    answer: AnswerFormat::Anthropic,
                })
            }
            Dialect::OpenAiChat => {
                let translated =
                    openai::request::to_claude_request(&body).map_err(AppError::InvalidRequest)?;
                let bytes = serde_json::to_vec(&translated.body)
                    .map_err(|e| AppError::Internal(format!("serializing a request: {e}")))?;
                Ok(Prepared {
                    request: translated.body,
                    body: Bytes::from(bytes),
                    answer: AnswerFormat::OpenAiChat(translated.options),
                })
            }
        }
    }
}

impl AnswerFormat {
    /// True when the answer is rewritten (its content type becomes JSON / SSE of ours).
    pub fn is_translated(self) -> bool {
        self != AnswerFormat::Anthropic
    }

    /// Whether the client's Anthropic headers (version, beta flags, SDK headers) are
    /// forwarded: an OpenAI client's headers mean nothing to the Messages API.
    pub fn forwards_client_headers(self) -> bool {
        self == AnswerFormat::Anthropic
    }

    /// An upstream error answer in the client's dialect.
    pub fn upstream_error(self, status: u16, body: Bytes) -> Bytes {
        match self {
            AnswerFormat::Anthropic => body,
            AnswerFormat::OpenAiChat(_) => {
                Bytes::from(openai::error::from_upstream(status, &body).to_string())
            }
        }
    }

    /// A successful non-streaming answer in the client's dialect; `created` is the Unix
    /// time to report.
    pub fn success(self, body: Bytes, created: i64) -> Result<Bytes, AppError> {
        match self {
            AnswerFormat::Anthropic => Ok(body),
            AnswerFormat::OpenAiChat(_) => openai::response::translate_body(&body, created)
                .map(Bytes::from)
                .map_err(|e| {
                    log::warn!("cannot translate an upstream answer: {e}");
                    AppError::UpstreamUnreachable(format!(
                        "the upstream answer could not be translated: {e}"
                    ))
                }),
        }
    }

    /// The rewrite of a streamed answer, if any.
    pub fn stream_rewrite(self, created: i64) -> Option<Box<dyn StreamRewrite>> {
        match self {
            AnswerFormat::Anthropic => None,
            AnswerFormat::OpenAiChat(options) => {
                Some(Box::new(ChatStreamTranslator::new(options, created)))
            }
        }
    }
}

impl StreamRewrite for ChatStreamTranslator {
    fn chunk(&mut self, upstream: &[u8]) -> Bytes {
        let mut out = Vec::new();
        self.feed(upstream, &mut out);
        Bytes::from(out)
    }

    fn end(&mut self) -> Bytes {
        let mut out = Vec::new();
        self.finish(&mut out);
        Bytes::from(out)
    }

    fn failure(&mut self, message: &str) -> Bytes {
        Bytes::from(ChatStreamTranslator::failure_event(message))
    }
}
