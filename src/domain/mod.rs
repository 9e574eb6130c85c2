//! Pure types and rules (no I/O): keys, accounts, limits, usage, cost, passwords.

pub mod crypto;
pub mod keys;
pub mod password;
pub mod pricing;
pub mod usage;
