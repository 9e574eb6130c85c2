//! The audit trail of admin changes: one entry per change (who, when, what, before / after)
//! and the masking that keeps secrets out of it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One admin change. `before` / `after` are the public views of the record, masked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// Assigned by the store (0 before it is written).
    pub id: i64,
    pub actor: String,
    pub action: String,
    pub target_type: String,
    pub target_id: String,
    pub before: Option<Value>,
    pub after: Option<Value>,
    pub client_addr: String,
    pub created_at: DateTime<Utc>,
}

/// Which entries to read, newest first.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    pub action: Option<String>,
    pub limit: i64,
    pub offset: i64,
}

impl AuditFilter {
    pub fn matches(&self, e: &AuditEntry) -> bool {
        self.target_type
            .as_ref()
            .is_none_or(|t| *t == e.target_type)
            && self.target_id.as_ref().is_none_or(|t| *t == e.target_id)
            && self.action.as_ref().is_none_or(|a| *a == e.action)
    }
}

/// Field names whose values are secrets wherever they appear.
const SECRET_FIELDS: [&str; 10] = [
    "apikey",
    "keyhash",
    "accesstoken",
    "refreshtoken",
    "password",
    "currentpassword",
    "newpassword",
    "passwordhash",
    "token",
    "credentialsencrypted",
];

/// Replaces every secret-named field (at any depth) by `"***"`.
pub fn mask_secrets(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let name = k.to_ascii_lowercase().replace(['_', '-'], "");
                if SECRET_FIELDS.contains(&name.as_str()) && !v.is_null() {
                    *v = Value::String("***".into());
                } else {
                    mask_secrets(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_secrets),
        _ => {}
    }
}

/// A proxy URL with its credentials hidden: `socks5://***@host:port`.
pub fn mask_url_credentials(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}***{}", &url[..scheme_end + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_are_masked_at_any_depth() {
        let mut v = json!({"name": "n", "apiKey": "cr_x", "nested": [{"access_token": "t"}],
            "refreshToken": null});
        mask_secrets(&mut v);
        assert_eq!(
            v,
            json!({"name": "n", "apiKey": "***", "nested": [{"access_token": "***"}],
                "refreshToken": null})
        );
    }

    #[test]
    fn proxy_credentials_are_hidden() {
        assert_eq!(
            mask_url_credentials("socks5://u:p@h:1080"),
            "socks5://***@h:1080"
        );
        assert_eq!(mask_url_credentials("http://h:8080"), "http://h:8080");
    }
}
