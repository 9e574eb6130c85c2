//! Pure types and rules (no I/O): keys, accounts, limits, usage, cost, passwords, and the
//! OpenAI Chat Completions translation.

pub mod account;
pub mod api_key;
pub mod audit;
pub mod client;
pub mod crs;
pub mod crypto;
pub mod group;
pub mod keys;
pub mod limits;
pub mod oauth_flow;
pub mod openai;
pub mod password;
pub mod pricing;
pub mod shaping;
pub mod usage;
pub mod usage_event;
