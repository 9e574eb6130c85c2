//! Pure types and rules (no I/O): keys, accounts, limits, usage, cost, passwords.

pub mod password;
