//! API keys through the router: MySQL first in hybrid mode, then the Redis cache (with TTL)
//! and the short in-process cache in front; every change invalidates all three, and other
//! instances hear about it through Redis pub/sub.

use std::sync::Arc;

use actix::prelude::*;

use super::loads::{self, Turn};
use super::{RouterActor, RouterHandle, unavailable};
use crate::actors::cache::CacheHandle;
use crate::config::StorageMode;
use crate::domain::api_key::{ApiKey, MAX_DESCRIPTION_LEN, validate_id, validate_name};
use crate::error::{AppError, CacheError, StoreError};
use crate::persistence::api_keys as queries;

/// Stores a new key.
#[derive(Message)]
#[rtype(result = "Result<ApiKey, AppError>")]
pub struct CreateKey {
    pub key: ApiKey,
}

/// Reads a key by id (soft-deleted ones included).
#[derive(Message)]
#[rtype(result = "Result<Option<ApiKey>, AppError>")]
pub struct GetKey {
    pub id: String,
}

/// Looks a key up by hash for request validation (caches first).
#[derive(Message)]
#[rtype(result = "Result<Option<ApiKey>, AppError>")]
pub struct FindKeyByHash {
    pub hash: String,
}

/// Every key, newest first.
#[derive(Message)]
#[rtype(result = "Result<Vec<ApiKey>, AppError>")]
pub struct ListKeys {
    pub include_deleted: bool,
    /// A listing for the admin: may come from a read replica.
    pub replica_ok: bool,
}

/// Replaces a stored key (update, disable, soft delete, restore, regenerate);
/// `previous_hash` is the hash before a regeneration.
#[derive(Message)]
#[rtype(result = "Result<ApiKey, AppError>")]
pub struct SaveKey {
    pub key: ApiKey,
    pub previous_hash: Option<String>,
}

/// Deletes a key for good; false when it did not exist.
#[derive(Message)]
#[rtype(result = "Result<bool, AppError>")]
pub struct DeleteKey {
    pub id: String,
}

/// Drops the Redis copies of changed keys before the change is answered: dropped after it (as
/// it once was), a read right after the answer could find the old copy there and keep it
/// for `KEY_CACHE_TTL_SECONDS`. When Redis refuses, its key cache is flushed.
async fn drop_redis_copies(
    cache: Option<CacheHandle>,
    hashes: &[String],
    me: Option<Addr<RouterActor>>,
) {
    let Some(cache) = cache else { return };
    if let Err(e) = cache.drop_cached_keys(hashes).await {
        log::warn!("key cache invalidation failed ({e}); the cache will be flushed");
        if let Some(me) = me {
            me.do_send(super::MarkCacheStale);
        }
    }
}

impl RouterActor {
    /// Drops `hashes` from this instance's caches and tells other instances to do the same.
    /// The Redis copies are gone already ([`drop_redis_copies`], before the change was
    /// answered).
    pub(super) fn invalidate_keys(&mut self, hashes: Vec<String>) {
        self.key_loads.invalidate();
        for h in &hashes {
            self.hot.forget_key(h);
        }
        if !self.config.mode.uses_redis() || !self.redis_up() {
            // Redis misses nothing for long: the cache is flushed when Redis returns.
            return;
        }
        let cache = self.cache.clone();
        let message = serde_json::json!({
            "type": "keys",
            "hashes": hashes,
            "from": self.journal.instance_id(),
        })
        .to_string();
        actix::spawn(async move {
            if let Err(e) = cache.publish(message).await {
                log::debug!("key invalidation not published (peers refresh by TTL): {e}");
            }
        });
    }

    /// What a key change needs to drop its Redis copies: the cache when Redis holds copies
    /// of MySQL's keys (hybrid mode) and is up.
    fn redis_copies(&self) -> Option<CacheHandle> {
        (self.config.mode == StorageMode::Hybrid && self.redis_up()).then(|| self.cache.clone())
    }

    fn require_primary(&self) -> Result<(), AppError> {
        match self.config.mode {
            StorageMode::Redis if !self.redis_up() => Err(unavailable("redis")),
            StorageMode::Hybrid | StorageMode::Mysql if !self.mysql_up() => {
                Err(unavailable("mysql"))
            }
            _ => Ok(()),
        }
    }
}

/// Width of the `id` columns of `api_keys` and `claude_accounts` (uuids).
const STORED_ID_LEN: usize = 36;

