//! The actors: `CacheActor` (Redis), `PersistenceActor` (MySQL) and `RouterActor`
//! (dispatch by mode and backend health), and the state reports between them.

pub mod cache;
mod cache_conn;
mod cache_ledger;
pub mod cache_migrate;
mod cache_ops;
pub mod persistence;
pub mod router;
pub mod state;
