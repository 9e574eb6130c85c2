//! The relay end to end (issue 4): the real HTTP server, real Redis and MariaDB, and the
//! in-process mock upstream.

mod basics;
pub mod clients;
mod cooldowns;
mod degradation;
mod endpoints;
mod errors;
mod groups;
pub mod harness;
mod openai;
mod queue;
mod selection;
mod shaping;
mod streaming;
mod workers;
