#!/usr/bin/env bash
# Side-by-side comparison of relay builds or settings (issue 12): this machine's speed drifts
# by ±10 % within minutes, so two variants are only comparable when they alternate in one
# session. Each variant is `label=binary` or `label=binary:VAR=value,VAR=value` (environment
# for the relay); ROUNDS rounds run every variant once, in turn, each with a fresh relay,
# database and private redis-server. One line per run: req/s, latency, and the CPU per
# request of the relay, Redis and MariaDB (MariaDB per archived row, counted after the
# archive caught up).
#
#   bench/ab.sh base=/tmp/relay-base new=target/release/claude-relay
#   WARMUP=8 bench/ab.sh …             # a longer warm-up of each fresh relay (default 2 s): a
#                                      # fresh relay's first seconds cost more (stop 36)
#   ROUNDS=5 CONNS=64 bench/ab.sh small=/tmp/r:USAGE_BATCH_SIZE=250 big=/tmp/r
#   PERF_OUT=/tmp/perf bench/ab.sh …   # also a perf profile (DWARF stacks) of each relay,
#                                      # for bench/share.py: shares of CPU hold across drift
#   PERF_ARGS='-e probe_relay:mi_malloc_aligned -c 53' PERF_OUT=… # stacks of every 53rd
#                                      # allocation (after `perf probe -x BIN -a mi_malloc_aligned`)
#
# After the last round, one line per variant: the median of its runs and their range, for
# req/s and each CPU figure (a single run says little on a machine that drifts).
#
# Needs what bench/relay.sh needs (wrk, nginx with the echo module, Redis, MariaDB).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=bench/lib.sh
source bench/lib.sh
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-16}
DURATION=${DURATION:-10}
MODE=${MODE:-hybrid}
LUA=${LUA:-messages.lua}
MOCK_DIR=${MOCK_DIR:-$root/../shared/mock-upstream}
MOCK_PREFIX=/tmp/claude-relay-ab-mock
PORT=${BENCH_PORT:-3970}
REDIS_PORT_AB=${BENCH_REDIS_PORT:-6397}
[ $# -ge 1 ] || { echo "usage: bench/ab.sh label=binary[:VAR=value,...] ..."; exit 2; }
scripts/services.sh >/dev/null
tck=$(getconf CLK_TCK)
mariadb_pid=$(pgrep -x mariadbd || pgrep -x mysqld)
cpu_of() { awk -v t="$tck" '{printf "%.3f", ($14 + $15) / t}' "/proc/$1/stat"; }
vcs_of() { cat /proc/"$1"/task/*/status 2>/dev/null | awk '/^voluntary_ctxt_switches/ {s += $2} END {print s + 0}'; }
redis_cpu() { redis-cli -p "$REDIS_PORT_AB" INFO cpu | tr -d '\r' | awk -F: '/^used_cpu_(user|sys):/ {s += $2} END {printf "%.3f", s}'; }
redis_cmds() { redis-cli -p "$REDIS_PORT_AB" INFO commandstats | tr -d '\r' | sed -n 's/.*:calls=\([0-9]*\),.*/\1/p' | awk '{s += $1} END {print s + 0}'; }
rows_of() { mariadb -uroot -N -e "SELECT COUNT(*) FROM \`$1\`.usage_records" 2>/dev/null || echo 0; }
relay_pid=
stop_relay() {
  [ -n "$relay_pid" ] && { kill "$relay_pid" 2>/dev/null || true; wait "$relay_pid" 2>/dev/null || true; }
  relay_pid=
}
cleanup() {
  stop_relay
  "$MOCK_DIR/stop.sh" "$MOCK_PREFIX" >/dev/null 2>&1 || true
  redis-cli -p "$REDIS_PORT_AB" shutdown nosave >/dev/null 2>&1 || true
}
runs_file=$(mktemp /tmp/claude-relay-ab-runs.XXXXXX)
trap 'cleanup; rm -f "$runs_file"' EXIT
"$MOCK_DIR/stop.sh" "$MOCK_PREFIX" >/dev/null 2>&1 || true
start_mock "$MOCK_DIR" "$MOCK_PREFIX"
admin_token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf '%-10s %6s %9s %8s %8s %10s %10s %10s %11s %8s\n' variant conns 'req/s' p50_ms p99_ms relay_us redis_us redis_cmds mariadb_us vcs
for round in $(seq 1 "$ROUNDS"); do
  for variant in "$@"; do
    label=${variant%%=*}; spec=${variant#*=}; bin=${spec%%:*}; envs=
    [ "$spec" != "$bin" ] && envs=${spec#*:}
    redis-cli -p "$REDIS_PORT_AB" shutdown nosave >/dev/null 2>&1 || true
    redis-server --port "$REDIS_PORT_AB" --save '' --appendonly no --daemonize yes --logfile /tmp/claude-relay-ab-redis.log >/dev/null
    for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT_AB" ping >/dev/null 2>&1 && break; sleep 0.1; done
    # A relay from an earlier run still on the port would answer the health check.
    ! curl -s "http://127.0.0.1:$PORT/health" >/dev/null || { echo "ab: port $PORT is taken"; exit 1; }
    db="crab_${round}_${label}_$$"
    spool=$(mktemp -d /tmp/claude-relay-ab-spool.XXXXXX)
    (
      export DATABASE_TYPE=$MODE MYSQL_DATABASE=$db REDIS_KEY_PREFIX="crab:$$:" PORT=$PORT HOST=127.0.0.1 \
        REDIS_PORT=$REDIS_PORT_AB ENCRYPTION_KEY=0123456789abcdef0123456789abcdef \
        ADMIN_TOKEN=$admin_token LOG_LEVEL=warn USAGE_JOURNAL_DIR="$spool"
      IFS=, read -ra pairs <<<"$envs"
      for pair in "${pairs[@]}"; do export "${pair?}"; done
      exec "$bin" serve
    ) >"/tmp/claude-relay-ab-$label.log" 2>&1 &
    relay_pid=$!
    wait_healthy "http://127.0.0.1:$PORT" 300
    key=$(bench_key "http://127.0.0.1:$PORT" "$admin_token" http://127.0.0.1:18080)
    API_KEY="$key" MSG_PATH=/api/v1/messages wrk -t2 -c16 -d"${WARMUP:-2}s" -s "$MOCK_DIR/wrk/$LUA" "http://127.0.0.1:$PORT" >/dev/null
    sleep 1
    rows0=$(rows_of "$db"); cpu0=$(cpu_of "$relay_pid"); vcs0=$(vcs_of "$relay_pid"); rcpu0=$(redis_cpu); cmds0=$(redis_cmds); mcpu0=$(cpu_of "$mariadb_pid")
    if [ -n "${PERF_OUT:-}" ]; then
      mkdir -p "$PERF_OUT"
      perf record -q ${PERF_ARGS:--F 499} --call-graph dwarf,16384 -p "$relay_pid" -o "$PERF_OUT/$label-$round.data" \
        -- sleep "$((DURATION / 2))" >/dev/null 2>&1 &
    fi
    result=$(API_KEY="$key" MSG_PATH=/api/v1/messages wrk -t"$((CONNS < 2 ? 1 : 2))" -c"$CONNS" -d"${DURATION}s" --latency \
      -s "$MOCK_DIR/wrk/$LUA" "http://127.0.0.1:$PORT" | sed -n 's/^RESULT //p')
    # Let the archive catch up: every relayed request becomes one row.
    sleep 1.5
    cpu1=$(cpu_of "$relay_pid"); vcs1=$(vcs_of "$relay_pid"); rcpu1=$(redis_cpu); cmds1=$(redis_cmds); mcpu1=$(cpu_of "$mariadb_pid"); rows1=$(rows_of "$db")
    python3 - "$runs_file" "$label" "$CONNS" "$result" "$cpu0" "$cpu1" "$vcs0" "$vcs1" "$rcpu0" "$rcpu1" "$mcpu0" "$mcpu1" "$rows0" "$rows1" "$cmds0" "$cmds1" <<'PY'
import json, sys
runs_file, label, conns, result = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
c0, c1, v0, v1, r0, r1, m0, m1, n0, n1, k0, k1 = map(float, sys.argv[5:])
reqs = result["requests"]
rows = max(n1 - n0, 1)
run = [result["rps"], result["p50_ms"], result["p99_ms"], (c1 - c0) * 1e6 / reqs, (r1 - r0) * 1e6 / reqs,
       (k1 - k0) / reqs, (m1 - m0) * 1e6 / rows, (v1 - v0) / reqs]
print(f"{label:<10} {conns:>6} {run[0]:>9.0f} {run[1]:>8.3f} {run[2]:>8.3f} {run[3]:>10.1f} {run[4]:>10.1f} "
      f"{run[5]:>10.2f} {run[6]:>11.1f} {run[7]:>8.3f}")
with open(runs_file, "a") as f:
    f.write(json.dumps([label, conns, run]) + "\n")
PY
    stop_relay
    rm -rf "$spool"
    mariadb -uroot -e "DROP DATABASE IF EXISTS \`$db\`" 2>/dev/null || true
  done
done
python3 - "$runs_file" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    label, conns, run = json.loads(line)
    runs.setdefault((label, conns), []).append(run)
print("median (min-max) of each variant's runs:")
names = ["req/s", "p50_ms", "p99_ms", "relay_us", "redis_us", "redis_cmds", "mariadb_us", "vcs"]
for (label, conns), rs in runs.items():
    cols = []
    for i, name in enumerate(names):
        vals = [r[i] for r in rs]
        fmt = ".0f" if i == 0 else ".3f" if name in ("p50_ms", "p99_ms", "vcs") else ".2f" if i == 5 else ".1f"
        cols.append(f"{name} {statistics.median(vals):{fmt}} ({min(vals):{fmt}}-{max(vals):{fmt}})")
    print(f"{label} conns {conns} runs {len(rs)}: " + ", ".join(cols))
PY
