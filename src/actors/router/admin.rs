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
