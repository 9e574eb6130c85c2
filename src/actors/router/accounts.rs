//! Upstream accounts through the router: MySQL primary in hybrid mode with a Redis and an
//! in-process snapshot for the scheduler, which keeps working while MySQL is down.

use std::time::Instant;

use actix::prelude::*;
use chrono::{DateTime, Utc};

use super::keys::{check_id, check_text};
use super::loads::{self, Turn};
use super::{RouterActor, RouterHandle, unavailable};
use crate::config::StorageMode;
use crate::domain::account::{Account, ModelFamily, StatusChange};
use crate::error::{AppError, StoreError};
use crate::persistence::accounts as queries;

#[derive(Message)]
#[rtype(result = "Result<Account, AppError>")]
pub struct CreateAccount {
    pub account: Account,
}

#[derive(Message)]
#[rtype(result = "Result<Option<Account>, AppError>")]
pub struct GetAccount {
    pub id: String,
}

/// Every account (from the primary store).
#[derive(Message)]
#[rtype(result = "Result<Vec<Account>, AppError>")]
pub struct ListAccounts {
    /// A listing for the admin: may come from a read replica.
    pub replica_ok: bool,
}

#[derive(Message)]
#[rtype(result = "Result<Account, AppError>")]
pub struct SaveAccount {
    pub account: Account,
}

#[derive(Message)]
#[rtype(result = "Result<bool, AppError>")]
pub struct DeleteAccount {
    pub id: String,
}

/// Every account as the scheduler sees it: snapshot first, degraded sources on outage.
#[derive(Message)]
#[rtype(result = "Result<Vec<Account>, AppError>")]
pub struct AccountSnapshot;

/// Records a state change an upstream answer caused (also while MySQL is down: the
/// change then lives in the snapshots until it can be written).
#[derive(Message)]
#[rtype(result = "Result<(), AppError>")]
pub struct ChangeAccountStatus {
    pub id: String,
    pub change: StatusChange,
}

/// Puts one model family of an account aside until `until` (an upstream 429 for it).
#[derive(Message)]
#[rtype(result = "Result<(), AppError>")]
pub struct CoolModelFamily {
    pub id: String,
    pub family: ModelFamily,
    pub until: DateTime<Utc>,
}

impl RouterActor {
    fn accounts_primary(&self) -> Result<(), AppError> {
        match self.config.mode {
            StorageMode::Redis if !self.redis_up() => Err(unavailable("redis")),
            StorageMode::Hybrid | StorageMode::Mysql if !self.mysql_up() => {
                Err(unavailable("mysql"))
            }
            _ => Ok(()),
        }
    }

    /// The account snapshot is out of date: dropped here and in the workers' view, and a
    /// load under way will not be kept.
    pub(super) fn forget_accounts(&mut self) {
        self.account_snapshot = None;
        self.account_loads.invalidate();
        self.hot.clear_accounts();
    }

    pub(super) fn invalidate_accounts(&mut self) {
        self.forget_accounts();
        if self.config.mode == StorageMode::Hybrid && self.redis_up() {
            let cache = self.cache.clone();
            let message =
                serde_json::json!({ "type": "accounts", "from": self.journal.instance_id() })
                    .to_string();
            let me = self.me.clone();
            actix::spawn(async move {
                if cache.drop_cached_accounts().await.is_err()
                    && let Some(me) = me
                {
                    me.do_send(super::MarkCacheStale);
                }
                if let Err(e) = cache.publish(message).await {
                    log::debug!("account invalidation not published (peers refresh by TTL): {e}");
                }
            });
        }
    }

    /// Writes the status changes made while the primary store was down (called when it
    /// returns); each stays in the snapshots until its write succeeded.
    pub(super) fn write_pending_status_changes(&mut self, ctx: &mut Context<Self>) {
        for (id, change) in self.status_overrides.clone() {
            ctx.notify(ChangeAccountStatus { id, change });
        }
    }

    /// The snapshot read at `at` with this instance's status changes applied, published
    /// for the workers' schedulers.
    fn publish_accounts(&self, accounts: Vec<Account>, at: Instant) -> Vec<Account> {
        let accounts = self.apply_overrides(accounts);
        self.hot
            .publish_accounts(std::sync::Arc::new(accounts.clone()), at);
        accounts
    }

