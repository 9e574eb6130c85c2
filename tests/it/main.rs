//! The integration tests: one binary, against real Redis and MariaDB. Each test has its own
//! MySQL database and Redis key prefix (`support::TestEnv`); outages are made real with a
//! test-owned redis-server and a TCP proxy in front of MariaDB.

#[allow(
    dead_code,
    unused_imports,
    reason = "shared helpers for every suite; not each one is used by the tests of today"
)]
mod support;

mod admin;
mod config;
mod errors;
mod health;
mod ledger;
mod migrations;
mod observability;
mod ops;
mod relay;
mod startup;
mod storage;