/// Checks an id from outside before any backend sees it, so every mode answers the same
/// `InvalidRequest` instead of a database error (or, in redis mode, a stored garbage id).
pub(super) fn check_id(what: &str, id: &str) -> Result<(), AppError> {
    validate_id(id)
        .and_then(|()| {
            if id.len() > STORED_ID_LEN {
                Err(format!("id must be at most {STORED_ID_LEN} characters"))
            } else {
                Ok(())
            }
        })
        .map_err(|e| AppError::InvalidRequest(format!("invalid {what}: {e}")))
}

/// Checks a record's name and description (display text from operators).
pub(super) fn check_text(what: &str, name: &str, description: &str) -> Result<(), AppError> {
    validate_name(name).map_err(|e| AppError::InvalidRequest(format!("invalid {what}: {e}")))?;
    if description.chars().count() > MAX_DESCRIPTION_LEN {
        return Err(AppError::InvalidRequest(format!(
            "invalid {what}: description must be at most {MAX_DESCRIPTION_LEN} characters"
        )));
    }
    Ok(())
}

fn check_key(key: &ApiKey) -> Result<(), AppError> {
    check_id("api key id", &key.id)?;
    check_text("api key", &key.name, &key.description)?;
    if key.key_hash.len() != 64 || !key.key_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(AppError::InvalidRequest(
            "invalid api key: the key hash must be 64 hex digits".into(),
        ));
    }
    Ok(())
}

fn store_err(e: StoreError) -> AppError {
    match e {
        StoreError::Duplicate(_) => {
            AppError::InvalidRequest("a key with this value already exists".into())
        }
        other => other.into(),
    }
}

fn cache_err(e: CacheError) -> AppError {
    e.into()
}

impl Handler<CreateKey> for RouterActor {
    type Result = ResponseActFuture<Self, Result<ApiKey, AppError>>;

    fn handle(&mut self, msg: CreateKey, _ctx: &mut Self::Context) -> Self::Result {
        if let Err(e) = check_key(&msg.key).and_then(|()| self.require_primary()) {
            return Box::pin(fut::ready(Err(e)));
        }
        let (mode, store, cache) = (self.config.mode, self.store.clone(), self.cache.clone());
        let (copies, me) = (self.redis_copies(), self.me.clone());
        let key = msg.key;
        let work = async move {
            match mode {
                StorageMode::Redis => {
                    if cache
                        .get_key_by_hash(&key.key_hash)
                        .await
                        .map_err(cache_err)?
                        .is_some()
                    {
                        return Err(AppError::InvalidRequest(
                            "a key with this value already exists".into(),
                        ));
                    }
                    cache.put_key(&key, None).await.map_err(cache_err)?;
                }
                _ => {
                    let k = key.clone();
                    store
                        .exec(move |c| Box::pin(queries::insert(c, k)))
                        .await
                        .map_err(store_err)?;
                    drop_redis_copies(copies, std::slice::from_ref(&key.key_hash), me).await;
                }
            }
            Ok(key)
        };
        Box::pin(work.into_actor(self).map(|result, act, _| {
            if let Ok(k) = &result {
                act.invalidate_keys(vec![k.key_hash.clone()]);
            }
            result
        }))
    }
}

impl Handler<GetKey> for RouterActor {
    type Result = ResponseFuture<Result<Option<ApiKey>, AppError>>;

    fn handle(&mut self, msg: GetKey, _ctx: &mut Self::Context) -> Self::Result {
        if let Err(e) = check_id("api key id", &msg.id).and_then(|()| self.require_primary()) {
            return Box::pin(async move { Err(e) });
        }
        let (mode, store, cache) = (self.config.mode, self.store.clone(), self.cache.clone());
        Box::pin(async move {
            match mode {
                StorageMode::Redis => cache.get_key(&msg.id).await.map_err(cache_err),
                _ => store
                    .exec(move |c| Box::pin(queries::get(c, msg.id)))
                    .await
                    .map_err(store_err),
            }
        })
    }
}

impl Handler<ListKeys> for RouterActor {
    type Result = ResponseFuture<Result<Vec<ApiKey>, AppError>>;

