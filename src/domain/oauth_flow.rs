//! OAuth onboarding of a Claude subscription as CRS's `oauthHelper` does it: PKCE S256
//! (32 random bytes, base64url), the authorization URL (full scopes, or inference only for
//! a long-lived setup token), the pending session kept while the operator logs in, and the
//! code taken from what the operator pastes (the code or the whole callback URL).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Claude Code's public OAuth client id.
pub const CLIENT_ID: &str = "9d1c250a-e61b-44d9-88ed-5944d1962f5e";
/// Scopes of a full login (CRS `SCOPES`).
pub const SCOPES: &str = "org:create_api_key user:profile user:inference user:sessions:claude_code user:mcp_servers user:file_upload";
/// Scope of a setup token (inference only, long-lived).
pub const SCOPES_SETUP: &str = "user:inference";
/// Lifetime a setup token is asked for (one year, as CRS).
pub const SETUP_TOKEN_SECONDS: i64 = 31_536_000;
/// How long a pending login is kept.
pub const SESSION_MINUTES: i64 = 10;

/// Which flow a session belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowKind {
    Login,
    SetupToken,
}

impl FlowKind {
    pub fn scopes(self) -> &'static str {
        match self {
            FlowKind::Login => SCOPES,
            FlowKind::SetupToken => SCOPES_SETUP,
        }
    }
}

/// A pending login: what the code exchange needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingLogin {
    pub kind: FlowKind,
    pub code_verifier: String,
    pub state: String,
    pub created_at: DateTime<Utc>,
}

fn random_b64() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

impl PendingLogin {
    pub fn new(kind: FlowKind, now: DateTime<Utc>) -> PendingLogin {
        PendingLogin {
            kind,
            code_verifier: random_b64(),
            state: random_b64(),
            created_at: now,
        }
    }
}

/// The PKCE S256 challenge of a verifier.
pub fn code_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The URL the operator opens to log in.
pub fn authorize_url(base: &str, redirect_uri: &str, login: &PendingLogin) -> String {
    let query: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("code", "true")
        .append_pair("client_id", CLIENT_ID)
        .append_pair("response_type", "code")
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("scope", login.kind.scopes())
        .append_pair("code_challenge", &code_challenge(&login.code_verifier))
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", &login.state)
        .finish();
    format!("{base}?{query}")
}

/// The authorization code from what the operator pasted: the callback URL (its `code`
/// parameter) or the code itself (without a `#state` or `&…` tail, as CRS cleans it).
pub fn code_from_input(input: &str) -> Result<String, String> {
    let input = input.trim();
    let code = if input.starts_with("http://") || input.starts_with("https://") {
        let url =
            url::Url::parse(input).map_err(|_| "the callback URL is not a URL".to_string())?;
        url.query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .ok_or_else(|| "the callback URL has no code parameter".to_string())?
    } else {
        input.to_string()
    };
    let code = code.split('#').next().unwrap_or("");
    let code = code.split('&').next().unwrap_or("").trim();
    if code.is_empty() || code.len() > 4096 || code.chars().any(char::is_whitespace) {
        return Err("not an authorization code".into());
    }
    Ok(code.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_challenge_is_s256_base64url() {
        // base64url(sha256(verifier)) without padding, as computed with Python's hashlib.
        assert_eq!(
            code_challenge("dBjftJeZ4CVP-mJ92K1qUdSmp1dF0SikvOEAxSNIvNU"),
            "iKfMef5SpABBRSo4GuMVQA4pZtbQ_kZRDWuasYYZA38"
        );
        let login = PendingLogin::new(FlowKind::Login, Utc::now());
        assert_eq!(login.code_verifier.len(), 43);
        assert_ne!(login.code_verifier, login.state);
    }

    #[test]
    fn the_authorization_url_carries_crs_parameters() {
        let login = PendingLogin {
            kind: FlowKind::SetupToken,
            code_verifier: "v".into(),
            state: "s t".into(),
            created_at: Utc::now(),
        };
        assert_eq!(
            authorize_url("https://claude.ai/oauth/authorize", "https://x/cb", &login),
            format!(
                "https://claude.ai/oauth/authorize?code=true&client_id={CLIENT_ID}&response_type=code\
                 &redirect_uri=https%3A%2F%2Fx%2Fcb&scope=user%3Ainference&code_challenge={}\
                 &code_challenge_method=S256&state=s+t",
                code_challenge("v")
            )
        );
    }

    #[test]
    fn codes_come_from_the_callback_url_or_as_pasted() {
        assert_eq!(
            code_from_input(
                "https://platform.claude.com/oauth/code/callback?code=abc123&state=xyz"
            ),
            Ok("abc123".into())
        );
        assert_eq!(code_from_input(" abc123#xyz "), Ok("abc123".into()));
        assert!(
            code_from_input("https://platform.claude.com/oauth/code/callback?state=x").is_err()
        );
        assert!(code_from_input("").is_err());
        assert!(code_from_input("a b").is_err());
    }
}
