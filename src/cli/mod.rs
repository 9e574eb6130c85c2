//! The commands of the `claude-relay` binary.

pub mod init;
pub mod serve;

use clap::{Parser, Subcommand};

/// Claude API relay with hybrid Redis + MySQL storage.
#[derive(Debug, Parser)]
#[command(name = "claude-relay", version, about)]
pub struct Cli {
    /// Read variables from this file instead of `./.env`.
    #[arg(long, global = true)]
    pub env_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay service.
    Serve,
    /// Create the MySQL database and schema, check Redis, create the admin user (idempotent).
    Init,
}