    fn apply_overrides(&self, mut accounts: Vec<Account>) -> Vec<Account> {
        for a in &mut accounts {
            if let Some(change) = self.status_overrides.get(&a.id) {
                a.status = change.status;
                a.status_until = change.until;
                a.error_message = change.message.clone();
            }
        }
        accounts
    }
}

async fn load_primary(
    mode: StorageMode,
    store: &crate::actors::persistence::PersistenceHandle,
    cache: &crate::actors::cache::CacheHandle,
) -> Result<Vec<Account>, AppError> {
    load_from(mode, store, cache, false).await
}

/// The accounts of the primary store; `replica_ok` lets MySQL answer from a read replica.
async fn load_from(
    mode: StorageMode,
    store: &crate::actors::persistence::PersistenceHandle,
    cache: &crate::actors::cache::CacheHandle,
    replica_ok: bool,
) -> Result<Vec<Account>, AppError> {
    match mode {
        StorageMode::Redis => {
            // Redis keeps no order: sort as the MySQL query does, so every mode agrees.
            let mut accounts = cache.list_accounts().await?;
            accounts.sort_by(|a, b| {
                a.priority
                    .cmp(&b.priority)
                    .then(a.created_at.cmp(&b.created_at))
            });
            Ok(accounts)
        }
        _ if replica_ok => Ok(store.exec_report(|c| Box::pin(queries::list(c))).await?),
        _ => Ok(store.exec(|c| Box::pin(queries::list(c))).await?),
    }
}

impl Handler<CreateAccount> for RouterActor {
    type Result = ResponseActFuture<Self, Result<Account, AppError>>;

    fn handle(&mut self, msg: CreateAccount, _ctx: &mut Self::Context) -> Self::Result {
        if let Err(e) = check_id("account id", &msg.account.id)
            .and_then(|()| check_text("account", &msg.account.name, &msg.account.description))
            .and_then(|()| self.accounts_primary())
        {
            return Box::pin(fut::ready(Err(e)));
        }
        let (mode, store, cache) = (self.config.mode, self.store.clone(), self.cache.clone());
        let account = msg.account;
        let work = async move {
            match mode {
                StorageMode::Redis => cache.put_account(&account).await?,
                _ => {
                    let a = account.clone();
                    store.exec(move |c| Box::pin(queries::insert(c, a))).await?
                }
            }
            Ok(account)
        };
        Box::pin(work.into_actor(self).map(|r, act, _| {
            if r.is_ok() {
                act.invalidate_accounts();
            }
            r
        }))
    }
}

impl Handler<GetAccount> for RouterActor {
    type Result = ResponseFuture<Result<Option<Account>, AppError>>;

    fn handle(&mut self, msg: GetAccount, _ctx: &mut Self::Context) -> Self::Result {
        if let Err(e) = check_id("account id", &msg.id).and_then(|()| self.accounts_primary()) {
            return Box::pin(async move { Err(e) });
        }
        let (mode, store, cache) = (self.config.mode, self.store.clone(), self.cache.clone());
        Box::pin(async move {
            match mode {
                StorageMode::Redis => Ok(cache.get_account(&msg.id).await?),
                _ => Ok(store
                    .exec(move |c| Box::pin(queries::get(c, msg.id)))
                    .await?),
            }
        })
    }
}

impl Handler<ListAccounts> for RouterActor {
    type Result = ResponseFuture<Result<Vec<Account>, AppError>>;

    fn handle(&mut self, msg: ListAccounts, _ctx: &mut Self::Context) -> Self::Result {
        if let Err(e) = self.accounts_primary() {
            return Box::pin(async move { Err(e) });
        }
        let (mode, store, cache) = (self.config.mode, self.store.clone(), self.cache.clone());
        Box::pin(async move {
            let mut accounts = load_from(mode, &store, &cache, msg.replica_ok).await?;
            accounts.sort_by(|a, b| {
                a.priority
                    .cmp(&b.priority)
                    .then(a.created_at.cmp(&b.created_at))
            });
            Ok(accounts)
        })
    }
}

