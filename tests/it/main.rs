//! The integration tests: one binary, against real Redis and MariaDB. Each test has its own
//! MySQL database and Redis key prefix (`support::TestEnv`); outages are made real with a
//! test-owned redis-server and a TCP proxy in front of MariaDB.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap,
    clippy::let_underscore_must_use,
    reason = "tests: a failed unwrap is a failed test with its message; clean-up is best effort"
)]

#[allow(
    dead_code,
    unused_imports,
    reason = "shared helpers for every suite; not each one is used by the tests of today"
)]
mod support;

mod admin;
mod config;
mod console;
mod errors;
mod health;
mod ledger;
mod migrations;
mod multi;
mod observability;
mod ops;
mod relay;
mod startup;
mod storage;
