//! Operator-facing business logic that is not HTTP: input rules of the admin API, the
//! public views of keys and accounts, audit entries, login sessions, token refresh and
//! usage reports. HTTP handlers under `http/admin` call these; these call the router.

pub mod accounts;
pub mod audit;
pub mod auth;
pub mod error;
pub mod fields;
pub mod groups;
pub mod keys;
pub mod onboarding;
pub mod reports;

pub use audit::AdminContext;
pub use error::AdminError;
