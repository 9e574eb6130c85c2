//! Which client sent a request (Claude Code, Gemini CLI, Codex CLI, Droid CLI, an SDK, or
//! something else) and whether a key's client restriction lets it through. One detection
//! function, following CRS's validators (`src/validators/clients/*.js` of v1.1.314) so keys
//! imported from CRS admit the same clients.

use actix_web::http::header::HeaderMap;
use serde_json::Value;

/// Most entries one key's `allowedClients` may hold.
pub const MAX_ALLOWED_CLIENTS: usize = 20;
/// Longest entry of `allowedClients` (a custom pattern included).
pub const MAX_ALLOWED_CLIENT_LEN: usize = 200;
/// An `allowedClients` entry with this prefix is a custom user-agent pattern (`*` matches
/// any run of characters, compared without regard to case), e.g. `ua:my-tool/*`.
pub const CUSTOM_PATTERN_PREFIX: &str = "ua:";

/// The clients CRS knows by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownClient {
    ClaudeCode,
    GeminiCli,
    CodexCli,
    DroidCli,
}

impl KnownClient {
    pub const ALL: [KnownClient; 4] = [
        KnownClient::ClaudeCode,
        KnownClient::GeminiCli,
        KnownClient::CodexCli,
        KnownClient::DroidCli,
    ];

    pub fn id(self) -> &'static str {
        match self {
            KnownClient::ClaudeCode => "claude_code",
            KnownClient::GeminiCli => "gemini_cli",
            KnownClient::CodexCli => "codex_cli",
            KnownClient::DroidCli => "droid_cli",
        }
    }

    pub fn parse(id: &str) -> Option<KnownClient> {
        KnownClient::ALL.into_iter().find(|c| c.id() == id)
    }

    /// The paths this client may use when a key is restricted to it (CRS's
    /// `allowedPathPrefixes`: a Claude-Code-only key cannot reach OpenAI-compatible routes).
    fn allowed_path_prefixes(self) -> &'static [&'static str] {
        match self {
            KnownClient::ClaudeCode => &[
                "/api/v1/messages",
                "/api/v1/models",
                "/api/v1/me",
                "/api/v1/usage",
                "/api/v1/key-info",
                "/api/v1/organizations",
                "/claude/v1/messages",
                "/claude/v1/models",
                "/api/event_logging",
                "/v1/messages",
                "/v1/models",
                "/v1/me",
                "/v1/usage",
                "/v1/key-info",
                "/v1/organizations",
            ],
            KnownClient::GeminiCli => &["/gemini/"],
            KnownClient::CodexCli => &["/openai/responses", "/openai/v1/responses", "/azure/"],
            KnownClient::DroidCli => &["/droid/"],
        }
    }
}

/// What the detection found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientKind {
    Known(KnownClient),
    /// An Anthropic / OpenAI SDK (it sends `x-stainless-*` headers) that is not Claude Code.
    Sdk,
    Other,
}

/// The parts of a request the detection reads.
pub struct ClientRequest<'a> {
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// What the checks read of the JSON body, when there is one.
    pub body: Option<&'a BodyMarks>,
}

/// What the client checks read of a Messages body: gathered while the relay reads the
/// request (`relay::dialect`), so the checks need no JSON tree of it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BodyMarks {
    /// `model` is a string and one `system` entry begins as a Claude Code prompt does.
    pub claude_code_prompt: bool,
    /// `metadata.user_id`, when it is a string that is not empty.
    pub user_id: Option<String>,
}

impl BodyMarks {
    pub fn of(body: &Value) -> Self {
        BodyMarks::from_parts(
            body["model"].is_string(),
            &body["system"],
            &body["metadata"],
        )
    }

    /// The marks of a body whose `model` is (or is not) a string, from its `system` and
    /// `metadata` fields.
    pub fn from_parts(model_is_string: bool, system: &Value, metadata: &Value) -> Self {
        BodyMarks {
            claude_code_prompt: model_is_string && claude_code_prompt_in(system),
            user_id: metadata["user_id"]
                .as_str()
                .filter(|u| !u.is_empty())
                .map(str::to_string),
        }
    }
}

impl ClientRequest<'_> {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .unwrap_or("")
    }

    fn user_agent(&self) -> &str {
        self.header("user-agent")
    }
}

