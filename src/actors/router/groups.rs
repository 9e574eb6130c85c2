//! Account groups through the router: MySQL in hybrid and mysql modes, Redis records in
//! redis mode. Only the admin API reads them (the scheduler reads membership from the
//! accounts), so there is no cache in front.

use actix::prelude::*;

use super::keys::{check_id, check_text};
use super::{RouterActor, RouterHandle, unavailable};
use crate::config::StorageMode;
use crate::domain::group::AccountGroup;
use crate::error::AppError;
use crate::persistence::groups as queries;

#[derive(Message)]
#[rtype(result = "Result<AccountGroup, AppError>")]
pub struct SaveGroup {
    pub group: AccountGroup,
}

#[derive(Message)]
#[rtype(result = "Result<Option<AccountGroup>, AppError>")]
pub struct GetGroup {
    pub id: String,
}

#[derive(Message)]
#[rtype(result = "Result<Vec<AccountGroup>, AppError>")]
pub struct ListGroups;

#[derive(Message)]
#[rtype(result = "Result<bool, AppError>")]
pub struct DeleteGroup {
    pub id: String,
}

impl RouterActor {
    fn groups_primary(&self) -> Result<(), AppError> {
        match self.config.mode {
            StorageMode::Redis if !self.redis_up() => Err(unavailable("redis")),
            StorageMode::Hybrid | StorageMode::Mysql if !self.mysql_up() => {
                Err(unavailable("mysql"))
            }
            _ => Ok(()),
        }
    }
}

impl Handler<SaveGroup> for RouterActor {
    type Result = ResponseFuture<Result<AccountGroup, AppError>>;

    fn handle(&mut self, msg: SaveGroup, _ctx: &mut Self::Context) -> Self::Result {
        let group = msg.group;
        if let Err(e) = check_id("group id", &group.id)
            .and_then(|()| check_text("group", &group.name, &group.description))
            .and_then(|()| self.groups_primary())
        {
            return Box::pin(async move { Err(e) });
        }
        let (mode, store, cache) = (self.config.mode, self.store.clone(), self.cache.clone());
        Box::pin(async move {
            match mode {
                StorageMode::Redis => cache.put_group(&group).await?,
                _ => {
                    let g = group.clone();
                    store.exec(move |c| Box::pin(queries::upsert(c, g))).await?
                }
            }
            Ok(group)
        })
    }
}

impl Handler<GetGroup> for RouterActor {
    type Result = ResponseFuture<Result<Option<AccountGroup>, AppError>>;

    fn handle(&mut self, msg: GetGroup, _ctx: &mut Self::Context) -> Self::Result {
        if let Err(e) = check_id("group id", &msg.id).and_then(|()| self.groups_primary()) {
            return Box::pin(async move { Err(e) });
        }
        let (mode, store, cache) = (self.config.mode, self.store.clone(), self.cache.clone());
        Box::pin(async move {
            match mode {
                StorageMode::Redis => Ok(cache.get_group(&msg.id).await?),
                _ => Ok(store
                    .exec(move |c| Box::pin(queries::get(c, msg.id)))
                    .await?),
            }
        })
    }
}

impl Handler<ListGroups> for RouterActor {
    type Result = ResponseFuture<Result<Vec<AccountGroup>, AppError>>;

    fn handle(&mut self, _: ListGroups, _ctx: &mut Self::Context) -> Self::Result {
        if let Err(e) = self.groups_primary() {
            return Box::pin(async move { Err(e) });
        }
        let (mode, store, cache) = (self.config.mode, self.store.clone(), self.cache.clone());
        Box::pin(async move {
            let mut groups = match mode {
                StorageMode::Redis => cache.list_groups().await?,
                _ => store.exec(|c| Box::pin(queries::list(c))).await?,
            };
            // Redis keeps no order: every mode answers oldest first.
            groups.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
            Ok(groups)
        })
    }
}

impl Handler<DeleteGroup> for RouterActor {
    type Result = ResponseFuture<Result<bool, AppError>>;

    fn handle(&mut self, msg: DeleteGroup, _ctx: &mut Self::Context) -> Self::Result {
        if let Err(e) = check_id("group id", &msg.id).and_then(|()| self.groups_primary()) {
            return Box::pin(async move { Err(e) });
        }
        let (mode, store, cache) = (self.config.mode, self.store.clone(), self.cache.clone());
        Box::pin(async move {
            match mode {
                StorageMode::Redis => {
                    let existed = cache.get_group(&msg.id).await?.is_some();
                    cache.delete_group(&msg.id).await?;
                    Ok(existed)
                }
                _ => Ok(store
                    .exec(move |c| Box::pin(queries::delete(c, msg.id)))
                    .await?),
            }
        })
    }
}

impl RouterHandle {
    pub async fn save_group(&self, group: AccountGroup) -> Result<AccountGroup, AppError> {
        self.ask(SaveGroup { group }).await?
    }
    pub async fn get_group(&self, id: &str) -> Result<Option<AccountGroup>, AppError> {
        self.ask(GetGroup { id: id.to_string() }).await?
    }
    pub async fn list_groups(&self) -> Result<Vec<AccountGroup>, AppError> {
        self.ask(ListGroups).await?
    }
    pub async fn delete_group(&self, id: &str) -> Result<bool, AppError> {
        self.ask(DeleteGroup { id: id.to_string() }).await?
    }
}
