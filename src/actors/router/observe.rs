//! Figures for /metrics and `diagnose` that need the backends: pool use and server
//! statistics (sampled in the background, never per request).

use actix::prelude::*;

use super::{RouterActor, RouterHandle};
use crate::actors::persistence::PoolStatus;
use crate::persistence::setup;

/// Backend figures sampled in the background.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendSample {
    pub redis_used_memory_bytes: Option<i64>,
    pub redis_connected_clients: Option<i64>,
    pub mysql_threads_connected: Option<i64>,
    pub mysql_slow_queries: Option<i64>,
    pub mysql_row_lock_waits: Option<i64>,
}

#[derive(Message)]
#[rtype(result = "PoolStatus")]
pub struct GetPoolStatus;

/// Reads the server statistics of both backends (those that are up).
#[derive(Message)]
#[rtype(result = "BackendSample")]
pub struct SampleBackends;

impl Handler<GetPoolStatus> for RouterActor {
    type Result = ResponseFuture<PoolStatus>;

    fn handle(&mut self, _: GetPoolStatus, _ctx: &mut Self::Context) -> Self::Result {
        let store = self.store.clone();
        Box::pin(async move { store.pool_status().await })
    }
}

impl Handler<SampleBackends> for RouterActor {
    type Result = ResponseFuture<BackendSample>;

    fn handle(&mut self, _: SampleBackends, _ctx: &mut Self::Context) -> Self::Result {
        let (cache, store) = (self.cache.clone(), self.store.clone());
        let (redis_up, mysql_up) = (self.redis_up(), self.mysql_up());
        Box::pin(async move {
            let mut sample = BackendSample::default();
            if redis_up && let Ok(info) = cache.server_info().await {
                sample.redis_used_memory_bytes =
                    info.get("used_memory").and_then(|v| v.parse().ok());
                sample.redis_connected_clients =
                    info.get("connected_clients").and_then(|v| v.parse().ok());
            }
            if mysql_up && let Ok(status) = store.exec(|c| Box::pin(setup::server_status(c))).await
            {
                let get = |n: &str| status.get(n).and_then(|v| v.parse().ok());
                sample.mysql_threads_connected = get("Threads_connected");
                sample.mysql_slow_queries = get("Slow_queries");
                sample.mysql_row_lock_waits = get("Innodb_row_lock_waits");
            }
            sample
        })
    }
}

impl RouterHandle {
    pub async fn pool_status(&self) -> PoolStatus {
        self.ask(GetPoolStatus).await.unwrap_or_default()
    }
    pub async fn sample_backends(&self) -> BackendSample {
        self.ask(SampleBackends).await.unwrap_or_default()
    }
}
