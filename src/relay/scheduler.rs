//! Account choice (SPEC §6): a key's dedicated account only; a key bound to a group: the
//! sticky session's account if it still serves the group, else the group's accounts by
//! priority, then least recently used; else the sticky session's account if still
//! available; else the pool by priority, then least recently used.

use foldhash::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::domain::account::Account;
use crate::domain::api_key::ApiKey;
use crate::domain::group::bound_group;
use crate::error::AppError;

/// Why an account was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Dedicated,
    Sticky,
    Pool,
    /// From the account group the key is bound to.
    Group,
}

/// When this process last sent a request through each account (LRU order). Each worker
/// stamps the accounts it uses in a map of its own (one lock that every worker took on every
/// request moved between their cores); an account's time is the latest of all the maps.
pub struct LastUsed {
    all: Arc<Mutex<Vec<Arc<Stamps>>>>,
    own: Arc<Stamps>,
}

/// One worker's stamps, on cache lines of their own.
#[derive(Default)]
#[repr(align(128))]
struct Stamps(Mutex<HashMap<String, Instant>>);

impl Default for LastUsed {
    fn default() -> Self {
        let own = Arc::new(Stamps::default());
        LastUsed {
            all: Arc::new(Mutex::new(vec![own.clone()])),
            own,
        }
    }
}

impl LastUsed {
    /// A handle on the same times whose stamps go to a map of its own (one per worker).
    pub fn for_worker(&self) -> LastUsed {
        let own = Arc::new(Stamps::default());
        if let Ok(mut all) = self.all.lock() {
            all.push(own.clone());
        }
        LastUsed {
            all: self.all.clone(),
            own,
        }
    }

    pub fn touch(&self, account_id: &str) {
        if let Ok(mut map) = self.own.0.lock() {
            // Known accounts are updated in place: no copy of the id per request.
            match map.get_mut(account_id) {
                Some(at) => *at = Instant::now(),
                None => {
                    map.insert(account_id.to_string(), Instant::now());
                }
            }
        }
    }

    fn get(&self, account_id: &str) -> Option<Instant> {
        let all = self.all.lock().ok()?;
        all.iter()
            .filter_map(|stamps| stamps.0.lock().ok()?.get(account_id).copied())
            .max()
    }
}

/// The session hash of a request: `metadata.user_id`, else the system prompt, else the
/// first message (SPEC §6); None when the request carries none of them. The text is hashed
/// where it lies, piece by piece, not copied.
pub fn session_hash(body: &Value) -> Option<String> {
    if let Some(user) = body["metadata"]["user_id"]
        .as_str()
        .filter(|s| !s.is_empty())
    {
        return Some(user_session_hash(user));
    }
    let mut hasher = Sha256::new();
    let fed = feed_text(&mut hasher, &body["system"])
        || body["messages"]
            .get(0)
            .is_some_and(|m| feed_text(&mut hasher, &m["content"]));
    fed.then(|| hex::encode(&hasher.finalize()[..16]))
}

/// The session hash of a request whose `metadata.user_id` is `user` (not empty): what
/// [`session_hash`] gives for it, without the request's JSON tree.
pub fn user_session_hash(user: &str) -> String {
    hex::encode(&Sha256::digest(user)[..16])
}

/// Feeds the text of a string or of an array of content blocks (their texts in order, as
/// if joined) to `hasher`; false when there is none.
fn feed_text(hasher: &mut Sha256, v: &Value) -> bool {
    match v {
        Value::String(s) if !s.is_empty() => {
            hasher.update(s);
            true
        }
        Value::Array(blocks) => {
            let mut fed = false;
            for text in blocks.iter().filter_map(|b| b["text"].as_str()) {
                if !text.is_empty() {
                    hasher.update(text);
                    fed = true;
                }
            }
            fed
        }
        _ => false,
    }
}

/// Whether a sticky session can change which account serves `key` from `accounts`: not
/// when the key has a dedicated account, nor when there is at most one account to choose.
pub fn sessions_matter(accounts: &[Account], key: &ApiKey) -> bool {
    match bound_to(key) {
        Some(bound) if bound_group(bound).is_none() => false,
        _ => accounts.len() > 1,
    }
}

/// The account or group (`group:<id>`) the key is bound to, if any.
fn bound_to(key: &ApiKey) -> Option<&str> {
    key.claude_account_id.as_deref().filter(|b| !b.is_empty())
}

