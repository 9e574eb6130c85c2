#!/usr/bin/env bash
# Usage ledger benchmark (issue 10): journal append cost per event, archive rate and the drain
# time of a backlog (BENCH_BACKLOG, default 1,000,000 events) into the local MariaDB; writes
# bench/results/ledger.md.   Usage: scripts/bench-ledger.sh [output.md]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh
exec cargo run --release --quiet --features bench --bin bench_ledger -- "${1:-bench/results/ledger.md}"
