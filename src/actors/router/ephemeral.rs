//! Entries with a lifetime (sticky sessions, admin login sessions, OAuth access tokens) and
//! locks: Redis in hybrid and redis mode, the `kv_entries` table in mysql mode.

use std::time::Duration;

use actix::prelude::*;

use super::{RouterActor, RouterHandle, unavailable};
use crate::config::StorageMode;
use crate::error::AppError;
use crate::persistence::ephemeral as queries;

/// What an entry is; names are `{kind}:{id}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// Sticky session → account mapping.
    Sticky,
    /// Operator login session.
    AdminSession,
    /// An account's OAuth access token (encrypted).
    OauthToken,
    /// A pending OAuth login of the onboarding flow (PKCE verifier and state).
    OauthSession,
    /// A lock between instances.
    Lock,
    /// Probe records of `check`.
    Probe,
}

impl EntryKind {
    fn prefix(self) -> &'static str {
        match self {
            EntryKind::Sticky => "sticky",
            EntryKind::AdminSession => "admin_session",
            EntryKind::OauthToken => "oauth_token",
            EntryKind::OauthSession => "oauth_session",
            EntryKind::Lock => "lock",
            EntryKind::Probe => "probe",
        }
    }

    pub fn name(self, id: &str) -> String {
        format!("{}:{id}", self.prefix())
    }
}

/// One operation on an entry.
#[derive(Debug, Clone)]
pub enum EntryOp {
    Set {
        value: String,
        ttl: Duration,
    },
    Get,
    Touch {
        ttl: Duration,
    },
    Delete,
    /// Take a lock with `token` unless held.
    Lock {
        token: String,
        ttl: Duration,
    },
    /// Release a lock held with `token`.
    Unlock {
        token: String,
    },
}

/// The answer to an `EntryOp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryReply {
    Done,
    Value(Option<String>),
    /// Touch / Delete / Lock / Unlock: whether it took effect.
    Applied(bool),
}

/// Runs one operation on the entry `kind:id`.
#[derive(Message)]
#[rtype(result = "Result<EntryReply, AppError>")]
pub struct Entry {
    pub kind: EntryKind,
    pub id: String,
    pub op: EntryOp,
}

impl Handler<Entry> for RouterActor {
    type Result = ResponseFuture<Result<EntryReply, AppError>>;

    fn handle(&mut self, msg: Entry, _ctx: &mut Self::Context) -> Self::Result {
        if let Err(e) = check_entry_id(&msg.id) {
            return Box::pin(async move { Err(e) });
        }
        let name = msg.kind.name(&msg.id);
        let (store, cache) = (self.store.clone(), self.cache.clone());
        match self.config.mode {
            StorageMode::Mysql => {
                if !self.mysql_up() {
                    return Box::pin(async { Err(unavailable("mysql")) });
                }
                Box::pin(async move {
                    let reply = match msg.op {
                        EntryOp::Set { value, ttl } => {
                            store
                                .exec(move |c| {
                                    Box::pin(queries::set_entry(c, name, value, chrono_ttl(ttl)))
                                })
                                .await?;
                            EntryReply::Done
                        }
                        EntryOp::Get => EntryReply::Value(
                            store
                                .exec(move |c| Box::pin(queries::get_entry(c, name)))
                                .await?,
                        ),
                        EntryOp::Touch { ttl } => EntryReply::Applied(
                            store
                                .exec(move |c| {
                                    Box::pin(queries::touch_entry(c, name, chrono_ttl(ttl)))
                                })
                                .await?,
                        ),
                        EntryOp::Delete => EntryReply::Applied(
                            store
                                .exec(move |c| Box::pin(queries::delete_entry(c, name)))
                                .await?,
                        ),
                        EntryOp::Lock { token, ttl } => EntryReply::Applied(
                            store
                                .exec(move |c| {
                                    Box::pin(queries::acquire_lock(c, name, token, chrono_ttl(ttl)))
                                })
                                .await?,
                        ),
                        EntryOp::Unlock { token } => EntryReply::Applied(
                            store
                                .exec(move |c| Box::pin(queries::release_lock(c, name, token)))
                                .await?,
                        ),
                    };
                    Ok(reply)
                })
            }
            _ => {
                if !self.redis_up() {
                    return Box::pin(async { Err(unavailable("redis")) });
                }
                Box::pin(async move {
                    let reply = match msg.op {
                        EntryOp::Set { value, ttl } => {
                            cache.set_entry(&name, value, ttl).await?;
                            EntryReply::Done
                        }
                        EntryOp::Get => EntryReply::Value(cache.get_entry(&name).await?),
                        EntryOp::Touch { ttl } => {
                            EntryReply::Applied(cache.touch_entry(&name, ttl).await?)
                        }
                        EntryOp::Delete => EntryReply::Applied(cache.delete_entry(&name).await?),
                        EntryOp::Lock { token, ttl } => {
                            EntryReply::Applied(cache.acquire_lock(&name, token, ttl).await?)
                        }
                        EntryOp::Unlock { token } => {
                            EntryReply::Applied(cache.release_lock(&name, token).await?)
                        }
                    };
                    Ok(reply)
                })
            }
        }
    }
}

