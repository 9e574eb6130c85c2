//! The commands of the `claude-relay` binary.

pub mod check;
pub mod diagnose;
pub mod import_crs;
pub mod init;
pub mod migrate;
mod ops_support;
pub mod rebuild_cache;
pub mod serve;

use clap::{Parser, Subcommand};

/// Claude API relay with hybrid Redis + MySQL storage.
#[derive(Debug, Parser)]
#[command(name = "claude-relay", version, about)]
pub struct Cli {
    /// Read variables from this file instead of `./.env` (which is then not read at all).
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
    /// Move data into hybrid mode (from redis mode or a CRS data set) or out of it.
    Migrate(migrate::MigrateArgs),
    /// Rebuild every Redis cache and real-time counter of hybrid mode from MySQL.
    RebuildCache,
    /// Check backends, versions, schema, figures and configuration; non-zero exit on failure.
    Diagnose,
    /// Live self-test: probe records in each backend and routing, cleaned up afterwards.
    Check,
}
