//! The API a client speaks: Anthropic Messages (passed through untouched) or OpenAI Chat
//! Completions (translated into a Messages request before the pipeline, and its answer
//! translated back). The pipeline calls these seams and is otherwise one code path.

use std::cell::OnceCell;
use std::fmt;

use bytes::Bytes;
use serde::Deserialize;
use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::stream::StreamRewrite;
use crate::domain::client::BodyMarks;
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
    /// What the pipeline reads of every request.
    pub facts: RequestFacts,
    /// The whole request as a JSON tree, built when something needs it.
    pub tree: RequestTree,
    /// The bytes sent upstream: the client's own for Anthropic, the translation otherwise.
    pub body: Bytes,
    pub answer: AnswerFormat,
}

/// What the pipeline reads of every Messages request, read from the body without building
/// its JSON tree: a Claude Code request carries tens of kilobytes of conversation that the
/// relay only passes on, and a tree allocates for every string and object in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestFacts {
    /// `model`, when it is a string.
    pub model: Option<String>,
    /// `stream`, when it is a boolean.
    pub stream: Option<bool>,
    /// Whether `messages` is an array.
    pub has_messages: bool,
    /// What the client checks read (Claude Code's system prompt, `metadata.user_id`); the
    /// user id is also the session of a request that has one (Claude Code's have).
    pub marks: BodyMarks,
}

impl RequestFacts {
    fn of(request: &Value) -> Self {
        RequestFacts::from_fields(
            &request["model"],
            &request["stream"],
            request["messages"].is_array(),
            &request["system"],
            &request["metadata"],
        )
    }

    fn from_fields(
        model: &Value,
        stream: &Value,
        has_messages: bool,
        system: &Value,
        metadata: &Value,
    ) -> Self {
        RequestFacts {
            model: model.as_str().map(str::to_string),
            stream: stream.as_bool(),
            has_messages,
            marks: BodyMarks::from_parts(model.is_string(), system, metadata),
        }
    }
}

/// The request's JSON tree, parsed on first use: shaping another client's request for a
/// subscription account, a model mapping, and the session of a request without a user id
/// read it; a request that needs none of them never builds it.
pub struct RequestTree {
    bytes: Bytes,
    tree: OnceCell<Value>,
}

impl RequestTree {
    fn built(tree: Value) -> Self {
        RequestTree {
            bytes: Bytes::new(),
            tree: OnceCell::from(tree),
        }
    }

    pub fn get(&self) -> Result<&Value, AppError> {
        if let Some(tree) = self.tree.get() {
            return Ok(tree);
        }
        let tree = parse_tree(&self.bytes)?;
        Ok(self.tree.get_or_init(|| tree))
    }
}

/// The whole body as a JSON object; `Err` names what is wrong with it.
fn parse_tree(body: &[u8]) -> Result<Value, AppError> {
    let request: Value = serde_json::from_slice(body)
        .map_err(|e| AppError::InvalidRequest(format!("request body is not valid JSON: {e}")))?;
    if !request.is_object() {
        return Err(AppError::InvalidRequest(
            "request body must be a JSON object".into(),
        ));
    }
    Ok(request)
}

/// The fields of [`RequestFacts`] as they come; every other field is skipped (its syntax
/// still checked). Each accepts any JSON value, so only the body's syntax, or a body that
/// is not an object, can fail the read.
#[derive(Deserialize)]
struct FactsView {
    #[serde(default)]
    model: Value,
    #[serde(default)]
    stream: Value,
    #[serde(default)]
    messages: IsArray,
    /// Small (a user id): read whole.
    #[serde(default)]
    metadata: Value,
    /// A few kilobytes (Claude Code's prompt), read whole for the client checks.
    #[serde(default)]
    system: Value,
}

/// Whether a JSON value is an array, read without keeping any of it.
#[derive(Default)]
struct IsArray(bool);

impl<'de> Deserialize<'de> for IsArray {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Check;
        impl<'de> Visitor<'de> for Check {
            type Value = IsArray;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<IsArray, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(IsArray(true))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<IsArray, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(IsArray(false))
            }
            fn visit_bool<E>(self, _: bool) -> Result<IsArray, E> {
                Ok(IsArray(false))
            }
            fn visit_i64<E>(self, _: i64) -> Result<IsArray, E> {
                Ok(IsArray(false))
            }
            fn visit_u64<E>(self, _: u64) -> Result<IsArray, E> {
                Ok(IsArray(false))
            }
            fn visit_f64<E>(self, _: f64) -> Result<IsArray, E> {
                Ok(IsArray(false))
            }
            fn visit_str<E>(self, _: &str) -> Result<IsArray, E> {
                Ok(IsArray(false))
            }
            fn visit_unit<E>(self) -> Result<IsArray, E> {
                Ok(IsArray(false))
            }
        }
        deserializer.deserialize_any(Check)
    }
}

/// The facts of a Messages body, and its tree when reading them needed it.
fn read_facts(body: &Bytes) -> Result<(RequestFacts, RequestTree), AppError> {
    // serde would read a struct from an array too: only an object takes the short way.
    let object = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let view = if object {
        serde_json::from_slice::<FactsView>(body).ok()
    } else {
        None
    };
    match view {
        Some(view) => Ok((
            RequestFacts::from_fields(
                &view.model,
                &view.stream,
                view.messages.0,
                &view.system,
                &view.metadata,
            ),
            RequestTree {
                bytes: body.clone(),
                tree: OnceCell::new(),
            },
        )),
        // Bad syntax, not an object, or a field given twice (the tree keeps the last, as
        // it always did): the tree says which, in the words it always used.
        None => {
            let tree = parse_tree(body)?;
            Ok((RequestFacts::of(&tree), RequestTree::built(tree)))
        }
    }
}

