#!/usr/bin/env bash
# Relay benchmark (issues 4, 7 and 12): the release relay in each storage mode against the
# nginx mock upstream, versus calling the mock directly; non-streaming and streaming at 1,
# 16 and 64 connections. Per run it also reads, before and after: the relay's CPU time and
# voluntary context switches (/proc), the Redis server's CPU time and commands (INFO; a
# private redis-server, so nothing else counts), and MariaDB's CPU time. Writes
# bench/results/relay.md (table), relay.json (raw) and, when matplotlib is available,
# relay-latency.png.
#
#   bench/relay.sh                 # all modes, 10 s per run
#   MODES="hybrid" DURATION=5 bench/relay.sh
#   RELAY_BIN=/tmp/old-relay BENCH_OUT=/tmp/before bench/relay.sh   # another build
#   BENCH_ACCOUNTS=2 MODES=hybrid BENCH_OUT=/tmp/two bench/relay.sh   # sessions bind
#
# Needs: wrk, nginx with the echo module (apt-get install wrk nginx-core
# libnginx-mod-http-echo), the mock in MOCK_DIR (default ../shared/mock-upstream),
# Redis and MariaDB (scripts/services.sh brings them up).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=bench/lib.sh
source bench/lib.sh
MODES=${MODES:-"hybrid redis mysql"}
DURATION=${DURATION:-10}
CONNS=${CONNS:-"1 16 64"}
# Upstream accounts the bench key may use: with 2 or more, sessions bind (a sticky read per
# request).
ACCOUNTS=${BENCH_ACCOUNTS:-1}
MOCK_DIR=${MOCK_DIR:-$root/../shared/mock-upstream}
MOCK_PREFIX=${MOCK_PREFIX:-/tmp/claude-relay-bench-mock}
PORT=${BENCH_PORT:-3901}
out=${BENCH_OUT:-bench/results}
mkdir -p "$out"
raw="$out/relay.raw.txt"
: > "$raw"

command -v wrk >/dev/null || { echo "bench: wrk is missing (apt-get install wrk)"; exit 1; }
[ -f "$MOCK_DIR/nginx.conf" ] || { echo "bench: mock upstream not found in $MOCK_DIR"; exit 1; }
scripts/services.sh
# RELAY_BIN measures another build (e.g. an older commit's, for a before/after table).
if [ -z "${RELAY_BIN:-}" ]; then
  scripts/build-release.sh
fi
bin=${RELAY_BIN:-"${CARGO_TARGET_DIR:-target}/release/claude-relay"}
"$MOCK_DIR/stop.sh" "$MOCK_PREFIX" >/dev/null 2>&1 || true
start_mock "$MOCK_DIR" "$MOCK_PREFIX"
trap '"$MOCK_DIR/stop.sh" "$MOCK_PREFIX" >/dev/null 2>&1 || true; [ -n "${relay_pid:-}" ] && kill "$relay_pid" 2>/dev/null || true' EXIT
wrk_dir="$MOCK_DIR/wrk"

# A private redis-server: its CPU time and command counts are the relay's alone.
BENCH_REDIS_PORT=${BENCH_REDIS_PORT:-6391}
redis-server --port "$BENCH_REDIS_PORT" --save '' --appendonly no --daemonize yes \
  --pidfile "/tmp/crbench-redis-$BENCH_REDIS_PORT.pid" --logfile "/tmp/crbench-redis.log" >/dev/null
trap '"$MOCK_DIR/stop.sh" "$MOCK_PREFIX" >/dev/null 2>&1 || true; [ -n "${relay_pid:-}" ] && kill "$relay_pid" 2>/dev/null || true; redis-cli -p "$BENCH_REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true' EXIT
for _ in $(seq 1 50); do redis-cli -p "$BENCH_REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done
tck=$(getconf CLK_TCK)
mariadb_pid=$(pgrep -x mariadbd || pgrep -x mysqld || true)

# CPU seconds of a process (user + system, all threads).
cpu_of() { awk -v t="$tck" '{printf "%.3f", ($14 + $15) / t}' "/proc/$1/stat"; }
# Voluntary context switches of a process, summed over its threads.
vcs_of() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^voluntary_ctxt_switches/ {s += $2} END {print s + 0}'; }
redis_cpu() { redis-cli -p "$BENCH_REDIS_PORT" INFO cpu | tr -d '\r' | awk -F: '/^used_cpu_(user|sys):/ {s += $2} END {printf "%.3f", s}'; }
redis_cmds() { redis-cli -p "$BENCH_REDIS_PORT" INFO commandstats | tr -d '\r' | sed -n 's/^cmdstat_[^:]*:calls=\([0-9]*\),.*/\1/p' | awk '{s += $1} END {print s + 0}'; }
# One line of figures: relay CPU s, relay voluntary switches, Redis CPU s, Redis commands, MariaDB CPU s.
sample() { # relay_pid
  echo "$(cpu_of "$1") $(vcs_of "$1") $(redis_cpu) $(redis_cmds) $([ -n "$mariadb_pid" ] && cpu_of "$mariadb_pid" || echo 0)"
}