impl Handler<SaveAccount> for RouterActor {
    type Result = ResponseActFuture<Self, Result<Account, AppError>>;

    fn handle(&mut self, msg: SaveAccount, _ctx: &mut Self::Context) -> Self::Result {
        if let Err(e) = check_id("account id", &msg.account.id)
            .and_then(|()| check_text("account", &msg.account.name, &msg.account.description))
            .and_then(|()| self.accounts_primary())
        {
            return Box::pin(fut::ready(Err(e)));
        }
        let (mode, store, cache) = (self.config.mode, self.store.clone(), self.cache.clone());
        let account = msg.account;
        let work = async move {
            match mode {
                StorageMode::Redis => {
                    if cache.get_account(&account.id).await?.is_none() {
                        return Err(AppError::NotFound(format!(
                            "account {} not found",
                            account.id
                        )));
                    }
                    cache.put_account(&account).await?;
                }
                _ => {
                    let a = account.clone();
                    store
                        .exec(move |c| Box::pin(queries::update(c, a)))
                        .await
                        .map_err(|e| match e {
                            StoreError::NotFound => {
                                AppError::NotFound(format!("account {} not found", account.id))
                            }
                            other => other.into(),
                        })?;
                }
            }
            Ok(account)
        };
        Box::pin(work.into_actor(self).map(|r, act, _| {
            if let Ok(a) = &r {
                act.status_overrides.remove(&a.id);
                act.invalidate_accounts();
            }
            r
        }))
    }
}

impl Handler<DeleteAccount> for RouterActor {
    type Result = ResponseActFuture<Self, Result<bool, AppError>>;

    fn handle(&mut self, msg: DeleteAccount, _ctx: &mut Self::Context) -> Self::Result {
        if let Err(e) = check_id("account id", &msg.id).and_then(|()| self.accounts_primary()) {
            return Box::pin(fut::ready(Err(e)));
        }
        let (mode, store, cache) = (self.config.mode, self.store.clone(), self.cache.clone());
        let work = async move {
            match mode {
                StorageMode::Redis => {
                    let existed = cache.get_account(&msg.id).await?.is_some();
                    cache.delete_account(&msg.id).await?;
                    Ok(existed)
                }
                _ => Ok(store
                    .exec(move |c| Box::pin(queries::delete(c, msg.id)))
                    .await?),
            }
        };
        Box::pin(work.into_actor(self).map(|r, act, _| {
            if r.is_ok() {
                act.invalidate_accounts();
            }
            r
        }))
    }
}

impl Handler<AccountSnapshot> for RouterActor {
    type Result = ResponseActFuture<Self, Result<Vec<Account>, AppError>>;

    fn handle(&mut self, _: AccountSnapshot, _ctx: &mut Self::Context) -> Self::Result {
        if let Some((accounts, at)) = &self.account_snapshot
            && at.elapsed() < self.config.key_cache_ttl
        {
            let at = *at;
            return Box::pin(fut::ready(Ok(self.publish_accounts(accounts.clone(), at))));
        }
        let ticket = match self.account_loads.turn(()) {
            Turn::Read(ticket) => ticket,
            Turn::Wait(answer) => return Box::pin(fut::wrap_future(loads::wait(answer))),
        };
        let (mode, store, cache) = (self.config.mode, self.store.clone(), self.cache.clone());
        let (redis_ok, mysql_ok) = (self.redis_up() && !self.redis_cache_stale, self.mysql_up());
        let ttl = self.config.redis_cache_ttl;
        let work = async move {
            if mode == StorageMode::Hybrid {
                if mysql_ok {
                    let accounts = load_primary(mode, &store, &cache).await?;
                    if redis_ok {
                        let (cache, copy) = (cache.clone(), accounts.clone());
                        actix::spawn(async move {
                            if let Err(e) = cache.set_cached_accounts(&copy, ttl).await {
                                log::debug!(
                                    "account list not cached in redis (read from MySQL next time): {e}"
                                );
                            }
                        });
                    }
                    return Ok(accounts);
                }
                if redis_ok && let Some(accounts) = cache.get_cached_accounts().await? {
                    return Ok(accounts);
                }
                return Err(unavailable("mysql"));
            }
            load_primary(mode, &store, &cache).await
        };
        Box::pin(work.into_actor(self).map(move |r, act, _| {
            let answer = match r {
                Ok(accounts) if act.account_loads.is_current(ticket) => {
                    let at = Instant::now();
                    act.account_snapshot = Some((accounts.clone(), at));
                    Ok(act.publish_accounts(accounts, at))
                }
                // Read before an account changed: answered, not kept.
                Ok(accounts) => Ok(act.apply_overrides(accounts)),
                // Both sources failing: the last snapshot is better than nothing.
                Err(e) => match &act.account_snapshot {
                    Some((accounts, _)) => Ok(act.apply_overrides(accounts.clone())),
                    None => Err(e),
                },
            };
            act.account_loads.finish((), ticket, &answer);
            answer
        }))
    }
}