/// Picks the account for a request for `model` (accounts whose model family is cooling
/// down are left out).
pub fn choose<'a>(
    accounts: &'a [Account],
    key: &ApiKey,
    model: &str,
    sticky_account: Option<&str>,
    last_used: &LastUsed,
    now: DateTime<Utc>,
) -> Result<(&'a Account, Choice), AppError> {
    let serving: Vec<&Account> = accounts
        .iter()
        .filter(|a| a.serves_model(model, now))
        .collect();
    let accounts = serving.as_slice();
    let bound = bound_to(key);
    if let Some(group) = bound.and_then(bound_group) {
        if let Some(id) = sticky_account
            && let Some(a) = accounts
                .iter()
                .copied()
                .find(|a| a.id == id && a.serves_group(group, now))
        {
            return Ok((a, Choice::Sticky));
        }
        return least_recently_used(
            accounts
                .iter()
                .copied()
                .filter(|a| a.serves_group(group, now)),
            last_used,
        )
        .map(|a| (a, Choice::Group))
        .ok_or_else(|| {
            AppError::NoAccountAvailable(
                "no account of the group this API key is bound to is available".into(),
            )
        });
    }
    if let Some(bound) = bound {
        return accounts
            .iter()
            .copied()
            .find(|a| a.id == bound && a.is_available(now))
            .map(|a| (a, Choice::Dedicated))
            .ok_or_else(|| {
                AppError::NoAccountAvailable(
                    "the dedicated account of this API key is unavailable".into(),
                )
            });
    }
    if let Some(id) = sticky_account
        && let Some(a) = accounts
            .iter()
            .copied()
            .find(|a| a.id == id && a.in_pool(now))
    {
        return Ok((a, Choice::Sticky));
    }
    least_recently_used(
        accounts.iter().copied().filter(|a| a.in_pool(now)),
        last_used,
    )
    .map(|a| (a, Choice::Pool))
    .ok_or_else(|| AppError::NoAccountAvailable("no upstream account is available".into()))
}

/// The candidate with the best (lowest) priority, then never used, then used longest ago.
fn least_recently_used<'a>(
    candidates: impl Iterator<Item = &'a Account>,
    last_used: &LastUsed,
) -> Option<&'a Account> {
    candidates.min_by(|a, b| {
        a.priority
            .cmp(&b.priority)
            .then_with(|| last_used.get(&a.id).cmp(&last_used.get(&b.id)))
            .then_with(|| a.created_at.cmp(&b.created_at))
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_least_recently_used_account_counts_every_workers_stamps() {
        let created = Utc::now();
        let accounts: Vec<Account> = ["a", "b", "c"]
            .into_iter()
            .map(|id| Account {
                id: id.into(),
                ..crate::service::accounts::blank(
                    id.into(),
                    crate::domain::account::AccountType::ClaudeConsole,
                    created,
                )
            })
            .collect();
        let shared = LastUsed::default();
        let (one, two) = (shared.for_worker(), shared.for_worker());
        let lru = |by: &LastUsed| least_recently_used(accounts.iter(), by).map(|a| a.id.clone());
        // Never used first, in the list's order (equal creation times).
        assert_eq!(lru(&shared).as_deref(), Some("a"));
        one.touch("a");
        two.touch("b");
        assert_eq!(
            lru(&one).as_deref(),
            Some("c"),
            "a and b used by either worker"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
        one.touch("c");
        // `a` (worker one) is now the oldest whichever handle reads, then `b` (worker two).
        for handle in [&shared, &one, &two] {
            assert_eq!(lru(handle).as_deref(), Some("a"));
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
        two.touch("a");
        assert_eq!(
            lru(&one).as_deref(),
            Some("b"),
            "worker two's newer stamp of a counts"
        );
        assert!(shared.get("a") > one.own.0.lock().ok().and_then(|m| m.get("a").copied()));
        assert_eq!(shared.get("missing"), None);
    }

    fn hash_of(text: &str) -> String {
        hex::encode(&Sha256::digest(text.as_bytes())[..16])
    }

    #[test]
    fn the_session_is_the_user_id_else_the_system_else_the_first_message() {
        let with_user = json!({"metadata": {"user_id": "u-1"}, "system": "sys",
            "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(session_hash(&with_user), Some(hash_of("u-1")));
        assert_eq!(
            user_session_hash("u-1"),
            hash_of("u-1"),
            "the same without the tree"
        );
        // Blocks count as their texts joined; empty ones add nothing.
        let blocks = json!({"metadata": {"user_id": ""},
            "system": [{"type": "text", "text": "ab"}, {"type": "text", "text": ""},
                       {"type": "text", "text": "c"}],
            "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(session_hash(&blocks), Some(hash_of("abc")));
        let empty_system = json!({"system": [{"type": "text", "text": ""}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"},
                                                       {"type": "text", "text": " there"}]}]});
        assert_eq!(session_hash(&empty_system), Some(hash_of("hi there")));
        let nothing = json!({"system": "", "messages": [{"role": "user", "content": ""}]});
        assert_eq!(session_hash(&nothing), None);
        assert_eq!(session_hash(&json!({"messages": []})), None);
    }
}