    fn handle(&mut self, msg: ListKeys, _ctx: &mut Self::Context) -> Self::Result {
        if let Err(e) = self.require_primary() {
            return Box::pin(async move { Err(e) });
        }
        let (mode, store, cache) = (self.config.mode, self.store.clone(), self.cache.clone());
        Box::pin(async move {
            match mode {
                StorageMode::Redis => {
                    let mut keys = cache.list_keys().await.map_err(cache_err)?;
                    keys.retain(|k| msg.include_deleted || !k.is_deleted());
                    keys.sort_by_key(|k| std::cmp::Reverse(k.created_at));
                    Ok(keys)
                }
                _ if msg.replica_ok => store
                    .exec_report(move |c| Box::pin(queries::list(c, msg.include_deleted)))
                    .await
                    .map_err(store_err),
                _ => store
                    .exec(move |c| Box::pin(queries::list(c, msg.include_deleted)))
                    .await
                    .map_err(store_err),
            }
        })
    }
}

impl Handler<SaveKey> for RouterActor {
    type Result = ResponseActFuture<Self, Result<ApiKey, AppError>>;

    fn handle(&mut self, msg: SaveKey, _ctx: &mut Self::Context) -> Self::Result {
        if let Err(e) = check_key(&msg.key).and_then(|()| self.require_primary()) {
            return Box::pin(fut::ready(Err(e)));
        }
        let (mode, store, cache) = (self.config.mode, self.store.clone(), self.cache.clone());
        let SaveKey { key, previous_hash } = msg;
        let mut hashes = vec![key.key_hash.clone()];
        hashes.extend(previous_hash.clone().filter(|h| *h != key.key_hash));
        let (copies, me, changed) = (self.redis_copies(), self.me.clone(), hashes.clone());
        let work = async move {
            match mode {
                StorageMode::Redis => {
                    if cache.get_key(&key.id).await.map_err(cache_err)?.is_none() {
                        return Err(AppError::NotFound(format!("api key {} not found", key.id)));
                    }
                    cache
                        .put_key(&key, previous_hash)
                        .await
                        .map_err(cache_err)?;
                }
                _ => {
                    let k = key.clone();
                    store
                        .exec(move |c| Box::pin(queries::update(c, k)))
                        .await
                        .map_err(|e| match e {
                            StoreError::NotFound => {
                                AppError::NotFound(format!("api key {} not found", key.id))
                            }
                            other => store_err(other),
                        })?;
                    drop_redis_copies(copies, &changed, me).await;
                }
            }
            Ok(key)
        };
        Box::pin(work.into_actor(self).map(move |result, act, _| {
            if result.is_ok() {
                act.invalidate_keys(hashes);
            }
            result
        }))
    }
}

impl Handler<DeleteKey> for RouterActor {
    type Result = ResponseActFuture<Self, Result<bool, AppError>>;

    fn handle(&mut self, msg: DeleteKey, _ctx: &mut Self::Context) -> Self::Result {
        if let Err(e) = check_id("api key id", &msg.id).and_then(|()| self.require_primary()) {
            return Box::pin(fut::ready(Err(e)));
        }
        let (mode, store, cache) = (self.config.mode, self.store.clone(), self.cache.clone());
        let (copies, me) = (self.redis_copies(), self.me.clone());
        let work = async move {
            let existing = match mode {
                StorageMode::Redis => cache.get_key(&msg.id).await.map_err(cache_err)?,
                _ => {
                    let id = msg.id.clone();
                    store
                        .exec(move |c| Box::pin(queries::get(c, id)))
                        .await
                        .map_err(store_err)?
                }
            };
            let Some(existing) = existing else {
                return Ok(None);
            };
            match mode {
                StorageMode::Redis => cache
                    .delete_key(&existing.id, &existing.key_hash)
                    .await
                    .map_err(cache_err)?,
                _ => {
                    let id = existing.id.clone();
                    store
                        .exec(move |c| Box::pin(queries::delete(c, id)))
                        .await
                        .map_err(store_err)?;
                    let hash = std::slice::from_ref(&existing.key_hash);
                    drop_redis_copies(copies, hash, me).await;
                }
            }
            Ok(Some(existing.key_hash))
        };
        Box::pin(work.into_actor(self).map(|result, act, _| {
            result.map(|hash| match hash {
                Some(h) => {
                    act.invalidate_keys(vec![h]);
                    true
                }
                None => false,
            })
        }))
    }
}

impl Handler<FindKeyByHash> for RouterActor {
    type Result = ResponseActFuture<Self, Result<Option<ApiKey>, AppError>>;