impl Handler<ChangeAccountStatus> for RouterActor {
    type Result = ResponseActFuture<Self, Result<(), AppError>>;

    fn handle(&mut self, msg: ChangeAccountStatus, _ctx: &mut Self::Context) -> Self::Result {
        if let Err(e) = check_id("account id", &msg.id) {
            return Box::pin(fut::ready(Err(e)));
        }
        // The override makes the change visible to this instance's scheduler at once.
        self.status_overrides
            .insert(msg.id.clone(), msg.change.clone());
        self.hot.clear_accounts();
        if self.accounts_primary().is_err() {
            return Box::pin(fut::ready(Ok(())));
        }
        let (mode, store, cache) = (self.config.mode, self.store.clone(), self.cache.clone());
        let work = async move {
            let current = match mode {
                StorageMode::Redis => cache.get_account(&msg.id).await?,
                _ => {
                    let id = msg.id.clone();
                    store.exec(move |c| Box::pin(queries::get(c, id))).await?
                }
            };
            let Some(mut account) = current else {
                return Ok(None);
            };
            account.status = msg.change.status;
            account.status_until = msg.change.until;
            account.error_message = msg.change.message.clone();
            account.updated_at = Utc::now();
            match mode {
                StorageMode::Redis => cache.put_account(&account).await?,
                _ => {
                    let a = account.clone();
                    store.exec(move |c| Box::pin(queries::update(c, a))).await?
                }
            }
            Ok(Some(account.id))
        };
        Box::pin(
            work.into_actor(self)
                .map(|r: Result<Option<String>, AppError>, act, _| {
                    if let Ok(Some(id)) = &r {
                        act.status_overrides.remove(id);
                        act.invalidate_accounts();
                    }
                    r.map(|_| ())
                }),
        )
    }
}

impl Handler<CoolModelFamily> for RouterActor {
    type Result = ResponseActFuture<Self, Result<(), AppError>>;

    fn handle(&mut self, msg: CoolModelFamily, _ctx: &mut Self::Context) -> Self::Result {
        let family = msg.family.as_str().to_string();
        let until = msg.until;
        let patch: AccountPatch = std::sync::Arc::new(move |a: &mut Account| {
            let now = Utc::now();
            a.model_cooldowns.retain(|_, u| *u > now);
            a.model_cooldowns.insert(family.clone(), until);
            true
        });
        // While the primary store is down the cooldown lives in this instance's snapshot
        // until the snapshot is read again: not an error.
        self.patch_stored(msg.id, patch, false)
    }
}

