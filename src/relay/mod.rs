//! The relay: key checks, admission, account choice, the upstream call, SSE pass-through
//! with usage capture, and recording usage and cost (SPEC §4–7).

pub mod auth;
pub mod connections;
pub mod dialect;
pub mod oauth;
pub mod pipeline;
pub mod queue;
pub mod scheduler;
pub mod stream;
pub mod subscription;
pub mod upstream;
