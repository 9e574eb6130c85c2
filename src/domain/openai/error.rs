//! Error bodies in OpenAI's shape, `{"error":{"message","type","code"}}`, for the relay's
//! own errors and for upstream (Anthropic-shaped) error answers.

use serde_json::{Value, json};

/// Longest part of a non-JSON upstream error body quoted in the message.
const MAX_QUOTED: usize = 200;

/// An OpenAI error body.
pub fn error_body(message: &str, kind: &str, code: &str) -> Value {
    json!({ "error": { "message": message, "type": kind, "code": code } })
}

/// An upstream error answer (status and body) in OpenAI's shape: the Anthropic
/// `error.type` becomes both `type` and `code`, its message is kept.
pub fn from_upstream(status: u16, body: &[u8]) -> Value {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let error = parsed.as_ref().map(|v| &v["error"]);
    let kind = error
        .and_then(|e| e["type"].as_str())
        .unwrap_or_else(|| default_type(status));
    let message = match error.and_then(|e| e["message"].as_str()) {
        Some(m) => m.to_string(),
        None => {
            let text = String::from_utf8_lossy(body);
            let quoted: String = text.trim().chars().take(MAX_QUOTED).collect();
            if quoted.is_empty() {
                format!("the upstream API answered {status}")
            } else {
                format!("the upstream API answered {status}: {quoted}")
            }
        }
    };
    error_body(&message, kind, kind)
}

fn default_type(status: u16) -> &'static str {
    match status {
        400 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anthropic_error_keeps_type_and_message() {
        let body =
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
        assert_eq!(
            from_upstream(529, body),
            json!({"error": {"message": "Overloaded", "type": "overloaded_error", "code": "overloaded_error"}})
        );
    }

    #[test]
    fn non_json_error_is_quoted() {
        assert_eq!(
            from_upstream(502, b" <html>Bad gateway</html>\n"),
            json!({"error": {"message": "the upstream API answered 502: <html>Bad gateway</html>",
                             "type": "api_error", "code": "api_error"}})
        );
        assert_eq!(
            from_upstream(429, b""),
            json!({"error": {"message": "the upstream API answered 429",
                             "type": "rate_limit_error", "code": "rate_limit_error"}})
        );
    }
}
