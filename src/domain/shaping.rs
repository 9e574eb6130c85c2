//! Claude Code shaping: an OAuth (subscription) token is only accepted upstream for Claude
//! Code, so a request from another client (an SDK, a chat app) sent on an OAuth account is
//! given the headers and the system prompt Claude Code itself sends (as CRS does). Claude
//! Code's own requests are not touched. The values are configuration, so they can follow
//! new Claude Code releases without a release of the relay.

use serde_json::{Value, json};

/// What Claude Code sends, as configured (`CLAUDE_CODE_*` variables).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaudeCodeProfile {
    pub user_agent: String,
    /// Comma-separated `anthropic-beta` flags.
    pub beta: String,
    pub system_prompt: String,
}

/// Current Claude Code values (2.0.x).
pub const DEFAULT_USER_AGENT: &str = "claude-cli/2.0.14 (external, cli)";
pub const DEFAULT_BETA: &str = "claude-code-20250219,oauth-2025-04-20,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14";
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are Claude Code, Anthropic's official CLI for Claude.";

impl Default for ClaudeCodeProfile {
    fn default() -> Self {
        ClaudeCodeProfile {
            user_agent: DEFAULT_USER_AGENT.into(),
            beta: DEFAULT_BETA.into(),
            system_prompt: DEFAULT_SYSTEM_PROMPT.into(),
        }
    }
}

impl ClaudeCodeProfile {
    /// The `anthropic-beta` value: Claude Code's flags, then the client's others.
    pub fn beta_with(&self, client_beta: Option<&str>) -> String {
        let mut flags: Vec<&str> = self
            .beta
            .split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
            .collect();
        for f in client_beta.unwrap_or("").split(',').map(str::trim) {
            if !f.is_empty() && !flags.contains(&f) {
                flags.push(f);
            }
        }
        flags.join(",")
    }

    /// The request body with Claude Code's system prompt as the first system entry (a
    /// string `system` becomes the second entry; an entry already there is not repeated).
    pub fn shape_body(&self, body: &Value) -> Value {
        let mut shaped = body.clone();
        let first = json!({"type": "text", "text": self.system_prompt});
        let entries = match &body["system"] {
            Value::Array(a) => {
                if a.first().and_then(|e| e["text"].as_str()) == Some(self.system_prompt.as_str()) {
                    return shaped;
                }
                std::iter::once(first).chain(a.iter().cloned()).collect()
            }
            Value::String(s) if !s.is_empty() => vec![first, json!({"type": "text", "text": s})],
            _ => vec![first],
        };
        shaped["system"] = Value::Array(entries);
        shaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_prompt_is_put_first_once() {
        let p = ClaudeCodeProfile::default();
        let body = json!({"model": "m", "messages": [], "system": "Be brief."});
        let shaped = p.shape_body(&body);
        assert_eq!(
            shaped["system"],
            json!([
                {"type": "text", "text": DEFAULT_SYSTEM_PROMPT},
                {"type": "text", "text": "Be brief."}
            ])
        );
        assert_eq!(p.shape_body(&shaped), shaped, "not added twice");
        let none = p.shape_body(&json!({"model": "m", "messages": []}));
        assert_eq!(
            none["system"],
            json!([{"type": "text", "text": DEFAULT_SYSTEM_PROMPT}])
        );
        assert_eq!(none["messages"], json!([]));
    }

    #[test]
    fn beta_flags_are_merged_without_duplicates() {
        let p = ClaudeCodeProfile {
            beta: "a,b".into(),
            ..ClaudeCodeProfile::default()
        };
        assert_eq!(p.beta_with(Some("b, c")), "a,b,c");
        assert_eq!(p.beta_with(None), "a,b");
    }
}
