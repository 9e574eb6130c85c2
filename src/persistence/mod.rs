//! Everything that speaks SQL: the schema, row types, and the queries the persistence actor
//! runs. Callers go through `PersistenceHandle`.

pub mod admin;
pub mod schema;
pub mod setup;
