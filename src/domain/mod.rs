//! Pure types and rules (no I/O): keys, accounts, limits, usage, cost, passwords.

pub mod password;
pub mod account;
pub mod api_key;
pub mod usage_event;
pub mod limits;
