//! Shared helpers of the integration tests: isolated environments (`TestEnv`), the relay
//! in-process (`spawn_app`) or as the real binary (`spawn_binary`, `run_cli`), test-owned
//! backends and outages (`RedisServer`, `TcpProxy`), HTTP and polling helpers.

pub mod app;
pub mod binary;
pub mod browser;
pub mod env;
pub mod fixtures;
pub mod http;
pub mod mock_upstream;
pub mod mysql;
pub mod poll;
pub mod proxy;
pub mod redis_server;
pub mod redis_topology;

pub use app::{TestApp, spawn_app};
pub use binary::{ChildRelay, run_cli, spawn_binary};
pub use browser::Browser;
pub use env::{TestEnv, free_port};
pub use http::Http;
pub use mock_upstream::{Behaviour, MockUpstream, start_mock};
pub use poll::eventually;
pub use proxy::TcpProxy;
pub use redis_server::RedisServer;
pub use redis_topology::{RedisCluster, RedisSentinels};
