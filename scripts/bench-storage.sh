#!/usr/bin/env bash
# Storage benchmark (issue 3): key validation and record_usage through the router in hybrid,
# redis and mysql mode against the local Redis and MariaDB; writes bench/results/storage.md.
# Usage: scripts/bench-storage.sh [output.md]   (BENCH_ITERATIONS=20000 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo run --release --quiet --bin bench_storage -- "${1:-bench/results/storage.md}"