/// The openings of the system prompt entries Claude Code sends (CRS's templates of
/// `utils/contents.js`, category `system`). Whitespace at the start is ignored.
const CLAUDE_CODE_PROMPTS: [&str; 7] = [
    "You are Claude Code, Anthropic's official CLI for Claude",
    "You are an interactive CLI tool that helps users",
    "You are a Claude agent, built on Anthropic's Claude Agent SDK.",
    "x-anthropic-billing-header:",
    "You are a helpful AI assistant tasked with summarizing conversations.",
    "You are a file search specialist for Claude Code",
    "Analyze if this message indicates a new conversation topic.",
];

/// Which client sent the request: the first known client whose check passes, else an SDK
/// when `x-stainless-*` headers are present, else other.
pub fn detect(req: &ClientRequest<'_>) -> ClientKind {
    if let Some(c) = KnownClient::ALL.into_iter().find(|c| is_client(*c, req)) {
        return ClientKind::Known(c);
    }
    if req
        .headers
        .keys()
        .any(|k| k.as_str().starts_with("x-stainless-"))
    {
        ClientKind::Sdk
    } else {
        ClientKind::Other
    }
}

/// True when the request passes `client`'s check (the validators of CRS).
pub fn is_client(client: KnownClient, req: &ClientRequest<'_>) -> bool {
    match client {
        KnownClient::ClaudeCode => is_claude_code(req),
        KnownClient::GeminiCli => {
            req.path.starts_with("/gemini")
                && (!req.path.contains("generateContent")
                    || versioned(req.user_agent(), &["geminicli/v", "geminicli/"]))
        }
        KnownClient::CodexCli => versioned(
            req.user_agent(),
            &["codex_vscode/", "codex_cli_rs/", "codex_exec/"],
        ),
        KnownClient::DroidCli => {
            let header = req.header("x-factory-client").to_ascii_lowercase();
            contains_versioned(req.user_agent(), "factory-cli/")
                || header.contains("droid")
                || header.contains("factory-cli")
        }
    }
}

/// Claude Code: user agent `claude-cli/<x.y.z>`; on the messages routes also a Claude Code
/// system prompt entry, non-empty `x-app`, `anthropic-beta` and `anthropic-version`, and a
/// `metadata.user_id` in one of Claude Code's two formats. (CRS compares every system entry
/// by similarity; here one entry must begin as a Claude Code prompt does, CRS's
/// `CLAUDE_CODE_MIN_SYSTEM_PROMPT_MATCHES=1` setting.)
pub fn is_claude_code(req: &ClientRequest<'_>) -> bool {
    if !versioned(req.user_agent(), &["claude-cli/"]) {
        return false;
    }
    if !req.path.contains("messages") {
        return true;
    }
    let Some(body) = req.body else {
        return false;
    };
    body.claude_code_prompt
        && ["x-app", "anthropic-beta", "anthropic-version"]
            .iter()
            .all(|h| !req.header(h).is_empty())
        && body
            .user_id
            .as_deref()
            .is_some_and(valid_claude_code_user_id)
}

/// True when one entry of a `system` array begins as a Claude Code prompt does.
fn claude_code_prompt_in(system: &Value) -> bool {
    system.as_array().is_some_and(|entries| {
        entries.iter().any(|e| {
            let text = e["text"].as_str().unwrap_or("").trim_start();
            CLAUDE_CODE_PROMPTS.iter().any(|p| text.starts_with(p))
        })
    })
}

/// `user_{64 hex}_account_{…}_session_{hex and -}` (before Claude Code 2.1.78) or a JSON
/// object with non-empty `device_id` and `session_id` (since).
pub fn valid_claude_code_user_id(id: &str) -> bool {
    if id.starts_with('{') {
        return serde_json::from_str::<Value>(id).is_ok_and(|v| {
            ["device_id", "session_id"]
                .iter()
                .all(|f| v[f].as_str().is_some_and(|s| !s.is_empty()))
        });
    }
    let Some(rest) = id.strip_prefix("user_") else {
        return false;
    };
    let Some((device, rest)) = rest.split_once("_account_") else {
        return false;
    };
    let Some((_, session)) = rest.rsplit_once("_session_") else {
        return false;
    };
    device.len() == 64
        && device.bytes().all(|b| b.is_ascii_hexdigit())
        && !session.is_empty()
        && session
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f' | b'-'))
}