# One wrk run; prints its RESULT json with name, conns and relay RSS added.
measure() { # name url lua conns [api_key] [path]
  local name=$1 url=$2 lua=$3 conns=$4 key=${5:-} path=${6:-/v1/messages}
  local line
  line=$(API_KEY="$key" MSG_PATH="$path" wrk -t"$(( conns < 2 ? 1 : 2 ))" -c"$conns" -d"${DURATION}s" --latency -s "$wrk_dir/$lua" "$url" | grep '^RESULT ' | sed 's/^RESULT //')
  echo "$name $conns $line" | tee -a "$raw"
}

metric() { # name (a line of /metrics without labels or with exact labels)
  curl -s "http://127.0.0.1:$PORT/metrics" | awk -v m="$1" '$1==m {print $2}'
}

# Direct to the mock: the baseline the relay's added latency is measured against.
for c in $CONNS; do
  measure "direct-ns" http://127.0.0.1:18080 messages.lua "$c"
  measure "direct-stream" http://127.0.0.1:18080 messages_stream.lua "$c"
done

admin_token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
for mode in $MODES; do
  db="crbench_${mode}_$$"
  export DATABASE_TYPE=$mode MYSQL_DATABASE=$db REDIS_KEY_PREFIX="crbench:$mode:$$:" PORT=$PORT HOST=127.0.0.1 \
    REDIS_PORT=$BENCH_REDIS_PORT \
    ENCRYPTION_KEY=0123456789abcdef0123456789abcdef ADMIN_TOKEN=$admin_token LOG_LEVEL=warn \
    SPOOL_DIR="/tmp/crbench-spool-$mode-$$"
  "$bin" serve >"/tmp/crbench-$mode.log" 2>&1 &
  relay_pid=$!
  wait_healthy "http://127.0.0.1:$PORT" 200
  key=$(bench_key "http://127.0.0.1:$PORT" "$admin_token" http://127.0.0.1:18080 "$ACCOUNTS")
  # Warm-up: connections, caches, JIT-free but pools and snapshots.
  API_KEY="$key" MSG_PATH=/api/v1/messages wrk -t2 -c16 -d2s -s "$wrk_dir/messages.lua" "http://127.0.0.1:$PORT" >/dev/null
  for c in $CONNS; do
    for kind in ns stream; do
      lua=messages.lua; [ "$kind" = stream ] && lua=messages_stream.lua
      r0=$(metric 'claude_relay_backend_calls{backend="redis"}'); m0=$(metric 'claude_relay_backend_calls{backend="mysql"}')
      read -r cpu0 vcs0 rcpu0 rcmd0 mcpu0 <<<"$(sample "$relay_pid")"
      line=$(measure "$mode-$kind" "http://127.0.0.1:$PORT" "$lua" "$c" "$key" /api/v1/messages)
      read -r cpu1 vcs1 rcpu1 rcmd1 mcpu1 <<<"$(sample "$relay_pid")"
      r1=$(metric 'claude_relay_backend_calls{backend="redis"}'); m1=$(metric 'claude_relay_backend_calls{backend="mysql"}')
      reqs=$(echo "$line" | sed 's/.*"requests":\([0-9]*\).*/\1/')
      rss=$(ps -o rss= -p "$relay_pid" | tr -d ' ')
      echo "CALLS $mode-$kind $c redis=$((r1 - r0)) mysql=$((m1 - m0)) requests=$reqs rss_kb=$rss" \
        "relay_cpu=$(echo "$cpu1 - $cpu0" | bc) relay_vcs=$((vcs1 - vcs0)) redis_cpu=$(echo "$rcpu1 - $rcpu0" | bc)" \
        "redis_cmds=$((rcmd1 - rcmd0)) mariadb_cpu=$(echo "$mcpu1 - $mcpu0" | bc)" | tee -a "$raw"
    done
  done
  if [ "$mode" != mysql ]; then
    # Redis commands per relayed request, from Redis itself.
    redis-cli -p "$BENCH_REDIS_PORT" CONFIG RESETSTAT >/dev/null
    API_KEY="$key" MSG_PATH=/api/v1/messages wrk -t1 -c4 -d3s -s "$wrk_dir/messages.lua" "http://127.0.0.1:$PORT" \
      | grep '^RESULT' | sed "s/^RESULT /COMMANDSTATS-RUN $mode /" | tee -a "$raw"
    redis-cli -p "$BENCH_REDIS_PORT" INFO commandstats | tr -d '\r' | grep '^cmdstat' | sed "s/^/COMMANDSTATS $mode /" | tee -a "$raw"
  fi
  kill "$relay_pid"; wait "$relay_pid" 2>/dev/null || true; relay_pid=
  mariadb -uroot -e "DROP DATABASE IF EXISTS \`$db\`" 2>/dev/null || true
done
python3 bench/report.py "$raw" "$out"
