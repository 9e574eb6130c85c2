//! Everything that speaks SQL: the schema, row types, and the queries the persistence actor
//! runs. Callers go through `PersistenceHandle`.

pub mod accounts;
pub mod activity;
pub mod admin;
pub mod api_keys;
pub mod audit;
pub mod ephemeral;
pub mod groups;
pub mod ledger;
mod literal;
pub mod ops;
pub mod schema;
pub mod setup;
pub mod usage;
