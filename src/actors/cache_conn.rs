//! The cache actor's connection, whatever the deployment's Redis topology (`REDIS_MODE`):
//! one server, a server named by Sentinel, or a Redis Cluster. Every command of the cache
//! layer runs through `RedisConn`, which speaks `ConnectionLike` like the crate's own
//! connections do.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, RedisResult, Value};
use secrecy::ExposeSecret;

use crate::config::{RedisConfig, RedisTopology};

/// A multiplexed connection to the deployment's Redis; cheap to clone.
#[derive(Clone)]
pub enum RedisConn {
    /// One server (standalone), reconnecting by itself.
    Server(ConnectionManager),
    /// The master Sentinel named when it connected. It is not reconnected in place: after
    /// an outage the actor drops it and asks the sentinels again (a failover may have
    /// promoted another server).
    SentinelMaster(ConnectionManager),
    /// A cluster: the crate routes each command by its keys' slot and follows failovers.
    Cluster(ClusterConnection),
}

impl RedisConn {
    /// Connects as the topology says, bounded by `timeout` per step.
    pub async fn connect(
        config: &RedisConfig,
        manager: ConnectionManagerConfig,
        timeout: Duration,
    ) -> RedisResult<RedisConn> {
        let bounded =
            |what: &'static str| move |_| redis::RedisError::from((redis::ErrorKind::Io, what));
        match &config.topology {
            RedisTopology::Standalone => {
                let client = redis::Client::open(config.url().expose_secret())?;
                let conn = ConnectionManager::new_with_config(client, manager);
                let conn = tokio::time::timeout(timeout, conn)
                    .await
                    .map_err(bounded("connect timed out"))??;
                Ok(RedisConn::Server(conn))
            }
            RedisTopology::Sentinel { .. } => {
                let client = sentinel_master(config, timeout).await?;
                let conn = ConnectionManager::new_with_config(client, manager);
                let conn = tokio::time::timeout(timeout, conn)
                    .await
                    .map_err(bounded("connect timed out"))??;
                Ok(RedisConn::SentinelMaster(conn))
            }
            RedisTopology::Cluster { nodes } => {
                let urls: Vec<String> = nodes
                    .iter()
                    .map(|(host, port)| config.url_of(host, *port).expose_secret().to_string())
                    .collect();
                // Few retries, short waits: while a master fails over, calls fail fast
                // (the degradation matrix's outage) instead of stalling the request path.
                let client = redis::cluster::ClusterClient::builder(urls)
                    .connection_timeout(timeout)
                    // Calls are bounded by their own time-outs (`Exec`); this one lets the
                    // longest single command through, a counting round trip.
                    .response_timeout(timeout.max(super::cache_ops::BACKGROUND_TIMEOUT))
                    .retries(2)
                    .min_retry_wait(10)
                    .max_retry_wait(100)
                    .build()?;
                let conn = tokio::time::timeout(timeout * 4, client.get_async_connection())
                    .await
                    .map_err(bounded("cluster connect timed out"))??;
                Ok(RedisConn::Cluster(conn))
            }
        }
    }

    /// True when an outage should drop this connection so the next probe connects anew
    /// (Sentinel's master may have changed; the other kinds find their way back alone).
    pub fn reconnects_after_outage(&self) -> bool {
        matches!(self, RedisConn::SentinelMaster(_))
    }

    /// Runs a command that names no key (SCAN, INFO) on the server holding `key`: in a
    /// cluster, the master of its slot (all of a deployment's keys share one).
    pub async fn query_beside<T: FromRedisValue>(
        &mut self,
        cmd: &Cmd,
        key: &str,
    ) -> RedisResult<T> {
        match self {
            RedisConn::Cluster(conn) => {
                let route = Route::with_key(key, SlotAddr::Master);
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                let value = conn.route_command(cmd.clone(), routing).await?;
                redis::from_redis_value(value).map_err(redis::RedisError::from)
            }
            other => cmd.query_async(other).await,
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Server(c) | RedisConn::SentinelMaster(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Server(c) | RedisConn::SentinelMaster(c) => {
                c.req_packed_commands(pipeline, offset, count)
            }
            RedisConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Server(c) | RedisConn::SentinelMaster(c) => c.get_db(),
            RedisConn::Cluster(c) => c.get_db(),
        }
    }
}

/// A client of the master the sentinels name now: the first sentinel that answers wins,
/// and the crate checks that the server it names calls itself master.
async fn sentinel_master(config: &RedisConfig, timeout: Duration) -> RedisResult<redis::Client> {
    let RedisTopology::Sentinel {
        sentinels,
        master_name,
    } = &config.topology
    else {
        return Err((
            redis::ErrorKind::InvalidClientConfig,
            "not a sentinel topology",
        )
            .into());
    };
    let urls: Vec<String> = sentinels
        .iter()
        .map(|(host, port)| format!("redis://{host}:{port}"))
        .collect();
    let mut sentinel = redis::sentinel::Sentinel::build(urls)?;
    let mut server = redis::RedisConnectionInfo::default().set_db(config.db);
    if let Some(password) = &config.password {
        server = server.set_password(password.expose_secret());
    }
    let node =
        redis::sentinel::SentinelNodeConnectionInfo::default().set_redis_connection_info(server);
    tokio::time::timeout(
        timeout * 4,
        sentinel.async_master_for(master_name, Some(&node)),
    )
    .await
    .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "sentinel timed out")))?
}

/// A client for a pub/sub connection: the standalone server, the master Sentinel names, or
/// the first cluster node that accepts a connection (a cluster forwards every publication
/// to every node).
pub async fn pubsub_client(config: &RedisConfig, timeout: Duration) -> RedisResult<redis::Client> {
    match &config.topology {
        RedisTopology::Standalone => redis::Client::open(config.url().expose_secret()),
        RedisTopology::Sentinel { .. } => sentinel_master(config, timeout).await,
        RedisTopology::Cluster { nodes } => {
            let mut last = None;
            for (host, port) in nodes {
                let client = redis::Client::open(config.url_of(host, *port).expose_secret())?;
                match tokio::time::timeout(timeout, client.get_multiplexed_async_connection()).await
                {
                    Ok(Ok(_)) => return Ok(client),
                    Ok(Err(e)) => last = Some(e),
                    Err(_) => {}
                }
            }
            Err(last.unwrap_or_else(|| (redis::ErrorKind::Io, "no cluster node answered").into()))
        }
    }
}