/// True when `ua` starts (ignoring case) with one of `names` followed by a version
/// `<digits>(.<digits>)*` (three parts for `claude-cli/`, as CRS requires).
fn versioned(ua: &str, names: &[&str]) -> bool {
    let lower = ua.to_ascii_lowercase();
    names.iter().any(|n| {
        lower
            .strip_prefix(n)
            .is_some_and(|rest| version_parts(rest) >= if *n == "claude-cli/" { 3 } else { 1 })
    })
}

/// `factory-cli/x.y.z` anywhere in the user agent.
fn contains_versioned(ua: &str, name: &str) -> bool {
    let lower = ua.to_ascii_lowercase();
    lower
        .match_indices(name)
        .any(|(i, _)| version_parts(&lower[i + name.len()..]) >= 3)
}

/// How many dot-separated numbers `s` starts with (`1.2.3 (x)` → 3).
fn version_parts(s: &str) -> usize {
    let version: &str = s
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()
        .unwrap_or("");
    let mut parts = 0;
    for p in version.split('.') {
        if p.is_empty() {
            break;
        }
        parts += 1;
    }
    parts
}

/// True when a key restricted to `allowed` may be used by this request: one entry whose
/// client check passes on a path that client may use, or a custom pattern matching the
/// user agent. Unknown ids never match (CRS skips them too).
pub fn is_allowed(allowed: &[String], req: &ClientRequest<'_>) -> bool {
    let path = req.path.to_ascii_lowercase();
    allowed.iter().any(|entry| {
        if let Some(pattern) = entry.strip_prefix(CUSTOM_PATTERN_PREFIX) {
            return glob_matches(pattern, req.user_agent());
        }
        KnownClient::parse(entry).is_some_and(|c| {
            c.allowed_path_prefixes()
                .iter()
                .any(|p| path.starts_with(p))
                && is_client(c, req)
        })
    })
}

/// Checks one `allowedClients` entry from an operator: a known id or `ua:<pattern>`.
pub fn validate_allowed_client(entry: &str) -> Result<(), String> {
    if let Some(pattern) = entry.strip_prefix(CUSTOM_PATTERN_PREFIX) {
        if pattern.trim().is_empty() {
            return Err(format!(
                "`{entry}`: a custom pattern needs text after `{CUSTOM_PATTERN_PREFIX}`"
            ));
        }
        if pattern.chars().any(char::is_control) {
            return Err(format!("`{entry}`: control characters are not allowed"));
        }
        return Ok(());
    }
    if KnownClient::parse(entry).is_some() {
        return Ok(());
    }
    let ids: Vec<&str> = KnownClient::ALL.iter().map(|c| c.id()).collect();
    Err(format!(
        "`{entry}` is not a known client ({}) nor a `{CUSTOM_PATTERN_PREFIX}<user-agent pattern>`",
        ids.join(", ")
    ))
}