impl Dialect {
    /// Parses (and translates) the client's body; `Err` names what is wrong with it.
    pub fn prepare(self, body: Bytes) -> Result<Prepared, AppError> {
        match self {
            Dialect::Anthropic => {
                let (facts, tree) = read_facts(&body)?;
                Ok(Prepared {
                    facts,
                    tree,
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
                    facts: RequestFacts::of(&translated.body),
                    tree: RequestTree::built(translated.body),
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn prepare(body: &str) -> Result<Prepared, AppError> {
        Dialect::Anthropic.prepare(Bytes::from(body.to_string()))
    }

    fn message(e: AppError) -> String {
        match e {
            AppError::InvalidRequest(m) => m,
            other => panic!("not an invalid request: {other:?}"),
        }
    }

    #[test]
    fn facts_are_read_without_the_tree_and_the_tree_is_built_on_demand() {
        let body = r#" {"model":"claude-sonnet-4-5","stream":true,"max_tokens":5,
            "messages":[{"role":"user","content":[{"type":"text","text":"hi \"there\""}]}],
            "metadata":{"user_id":"u1"}}"#;
        let p = prepare(body).unwrap();
        assert_eq!(
            p.facts,
            RequestFacts {
                model: Some("claude-sonnet-4-5".into()),
                stream: Some(true),
                has_messages: true,
                marks: BodyMarks {
                    claude_code_prompt: false,
                    user_id: Some("u1".into()),
                },
            }
        );
        assert!(p.tree.tree.get().is_none(), "the tree waits for a reader");
        let tree = p.tree.get().unwrap();
        assert_eq!(*tree, serde_json::from_str::<Value>(body).unwrap());
        assert_eq!(
            p.body,
            Bytes::from(body.to_string()),
            "the body goes as it came"
        );
    }

    #[test]
    fn fields_of_other_types_are_facts_too_not_errors() {
        let p = prepare(r#"{"model":7,"stream":"yes","messages":{"a":[1,2]}}"#).unwrap();
        assert_eq!(p.facts, RequestFacts::default());
        let p = prepare(r#"{"messages":"[]","stream":false,"metadata":{"user_id":""}}"#).unwrap();
        assert_eq!(
            p.facts,
            RequestFacts {
                model: None,
                stream: Some(false),
                has_messages: false,
                marks: BodyMarks::default(),
            }
        );
        let p = prepare(r#"{"metadata":["user_id"],"model":"m"}"#).unwrap();
        assert_eq!(p.facts.marks.user_id, None, "an array has no user_id");
    }

    #[test]
    fn bad_bodies_are_named_as_the_tree_names_them() {
        let e = message(prepare(r#"{"model": "#).err().unwrap());
        assert_eq!(
            e,
            "request body is not valid JSON: EOF while parsing a value at line 1 column 10"
        );
        let e = message(prepare(r#"{"model":"m","messages":[]} x"#).err().unwrap());
        assert!(
            e.starts_with("request body is not valid JSON: trailing characters"),
            "{e}"
        );
        for not_object in ["[]", r#"["m", true, []]"#, "\"text\"", "7", "null"] {
            let e = message(prepare(not_object).err().unwrap());
            assert_eq!(e, "request body must be a JSON object", "{not_object}");
        }
    }

    #[test]
    fn the_marks_read_with_the_facts_are_the_marks_of_the_tree() {
        for body in [
            r#"{"model":"m","system":[{"type":"text","text":"You are Claude Code, Anthropic's official CLI for Claude."}],"messages":[],"metadata":{"user_id":"u"}}"#,
            r#"{"model":5,"system":[{"type":"text","text":"You are Claude Code, Anthropic's official CLI for Claude."}]}"#,
            r#"{"model":"m","system":"You are Claude Code, Anthropic's official CLI for Claude."}"#,
            r#"{"model":"m","metadata":{"user_id":7}}"#,
        ] {
            let p = prepare(body).unwrap();
            assert!(p.tree.tree.get().is_none(), "read without the tree: {body}");
            assert_eq!(
                p.facts.marks,
                BodyMarks::of(p.tree.get().unwrap()),
                "{body}"
            );
        }
        let p = prepare(
            r#"{"model":"m","system":[{"text":"You are Claude Code, Anthropic's official CLI for Claude"}]}"#,
        )
        .unwrap();
        assert!(p.facts.marks.claude_code_prompt);
    }

    #[test]
    fn a_field_given_twice_counts_as_its_last_value() {
        let p = prepare(r#"{"model":"first","model":"second","messages":[]}"#).unwrap();
        assert_eq!(p.facts.model.as_deref(), Some("second"));
        assert!(p.facts.has_messages);
        assert_eq!(p.tree.get().unwrap()["model"], json!("second"));
    }

    #[test]
    fn a_translated_request_carries_its_tree_and_facts() {
        let chat = json!({"model": "claude-sonnet-4-5", "stream": true,
            "messages": [{"role": "user", "content": "hi"}]});
        let p = Dialect::OpenAiChat
            .prepare(Bytes::from(chat.to_string()))
            .unwrap();
        assert_eq!(p.facts.model.as_deref(), Some("claude-sonnet-4-5"));
        assert_eq!(p.facts.stream, Some(true));
        assert!(p.facts.has_messages);
        let tree = p.tree.get().unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&p.body).unwrap(), *tree);
    }
}