impl RouterHandle {
    pub async fn cool_model_family(
        &self,
        id: &str,
        family: ModelFamily,
        until: DateTime<Utc>,
    ) -> Result<(), AppError> {
        self.ask(CoolModelFamily {
            id: id.to_string(),
            family,
            until,
        })
        .await?
    }
    pub async fn create_account(&self, account: Account) -> Result<Account, AppError> {
        self.ask(CreateAccount { account }).await?
    }
    pub async fn get_account(&self, id: &str) -> Result<Option<Account>, AppError> {
        self.ask(GetAccount { id: id.to_string() }).await?
    }
    /// Every account, from the primary store (read-after-write safe).
    pub async fn list_accounts(&self) -> Result<Vec<Account>, AppError> {
        self.ask(ListAccounts { replica_ok: false }).await?
    }
    /// Every account for a listing: from a MySQL read replica when one is usable.
    pub async fn list_accounts_report(&self) -> Result<Vec<Account>, AppError> {
        self.ask(ListAccounts { replica_ok: true }).await?
    }
    pub async fn save_account(&self, account: Account) -> Result<Account, AppError> {
        self.ask(SaveAccount { account }).await?
    }
    pub async fn delete_account(&self, id: &str) -> Result<bool, AppError> {
        self.ask(DeleteAccount { id: id.to_string() }).await?
    }
    pub async fn account_snapshot(&self) -> Result<Vec<Account>, AppError> {
        self.ask(AccountSnapshot).await?
    }
    pub async fn change_account_status(
        &self,
        id: &str,
        change: StatusChange,
    ) -> Result<(), AppError> {
        self.ask(ChangeAccountStatus {
            id: id.to_string(),
            change,
        })
        .await?
    }
}

/// A change to some fields of one account: `patch` answers false when there is nothing to
/// change (then nothing is written).
pub type AccountPatch = std::sync::Arc<dyn Fn(&mut Account) -> bool + Send + Sync>;

/// Changes fields of an account read fresh from the primary store (the 5-hour window, the
/// profile): other fields changed meanwhile stay as they are. This instance's scheduler
/// sees the change at once.
#[derive(Message)]
#[rtype(result = "Result<(), AppError>")]
pub struct PatchAccount {
    pub id: String,
    pub patch: AccountPatch,
}

impl Handler<PatchAccount> for RouterActor {
    type Result = ResponseActFuture<Self, Result<(), AppError>>;

    fn handle(&mut self, msg: PatchAccount, _ctx: &mut Self::Context) -> Self::Result {
        self.patch_stored(msg.id, msg.patch, true)
    }
}

impl RouterActor {
    /// Applies `patch` to this instance's snapshot at once, then to the account read fresh
    /// from the primary store (written only when the patch changed something). With the
    /// primary store down, `need_primary` makes that an error; otherwise the change lives
    /// in the snapshot alone.
    fn patch_stored(
        &mut self,
        id: String,
        patch: AccountPatch,
        need_primary: bool,
    ) -> ResponseActFuture<Self, Result<(), AppError>> {
        if let Err(e) = check_id("account id", &id) {
            return Box::pin(fut::ready(Err(e)));
        }
        if let Some((accounts, _)) = &mut self.account_snapshot
            && let Some(a) = accounts.iter_mut().find(|a| a.id == id)
        {
            patch(a);
        }
        // The workers read the patched snapshot from the next router answer on.
        self.hot.clear_accounts();
        if let Err(e) = self.accounts_primary() {
            return Box::pin(fut::ready(if need_primary { Err(e) } else { Ok(()) }));
        }
        let (mode, store, cache) = (self.config.mode, self.store.clone(), self.cache.clone());
        let serial = self.account_patches.clone();
        let work = async move {
            if mode != StorageMode::Redis {
                let changed = store
                    .exec(move |c| {
                        let (id, patch) = (id.clone(), patch.clone());
                        Box::pin(queries::patch(c, id, move |a: &mut Account| patch(a)))
                    })
                    .await?;
                return Ok(changed);
            }
            let _turn = serial.lock().await;
            let Some(mut account) = cache.get_account(&id).await? else {
                return Ok(false);
            };
            if !patch(&mut account) {
                return Ok(false);
            }
            account.updated_at = Utc::now();
            cache.put_account(&account).await?;
            Ok(true)
        };
        Box::pin(
            work.into_actor(self)
                .map(|r: Result<bool, AppError>, act, _| {
                    if let Ok(true) = r {
                        act.invalidate_accounts();
                    }
                    r.map(|_| ())
                }),
        )
    }
}

impl RouterHandle {
    /// Applies `patch` to the stored account `id` (see `PatchAccount`).
    pub async fn patch_account(&self, id: &str, patch: AccountPatch) -> Result<(), AppError> {
        self.ask(PatchAccount {
            id: id.to_string(),
            patch,
        })
        .await?
    }
}
