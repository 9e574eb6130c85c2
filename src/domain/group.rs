//! Account groups (CRS `account_group:*`): a named set of upstream accounts a key can be
//! bound to with `claudeAccountId = "group:<id>"`; membership is kept on each account
//! (`Account::group_ids`) so the scheduler needs nothing but its account snapshot.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The key binding prefix naming a group instead of one account.
pub const GROUP_BINDING_PREFIX: &str = "group:";
/// Most groups one account may belong to.
pub const MAX_GROUPS_PER_ACCOUNT: usize = 20;

/// One account group. Only `claude` groups are relayed (CRS also has gemini / openai /
/// droid groups; the import skips them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountGroup {
    pub id: String,
    pub name: String,
    pub description: String,
    pub platform: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// The group id of a key binding `group:<id>`, None for an account binding.
pub fn bound_group(binding: &str) -> Option<&str> {
    binding
        .strip_prefix(GROUP_BINDING_PREFIX)
        .filter(|id| !id.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_bindings_are_recognised() {
        assert_eq!(bound_group("group:g1"), Some("g1"));
        assert_eq!(bound_group("group:"), None);
        assert_eq!(bound_group("c13d1300-502a-420d-9cc9-f52ce9d4e4b9"), None);
    }
}