/// Longest entry id: with the longest kind prefix it still fits `kv_entries.entry_key`
/// (191 characters), so every mode accepts the same ids.
pub const MAX_ENTRY_ID_LEN: usize = 160;

/// Entry ids are tokens, hashes, account ids or lock names: 1..=160 visible ASCII characters.
fn check_entry_id(id: &str) -> Result<(), AppError> {
    if id.is_empty() || id.len() > MAX_ENTRY_ID_LEN || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(AppError::InvalidRequest(format!(
            "invalid entry id: must be 1..={MAX_ENTRY_ID_LEN} visible ASCII characters"
        )));
    }
    Ok(())
}

fn chrono_ttl(ttl: Duration) -> chrono::Duration {
    chrono::Duration::milliseconds(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}

impl RouterHandle {
    async fn entry(&self, kind: EntryKind, id: &str, op: EntryOp) -> Result<EntryReply, AppError> {
        self.ask(Entry {
            kind,
            id: id.to_string(),
            op,
        })
        .await?
    }

    pub async fn set_entry(
        &self,
        kind: EntryKind,
        id: &str,
        value: String,
        ttl: Duration,
    ) -> Result<(), AppError> {
        self.entry(kind, id, EntryOp::Set { value, ttl })
            .await
            .map(|_| ())
    }

    pub async fn get_entry(&self, kind: EntryKind, id: &str) -> Result<Option<String>, AppError> {
        match self.entry(kind, id, EntryOp::Get).await? {
            EntryReply::Value(v) => Ok(v),
            _ => Ok(None),
        }
    }

    pub async fn touch_entry(
        &self,
        kind: EntryKind,
        id: &str,
        ttl: Duration,
    ) -> Result<bool, AppError> {
        Ok(self.entry(kind, id, EntryOp::Touch { ttl }).await? == EntryReply::Applied(true))
    }

    pub async fn delete_entry(&self, kind: EntryKind, id: &str) -> Result<bool, AppError> {
        Ok(self.entry(kind, id, EntryOp::Delete).await? == EntryReply::Applied(true))
    }

    pub async fn acquire_lock(
        &self,
        name: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, AppError> {
        let op = EntryOp::Lock {
            token: token.to_string(),
            ttl,
        };
        Ok(self.entry(EntryKind::Lock, name, op).await? == EntryReply::Applied(true))
    }

    pub async fn release_lock(&self, name: &str, token: &str) -> Result<bool, AppError> {
        let op = EntryOp::Unlock {
            token: token.to_string(),
        };
        Ok(self.entry(EntryKind::Lock, name, op).await? == EntryReply::Applied(true))
    }
}
