//! claude-relay: a Claude API relay with hybrid Redis + MySQL storage.

pub mod actors;
pub mod app;
pub mod cli;
pub mod config;
pub mod domain;
pub mod error;
pub mod http;
pub mod kv;
pub mod ledger;
pub mod logging;
pub mod persistence;
pub mod relay;
pub mod service;
