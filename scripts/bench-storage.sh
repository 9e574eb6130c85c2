#!/usr/bin/env bash
# Storage benchmark (issue 3): key validation and record_usage through the router in hybrid,
# redis and mysql mode against the local Redis and MariaDB; writes bench/results/storage.md.
# Usage: scripts/bench-storage.sh [output.md]   (BENCH_ITERATIONS=20000 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
# The binary is behind the `bench` feature so the default build (scripts/run.sh) skips it.
exec cargo run --release --quiet --features bench --bin bench_storage -- "${1:-bench/results/storage.md}"