/// Case-insensitive match of the whole `text` against `pattern`, where `*` matches any run
/// of characters (linear time: no backtracking over earlier stars).
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};
    use serde_json::json;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    /// Headers of a Claude Code 2.0 request as captured (OAuth login, macOS).
    const CLAUDE_CODE_HEADERS: &[(&str, &str)] = &[
        ("user-agent", "claude-cli/2.0.14 (external, cli)"),
        ("x-app", "cli"),
        ("anthropic-version", "2023-06-01"),
        (
            "anthropic-beta",
            "claude-code-20250219,oauth-2025-04-20,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14",
        ),
        ("anthropic-dangerous-direct-browser-access", "true"),
        ("x-stainless-lang", "js"),
        ("x-stainless-package-version", "0.60.0"),
        ("x-stainless-os", "MacOS"),
        ("x-stainless-arch", "arm64"),
        ("x-stainless-runtime", "node"),
        ("x-stainless-runtime-version", "v22.17.0"),
        ("x-stainless-retry-count", "0"),
        ("x-stainless-timeout", "600"),
    ];

    fn claude_code_body() -> Value {
        json!({
            "model": "claude-sonnet-4-5-20250929",
            "max_tokens": 32000,
            "stream": true,
            "system": [
                {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude.",
                 "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "\nYou are an interactive CLI tool that helps users with software engineering tasks. Use the instructions below and the tools available to you to assist the user."}
            ],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "metadata": {"user_id": format!(
                "user_{}_account_0b7f6b1e-7c64-4c8a-9a5e-2f3c1d2e4f50_session_4e1c2a9b-1d3f-4c55-8e0a-6b7d9c0e1f23",
                "a".repeat(64)
            )}
        })
    }

    fn req<'a>(path: &'a str, h: &'a HeaderMap, body: Option<&'a BodyMarks>) -> ClientRequest<'a> {
        ClientRequest {
            path,
            headers: h,
            body,
        }
    }

    #[test]
    fn claude_code_request_is_detected() {
        let h = headers(CLAUDE_CODE_HEADERS);
        let body = claude_code_body();
        let marks = BodyMarks::of(&body);
        let r = req("/api/v1/messages", &h, Some(&marks));
        assert_eq!(detect(&r), ClientKind::Known(KnownClient::ClaudeCode));
        assert!(is_allowed(&["claude_code".into()], &r));
        // The new JSON user_id format of Claude Code 2.1.78+.
        let mut json_id = body.clone();
        json_id["metadata"]["user_id"] =
            json!(r#"{"device_id":"d1","account_uuid":"","session_id":"s1"}"#);
        assert!(is_claude_code(&req(
            "/v1/messages",
            &h,
            Some(&BodyMarks::of(&json_id))
        )));
        // count_tokens goes through the same strict check.
        assert!(is_claude_code(&req(
            "/v1/messages/count_tokens",
            &h,
            Some(&BodyMarks::of(&body))
        )));
        // Other routes: the user agent is enough.
        assert!(is_claude_code(&req("/v1/models", &h, None)));
    }

    #[test]
    fn each_mark_of_a_body_turns_detection_on_or_off() {
        let h = headers(CLAUDE_CODE_HEADERS);
        let mut bodies = vec![claude_code_body()];
        for (field, value) in [
            ("system", json!("You are a helpful assistant.")),
            (
                "system",
                json!([{"type": "text", "text": "  You are Claude Code, Anthropic's official CLI for Claude"}]),
            ),
            ("metadata", json!({})),
            ("metadata", json!({"user_id": ""})),
            (
                "metadata",
                json!({"user_id": r#"{"device_id":"d1","session_id":"s1"}"#}),
            ),
            ("model", json!(7)),
        ] {
            let mut body = claude_code_body();
            body[field] = value;
            bodies.push(body);
        }
        let detected: Vec<bool> = bodies
            .iter()
            .map(|body| is_claude_code(&req("/v1/messages", &h, Some(&BodyMarks::of(body)))))
            .collect();
        assert_eq!(detected, [true, false, true, false, false, true, false]);
    }

    #[test]
    fn claude_code_user_agent_alone_is_not_enough_on_messages() {
        let h = headers(CLAUDE_CODE_HEADERS);
        let mut body = claude_code_body();
        body["system"] = json!("You are a helpful assistant.");
        assert!(!is_claude_code(&req(
            "/v1/messages",
            &h,
            Some(&BodyMarks::of(&body))
        )));
        let mut body = claude_code_body();
        body["metadata"] = json!({});
        assert!(!is_claude_code(&req(
            "/v1/messages",
            &h,
            Some(&BodyMarks::of(&body))
        )));
        let mut body = claude_code_body();
        body["metadata"]["user_id"] = json!("user_abc_account__session_x");
        assert!(!is_claude_code(&req(
            "/v1/messages",
            &h,
            Some(&BodyMarks::of(&body))
        )));
        let body = claude_code_body();
        let no_x_app: Vec<_> = CLAUDE_CODE_HEADERS
            .iter()
            .copied()
            .filter(|(k, _)| *k != "x-app")
            .collect();
        assert!(!is_claude_code(&req(
            "/v1/messages",
            &headers(&no_x_app),
            Some(&BodyMarks::of(&body))
        )));
        let old_ua: Vec<_> = CLAUDE_CODE_HEADERS
            .iter()
            .map(|(k, v)| {
                if *k == "user-agent" {
                    (*k, "claude-cli/1.0 (external, cli)")
                } else {
                    (*k, *v)
                }
            })
            .collect();
        assert!(!is_claude_code(&req(
            "/v1/messages",
            &headers(&old_ua),
            Some(&BodyMarks::of(&body))
        )));
    }

    #[test]
    fn sdk_and_plain_requests_are_not_claude_code() {
        // The Anthropic Python SDK as it sends a request.
        let sdk = headers(&[
            ("user-agent", "Anthropic/Python 0.69.0"),
            ("anthropic-version", "2023-06-01"),
            ("x-stainless-lang", "python"),
            ("x-stainless-package-version", "0.69.0"),
            ("x-stainless-os", "Linux"),
            ("x-stainless-arch", "x64"),
            ("x-stainless-runtime", "CPython"),
            ("x-stainless-runtime-version", "3.12.3"),
            ("x-stainless-retry-count", "0"),
        ]);
        let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 100,
            "messages": [{"role": "user", "content": "hi"}]});
        let marks = BodyMarks::of(&body);
        let r = req("/v1/messages", &sdk, Some(&marks));
        assert_eq!(detect(&r), ClientKind::Sdk);
        assert!(!is_allowed(&["claude_code".into()], &r));
        let curl = headers(&[("user-agent", "curl/8.5.0")]);
        assert_eq!(
            detect(&req("/v1/messages", &curl, Some(&BodyMarks::of(&body)))),
            ClientKind::Other
        );
        // A Claude Code body sent by the SDK is still the SDK.
        let cc_body = claude_code_body();
        assert_eq!(
            detect(&req("/v1/messages", &sdk, Some(&BodyMarks::of(&cc_body)))),
            ClientKind::Sdk
        );
    }

    #[test]
    fn other_known_clients_follow_crs() {
        let codex = headers(&[(
            "user-agent",
            "codex_cli_rs/0.38.0 (Ubuntu 22.4.0; x86_64) WindowsTerminal",
        )]);
        assert_eq!(
            detect(&req("/openai/responses", &codex, None)),
            ClientKind::Known(KnownClient::CodexCli)
        );
        // Codex may not use the Claude routes of a key restricted to it.
        assert!(!is_allowed(
            &["codex_cli".into()],
            &req("/v1/messages", &codex, None)
        ));
        let droid = headers(&[("user-agent", "factory-cli/0.22.3")]);
        assert!(is_client(
            KnownClient::DroidCli,
            &req("/droid/claude/v1/messages", &droid, None)
        ));
        let gemini = headers(&[("user-agent", "GeminiCLI/v0.1.5 (linux; x64)")]);
        assert!(is_client(
            KnownClient::GeminiCli,
            &req("/gemini/v1/models/x:generateContent", &gemini, None)
        ));
        assert!(!is_client(
            KnownClient::GeminiCli,
            &req("/v1/messages", &gemini, None)
        ));
        // A Claude-Code-only key refuses the OpenAI-compatible route even for Claude Code.
        let cc = headers(CLAUDE_CODE_HEADERS);
        assert!(!is_allowed(
            &["claude_code".into()],
            &req("/openai/v1/chat/completions", &cc, None)
        ));
    }

    #[test]
    fn custom_patterns_match_the_user_agent() {
        let h = headers(&[("user-agent", "MyTool/2.3 (linux)")]);
        let r = req("/v1/messages", &h, None);
        assert!(is_allowed(&["ua:mytool/*".into()], &r));
        assert!(!is_allowed(&["ua:mytool/3*".into()], &r));
        assert!(is_allowed(&["claude_code".into(), "ua:*linux*".into()], &r));
        assert!(!is_allowed(&["unknown_client".into()], &r));
        assert!(glob_matches("a*b*c", "aXXbYYc"));
        assert!(!glob_matches("a*b*c", "aXXbYY"));
        assert!(glob_matches("*", ""));
        assert!(!glob_matches("", "x"));
    }

    #[test]
    fn allowed_client_entries_are_validated() {
        assert!(validate_allowed_client("claude_code").is_ok());
        assert!(validate_allowed_client("ua:my-tool/*").is_ok());
        assert!(validate_allowed_client("ua:").is_err());
        assert_eq!(
            validate_allowed_client("claude"),
            Err(
                "`claude` is not a known client (claude_code, gemini_cli, codex_cli, droid_cli) \
                 nor a `ua:<user-agent pattern>`"
                    .into()
            )
        );
    }
}
