#!/usr/bin/env bash
# The floor of a relay on this machine (issue 12): `bench_floor`, a pass-through with nothing
# of the relay in it, served by actix-web and by bare hyper, side by side with the relay in
# hybrid mode, under the relay benchmark's load (wrk -t2, the shared messages.lua, nginx
# mock). Per run: req/s, the process's CPU per request split into user and system time, and
# its voluntary context switches per request (/proc, before and after).
#
#   bench/floor.sh                          # 16 and 64 connections, 10 s each
#   CONNS=16 DURATION=5 RELAY_BIN=/tmp/relay FLOOR_BIN=/tmp/bench_floor bench/floor.sh
#
# Needs what bench/relay.sh needs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=bench/lib.sh
source bench/lib.sh
DURATION=${DURATION:-10}
CONNS=${CONNS:-"16 64"}
MOCK_DIR=${MOCK_DIR:-$root/../shared/mock-upstream}
MOCK_PREFIX=/tmp/claude-relay-floor-mock
FLOOR_PORT=3961
RELAY_PORT=3962
REDIS_PORT_F=6396
scripts/services.sh
if [ -z "${RELAY_BIN:-}" ]; then
  scripts/build-release.sh
fi
target=${CARGO_TARGET_DIR:-target}
# Its own target directory: the relay's release build carries the profile's RUSTFLAGS, and
# sharing one directory would rebuild every crate each time.
if [ -z "${FLOOR_BIN:-}" ]; then
  cargo build --release --locked --features bench --bin bench_floor --target-dir "$target/floor"
fi
floor_bin=${FLOOR_BIN:-$target/floor/release/bench_floor}
relay_bin=${RELAY_BIN:-$target/release/claude-relay}
out=$(mktemp -d /tmp/claude-relay-floor.XXXXXX)
db="crfloor_$$"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  "$MOCK_DIR/stop.sh" "$MOCK_PREFIX" >/dev/null 2>&1 || true
  redis-cli -p "$REDIS_PORT_F" shutdown nosave >/dev/null 2>&1 || true
  mariadb -uroot -e "DROP DATABASE IF EXISTS \`$db\`" 2>/dev/null || true
}
trap cleanup EXIT
start_mock "$MOCK_DIR" "$MOCK_PREFIX"
redis-server --port "$REDIS_PORT_F" --save '' --appendonly no --daemonize yes \
  --logfile "$out/redis.log" >/dev/null
tck=$(getconf CLK_TCK)

# user and system CPU seconds, voluntary context switches of a process (all threads).
sample() {
  local stat cs=0
  stat=$(awk -v t="$tck" '{printf "%.3f %.3f", $14 / t, $15 / t}' "/proc/$1/stat")
  for s in /proc/"$1"/task/*/status; do
    cs=$((cs + $(awk '/^voluntary_ctxt_switches/ {print $2}' "$s" 2>/dev/null || echo 0)))
  done
  echo "$stat $cs"
}

# Runs wrk against URL with CONN connections and prints one table row for NAME.
measure() { # name pid url conns key
  local before after wrk_out
  API_KEY="$5" MSG_PATH=/api/v1/messages wrk -t2 -c"$4" -d3s -s "$MOCK_DIR/wrk/messages.lua" "$3" >/dev/null
  before=$(sample "$2")
  wrk_out=$(API_KEY="$5" MSG_PATH=/api/v1/messages wrk -t2 -c"$4" -d"${DURATION}s" --latency \
    -s "$MOCK_DIR/wrk/messages.lua" "$3")
  after=$(sample "$2")
  python3 - "$1" "$4" "$before" "$after" <<PY
import re, sys
name, conns, before, after = sys.argv[1], sys.argv[2], sys.argv[3].split(), sys.argv[4].split()
text = """$wrk_out"""
total = int(re.search(r"(\d+) requests in", text).group(1))
non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", text)
scale = {"us": 0.001, "ms": 1, "s": 1000}[p50.group(2)]
usr = (float(after[0]) - float(before[0])) / total * 1e6
sys_ = (float(after[1]) - float(before[1])) / total * 1e6
cs = (int(after[2]) - int(before[2])) / total
rps = total / $DURATION
errors = int(non2xx.group(1)) if non2xx else 0
print(f"| {name} | {conns} | {rps:,.0f} | {float(p50.group(1)) * scale:.3f} | {usr + sys_:.1f} | {usr:.1f} | {sys_:.1f} | {cs:.2f} | {errors} |")
PY
}

echo "| server | conns | req/s | p50 ms | CPU µs/req | user µs/req | system µs/req | voluntary ctx sw/req | errors |"
echo "|---|---|---|---|---|---|---|---|---|"
for server in actix hyper; do
  BENCH_FLOOR_SERVER=$server BENCH_FLOOR_PORT=$FLOOR_PORT "$floor_bin" >"$out/floor-$server.log" 2>&1 &
  pid=$!
  pids+=("$pid")
  for _ in $(seq 1 50); do grep -q "on $FLOOR_PORT" "$out/floor-$server.log" && break; sleep 0.1; done
  for c in $CONNS; do measure "floor, $server" "$pid" "http://127.0.0.1:$FLOOR_PORT" "$c" unused; done
  kill "$pid"
  wait "$pid" 2>/dev/null || true
done

admin_token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
DATABASE_TYPE=hybrid MYSQL_DATABASE=$db REDIS_KEY_PREFIX="crfloor:$$:" PORT=$RELAY_PORT HOST=127.0.0.1 \
  REDIS_PORT=$REDIS_PORT_F ENCRYPTION_KEY=0123456789abcdef0123456789abcdef ADMIN_TOKEN=$admin_token \
  LOG_LEVEL=warn SPOOL_DIR="$out/spool" "$relay_bin" serve >"$out/relay.log" 2>&1 &
relay_pid=$!
pids+=("$relay_pid")
wait_healthy "http://127.0.0.1:$RELAY_PORT" 300
key=$(bench_key "http://127.0.0.1:$RELAY_PORT" "$admin_token" http://127.0.0.1:18080)
for c in $CONNS; do measure "relay, hybrid" "$relay_pid" "http://127.0.0.1:$RELAY_PORT" "$c" "$key"; done
