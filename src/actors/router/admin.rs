//! Operator accounts: where they live per mode.

use actix::prelude::*;

use super::{RouterActor, RouterHandle, unavailable};
use crate::config::StorageMode;
use crate::error::AppError;
use crate::persistence::admin as queries;

/// Creates the operator account unless one with this name exists; true when created.
#[derive(Message)]
#[rtype(result = "Result<bool, AppError>")]
pub struct EnsureAdmin {
    pub username: String,
    pub password_hash: String,
}

impl Handler<EnsureAdmin> for RouterActor {
    type Result = ResponseFuture<Result<bool, AppError>>;

    fn handle(&mut self, msg: EnsureAdmin, _ctx: &mut Self::Context) -> Self::Result {
        let store = self.store.clone();
        let cache = self.cache.clone();
        let mode = self.config.mode;
        let mysql_up = self.mysql_up();
        let redis_up = self.redis_up();
        Box::pin(async move {
            match mode {
                StorageMode::Redis => {
                    if !redis_up {
                        return Err(unavailable("redis"));
                    }
                    Ok(cache
                        .insert_admin_if_missing(&msg.username, &msg.password_hash)
                        .await?)
                }
                _ => {
                    if !mysql_up {
                        return Err(unavailable("mysql"));
                    }
                    Ok(store
                        .exec(move |c| {
                            Box::pin(queries::insert_admin_if_missing(
                                c,
                                msg.username,
                                msg.password_hash,
                            ))
                        })
                        .await?)
                }
            }
        })
    }
}

impl RouterHandle {
    pub async fn ensure_admin(
        &self,
        username: String,
        password_hash: String,
    ) -> Result<bool, AppError> {
        self.ask(EnsureAdmin {
            username,
            password_hash,
        })
        .await?
    }
}

/// The stored password hash of an operator (None when there is no such operator).
#[derive(Message)]
#[rtype(result = "Result<Option<String>, AppError>")]
pub struct AdminPasswordHash {
    pub username: String,
}

/// Replaces an operator's password hash; false when the operator does not exist.
#[derive(Message)]
#[rtype(result = "Result<bool, AppError>")]
pub struct SetAdminPassword {
    pub username: String,
    pub password_hash: String,
}

/// Records a successful login (best effort; redis mode keeps no login time).
#[derive(Message)]
#[rtype(result = "Result<(), AppError>")]
pub struct TouchAdminLogin {
    pub username: String,
}

impl RouterActor {
    /// Where operators live: Redis in redis mode, MySQL otherwise.
    fn admins_primary(&self) -> Result<(), AppError> {
        match self.config.mode {
            StorageMode::Redis if !self.redis_up() => Err(unavailable("redis")),
            StorageMode::Hybrid | StorageMode::Mysql if !self.mysql_up() => {
                Err(unavailable("mysql"))
            }
            _ => Ok(()),
        }
    }
}

impl Handler<AdminPasswordHash> for RouterActor {
    type Result = ResponseFuture<Result<Option<String>, AppError>>;

    fn handle(&mut self, msg: AdminPasswordHash, _ctx: &mut Self::Context) -> Self::Result {
        if let Err(e) = self.admins_primary() {
            return Box::pin(async move { Err(e) });
        }
        let (mode, store, cache) = (self.config.mode, self.store.clone(), self.cache.clone());
        Box::pin(async move {
            match mode {
                StorageMode::Redis => Ok(cache.admin_password_hash(&msg.username).await?),
                _ => Ok(store
                    .exec(move |c| Box::pin(queries::find_admin(c, msg.username)))
                    .await?
                    .map(|row| row.password_hash)),
            }
        })
    }
}

impl Handler<SetAdminPassword> for RouterActor {
    type Result = ResponseFuture<Result<bool, AppError>>;

    fn handle(&mut self, msg: SetAdminPassword, _ctx: &mut Self::Context) -> Self::Result {
        if let Err(e) = self.admins_primary() {
            return Box::pin(async move { Err(e) });
        }
        let (mode, store, cache) = (self.config.mode, self.store.clone(), self.cache.clone());
        Box::pin(async move {
            match mode {
                StorageMode::Redis => {
                    if cache.admin_password_hash(&msg.username).await?.is_none() {
                        return Ok(false);
                    }
                    cache
                        .set_admin_password_hash(&msg.username, &msg.password_hash)
                        .await?;
                    Ok(true)
                }
                _ => Ok(store
                    .exec(move |c| {
                        Box::pin(queries::set_password_hash(
                            c,
                            msg.username,
                            msg.password_hash,
                        ))
                    })
                    .await?),
            }
        })
    }
}

impl Handler<TouchAdminLogin> for RouterActor {
    type Result = ResponseFuture<Result<(), AppError>>;

    fn handle(&mut self, msg: TouchAdminLogin, _ctx: &mut Self::Context) -> Self::Result {
        if self.config.mode == StorageMode::Redis || !self.mysql_up() {
            return Box::pin(async { Ok(()) });
        }
        let store = self.store.clone();
        Box::pin(async move {
            Ok(store
                .exec(move |c| Box::pin(queries::touch_login(c, msg.username)))
                .await?)
        })
    }
}

impl RouterHandle {
    /// The operator's password hash, for login and change-password.
    pub async fn admin_password_hash(&self, username: &str) -> Result<Option<String>, AppError> {
        self.ask(AdminPasswordHash {
            username: username.to_string(),
        })
        .await?
    }

    /// Stores a new password hash; false when the operator does not exist.
    pub async fn set_admin_password(
        &self,
        username: &str,
        password_hash: String,
    ) -> Result<bool, AppError> {
        self.ask(SetAdminPassword {
            username: username.to_string(),
            password_hash,
        })
        .await?
    }

    /// Notes a successful login (best effort).
    pub async fn touch_admin_login(&self, username: &str) -> Result<(), AppError> {
        self.ask(TouchAdminLogin {
            username: username.to_string(),
        })
        .await?
    }
}