    fn handle(&mut self, msg: FindKeyByHash, _ctx: &mut Self::Context) -> Self::Result {
        if let Some(key) = self.hot.fresh_key(&msg.hash) {
            self.hot.count_key_lookup(true, None);
            return Box::pin(fut::ready(Ok(key.map(Arc::unwrap_or_clone))));
        }
        self.hot.count_key_lookup(false, None);
        let ticket = match self.key_loads.turn(msg.hash.clone()) {
            Turn::Read(ticket) => ticket,
            Turn::Wait(answer) => return Box::pin(fut::wrap_future(loads::wait(answer))),
        };
        let mode = self.config.mode;
        let (store, cache) = (self.store.clone(), self.cache.clone());
        let redis_ok = self.redis_up() && !self.redis_cache_stale;
        let mysql_ok = self.mysql_up();
        let cache_ttl = self.config.redis_cache_ttl;
        let hash = msg.hash.clone();
        let work = async move {
            match mode {
                StorageMode::Redis => cache.get_key_by_hash(&hash).await.map_err(cache_err),
                StorageMode::Mysql => store
                    .exec(move |c| Box::pin(queries::get_by_hash(c, hash)))
                    .await
                    .map_err(store_err),
                StorageMode::Hybrid => {
                    let mut redis_answered = false;
                    if redis_ok {
                        match cache.get_cached_key(&hash).await {
                            Ok(Some(k)) => return Ok(Some(k)),
                            Ok(None) => redis_answered = true,
                            Err(_) => {}
                        }
                    }
                    if !mysql_ok {
                        return Err(AppError::StorageUnavailable(
                            "storage unavailable: this key cannot be verified right now, try again shortly".into(),
                        ));
                    }
                    let h = hash.clone();
                    let found = store
                        .exec(move |c| Box::pin(queries::get_by_hash(c, h)))
                        .await
                        .map_err(store_err)?;
                    if let (Some(k), true) = (&found, redis_answered) {
                        let (cache, k) = (cache.clone(), k.clone());
                        actix::spawn(async move {
                            if let Err(e) = cache.set_cached_key(&k, cache_ttl).await {
                                log::debug!(
                                    "key not cached in redis (read from MySQL next time): {e}"
                                );
                            }
                        });
                    }
                    Ok(found)
                }
            }
        };
        Box::pin(work.into_actor(self).map(move |result, act, _| {
            let answer = match result {
                Ok(found) => {
                    // Read before a key changed: answered, not kept.
                    if act.key_loads.is_current(ticket) {
                        act.hot.remember_key(msg.hash.clone(), found.clone());
                    }
                    Ok(found)
                }
                // Both backends failing: a key seen before keeps working (SPEC §1,
                // both down).
                Err(e) => match act.hot.any_key(&msg.hash) {
                    Some(k) if e.is_outage() => Ok(Some(Arc::unwrap_or_clone(k))),
                    _ => Err(e),
                },
            };
            act.key_loads.finish(msg.hash, ticket, &answer);
            answer
        }))
    }
}

impl RouterHandle {
    pub async fn create_key(&self, key: ApiKey) -> Result<ApiKey, AppError> {
        self.ask(CreateKey { key }).await?
    }
    pub async fn get_key(&self, id: &str) -> Result<Option<ApiKey>, AppError> {
        self.ask(GetKey { id: id.to_string() }).await?
    }
    /// Every key, from the primary store (read-after-write safe).
    pub async fn list_keys(&self, include_deleted: bool) -> Result<Vec<ApiKey>, AppError> {
        self.ask(ListKeys {
            include_deleted,
            replica_ok: false,
        })
        .await?
    }
    /// Every key for a listing or report: from a MySQL read replica when one is usable.
    pub async fn list_keys_report(&self, include_deleted: bool) -> Result<Vec<ApiKey>, AppError> {
        self.ask(ListKeys {
            include_deleted,
            replica_ok: true,
        })
        .await?
    }
    pub async fn save_key(
        &self,
        key: ApiKey,
        previous_hash: Option<String>,
    ) -> Result<ApiKey, AppError> {
        self.ask(SaveKey { key, previous_hash }).await?
    }
    pub async fn delete_key(&self, id: &str) -> Result<bool, AppError> {
        self.ask(DeleteKey { id: id.to_string() }).await?
    }
}
