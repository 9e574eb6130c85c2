#!/usr/bin/env bash
# Long streams, many at once (issue 12): the release relay in hybrid mode, a slow upstream
# (started by the benchmark binary) that drips each answer for BENCH_STREAM_SECONDS, and
# BENCH_STREAMS streaming requests at once. Writes bench/results/streams.md.
#
#   bench/streams.sh                         # 5,000 streams of 10 s
#   BENCH_STREAMS=500 bench/streams.sh       # a quick look
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=bench/lib.sh
source bench/lib.sh
PORT=${BENCH_PORT:-3902}
MOCK_PORT=${BENCH_MOCK_PORT:-18090}
export BENCH_MOCK_PORT=$MOCK_PORT
scripts/services.sh
scripts/build-release.sh
target=${CARGO_TARGET_DIR:-target}/release
# The streams' client has its own target directory: the relay's build carries the profile's
# RUSTFLAGS, and sharing one directory would rebuild every crate each time.
cargo build --release --locked --features bench --bin bench_streams --target-dir "${CARGO_TARGET_DIR:-target}/tools"
tools=${CARGO_TARGET_DIR:-target}/tools/release
# Each stream holds a client socket and an upstream socket in the relay, and both ends
# in the benchmark: room for all of them.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
admin_token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
db="crbench_streams_$$"
export DATABASE_TYPE=hybrid MYSQL_DATABASE=$db REDIS_KEY_PREFIX="crbench:streams:$$:" PORT=$PORT \
  HOST=127.0.0.1 ENCRYPTION_KEY=0123456789abcdef0123456789abcdef ADMIN_TOKEN=$admin_token \
  LOG_LEVEL=warn USAGE_JOURNAL_DIR="/tmp/crbench-streams-journal-$$"
"$target/claude-relay" serve >/tmp/crbench-streams.log 2>&1 &
relay_pid=$!
trap 'kill "$relay_pid" 2>/dev/null || true; mariadb -uroot -e "DROP DATABASE IF EXISTS \`$db\`" 2>/dev/null || true' EXIT
wait_healthy "http://127.0.0.1:$PORT" 200
key=$(bench_key "http://127.0.0.1:$PORT" "$admin_token" "http://127.0.0.1:$MOCK_PORT")
RELAY_URL="http://127.0.0.1:$PORT" RELAY_KEY=$key RELAY_PID=$relay_pid \
  "$tools/bench_streams" "${1:-bench/results/streams.md}"
