#!/usr/bin/env bash
# Scale-out benchmark (issue 16): 1, 2 and 3 release relays in hybrid mode against the same
# Redis (a private redis-server) and MariaDB, the same total number of client connections
# spread evenly over the instances (one wrk per instance, run at once), non-streaming. Per run
# it reads, before and after, the CPU time of every relay, of Redis and of MariaDB, and the
# Redis commands, so the table shows where the machine's time goes and whether the shared
# backends are near saturation (a backend at 100 % of a core is the bottleneck).
# Writes bench/results/instances.md (table) and instances.raw.txt.
#
#   bench/instances.sh                          # 1 2 3 instances, 16 and 48 connections, 10 s
#   INSTANCES="1 3" CONNS=48 DURATION=5 bench/instances.sh
#
# Needs what bench/relay.sh needs (wrk, nginx with the echo module, the shared mock).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=bench/lib.sh
source bench/lib.sh
INSTANCES=${INSTANCES:-"1 2 3"}
CONNS=${CONNS:-"16 48"}
DURATION=${DURATION:-10}
MOCK_DIR=${MOCK_DIR:-$root/../shared/mock-upstream}
MOCK_PREFIX=${MOCK_PREFIX:-/tmp/claude-relay-bench-mock}
BASE_PORT=${BENCH_PORT:-3911}
REDIS_PORT_BENCH=${BENCH_REDIS_PORT:-6392}
out=${BENCH_OUT:-bench/results}
mkdir -p "$out"
raw="$out/instances.raw.txt"
: > "$raw"

command -v wrk >/dev/null || { echo "bench: wrk is missing (apt-get install wrk)"; exit 1; }
[ -f "$MOCK_DIR/nginx.conf" ] || { echo "bench: mock upstream not found in $MOCK_DIR"; exit 1; }
scripts/services.sh
if [ -z "${RELAY_BIN:-}" ]; then
  scripts/build-release.sh
fi
bin=${RELAY_BIN:-"${CARGO_TARGET_DIR:-target}/release/claude-relay"}
wrk_dir="$MOCK_DIR/wrk"
pids=()
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  "$MOCK_DIR/stop.sh" "$MOCK_PREFIX" >/dev/null 2>&1 || true
  redis-cli -p "$REDIS_PORT_BENCH" shutdown nosave >/dev/null 2>&1 || true
}
trap cleanup EXIT
"$MOCK_DIR/stop.sh" "$MOCK_PREFIX" >/dev/null 2>&1 || true
start_mock "$MOCK_DIR" "$MOCK_PREFIX"
redis-server --port "$REDIS_PORT_BENCH" --save '' --appendonly no --daemonize yes \
  --pidfile "/tmp/crbench-redis-$REDIS_PORT_BENCH.pid" --logfile /tmp/crbench-instances-redis.log >/dev/null
for _ in $(seq 1 50); do redis-cli -p "$REDIS_PORT_BENCH" ping >/dev/null 2>&1 && break; sleep 0.1; done

tck=$(getconf CLK_TCK)
mariadb_pid=$(pgrep -x mariadbd || pgrep -x mysqld || true)
cpu_of() { awk -v t="$tck" '{printf "%.3f", ($14 + $15) / t}' "/proc/$1/stat"; }
redis_cpu() { redis-cli -p "$REDIS_PORT_BENCH" INFO cpu | tr -d '\r' | awk -F: '/^used_cpu_(user|sys):/ {s += $2} END {printf "%.3f", s}'; }
redis_cmds() { redis-cli -p "$REDIS_PORT_BENCH" INFO commandstats | tr -d '\r' | sed -n 's/^cmdstat_[^:]*:calls=\([0-9]*\),.*/\1/p' | awk '{s += $1} END {print s + 0}'; }
relays_cpu() { local s=0; for p in "${pids[@]}"; do s=$(echo "$s + $(cpu_of "$p")" | bc); done; echo "$s"; }
mariadb_cpu() { [ -n "$mariadb_pid" ] && cpu_of "$mariadb_pid" || echo 0; }

# The machine's yardstick: straight to the mock, 16 connections.
echo "DIRECT $(wrk -t2 -c16 -d"${DURATION}s" -s "$wrk_dir/messages.lua" http://127.0.0.1:18080 | grep '^RESULT ' | sed 's/^RESULT //')" | tee -a "$raw"

admin_token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
db="crbench_instances_$$"
export DATABASE_TYPE=hybrid MYSQL_DATABASE=$db REDIS_KEY_PREFIX="crbench:inst:$$:" HOST=127.0.0.1 \
  REDIS_PORT=$REDIS_PORT_BENCH ENCRYPTION_KEY=0123456789abcdef0123456789abcdef \
  ADMIN_TOKEN=$admin_token LOG_LEVEL=warn

start_relays() { # n
  pids=()
  for i in $(seq 1 "$1"); do
    PORT=$((BASE_PORT + i - 1)) USAGE_JOURNAL_DIR="/tmp/crbench-inst-journal-$$-$i" \
      "$bin" serve >"/tmp/crbench-inst-$i.log" 2>&1 &
    pids+=("$!")
  done
  for i in $(seq 1 "$1"); do
    for _ in $(seq 1 200); do
      curl -s "http://127.0.0.1:$((BASE_PORT + i - 1))/health" | grep -q '"status":"healthy"' && break
      sleep 0.1
    done
  done
}

stop_relays() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  pids=()
}

# The key and the account, once (MySQL keeps them for every later run).
start_relays 1
key=$(bench_key "http://127.0.0.1:$BASE_PORT" "$admin_token" http://127.0.0.1:18080)
stop_relays

for n in $INSTANCES; do
  start_relays "$n"
  # Warm-up: connections, key caches, account snapshots.
  warm=()
  for i in $(seq 1 "$n"); do
    API_KEY="$key" MSG_PATH=/api/v1/messages wrk -t1 -c8 -d2s -s "$wrk_dir/messages.lua" \
      "http://127.0.0.1:$((BASE_PORT + i - 1))" >/dev/null &
    warm+=("$!")
  done
  for w in "${warm[@]}"; do wait "$w" || true; done
  for c in $CONNS; do
    per=$(( (c + n - 1) / n ))
    c0=$(relays_cpu); r0=$(redis_cpu); q0=$(redis_cmds); m0=$(mariadb_cpu)
    files=()
    wrks=()
    for i in $(seq 1 "$n"); do
      f=$(mktemp); files+=("$f")
      API_KEY="$key" MSG_PATH=/api/v1/messages wrk -t1 -c"$per" -d"${DURATION}s" --latency \
        -s "$wrk_dir/messages.lua" "http://127.0.0.1:$((BASE_PORT + i - 1))" >"$f" &
      wrks+=("$!")
    done
    for w in "${wrks[@]}"; do wait "$w"; done
    c1=$(relays_cpu); r1=$(redis_cpu); q1=$(redis_cmds); m1=$(mariadb_cpu)
    results=$(for f in "${files[@]}"; do grep '^RESULT ' "$f" | sed 's/^RESULT //'; done | paste -sd' ')
    rm -f "${files[@]}"
    rss=$(for p in "${pids[@]}"; do ps -o rss= -p "$p"; done | awk '{s += $1} END {print s}')
    echo "RUN instances=$n conns=$((per * n)) duration=$DURATION relay_cpu=$(echo "$c1 - $c0" | bc)" \
      "redis_cpu=$(echo "$r1 - $r0" | bc) redis_cmds=$((q1 - q0)) mariadb_cpu=$(echo "$m1 - $m0" | bc)" \
      "rss_kb=$rss results=$results" | tee -a "$raw"
  done
  stop_relays
done
mariadb -uroot -e "DROP DATABASE IF EXISTS \`$db\`" 2>/dev/null || true

python3 - "$raw" "$out/instances.md" <<'EOF'
import json, re, sys
raw, md = sys.argv[1], sys.argv[2]
rows = []
direct = None
for line in open(raw):
    if line.startswith("DIRECT "):
        direct = json.loads(line[len("DIRECT "):])["rps"]
        continue
    if not line.startswith("RUN "):
        continue
    head, results = line.split(" results=", 1)
    f = dict(kv.split("=", 1) for kv in head.split()[1:])
    parts = [json.loads(x) for x in re.findall(r"\{[^}]*\}", results)]
    reqs = sum(p["requests"] for p in parts)
    non2xx = sum(p.get("non2xx", 0) for p in parts)
    d = float(f["duration"])
    us = lambda cpu: 1e6 * float(cpu) / reqs if reqs else 0
    rows.append((int(f["instances"]), int(f["conns"]), reqs / d, non2xx,
                 max(p["p50_ms"] for p in parts), max(p["p99_ms"] for p in parts),
                 us(f["relay_cpu"]), 100 * float(f["relay_cpu"]) / d,
                 us(f["redis_cpu"]), 100 * float(f["redis_cpu"]) / d,
                 int(f["redis_cmds"]) / reqs if reqs else 0,
                 us(f["mariadb_cpu"]), 100 * float(f["mariadb_cpu"]) / d,
                 int(f["rss_kb"]) / 1024))
with open(md, "w") as o:
    o.write("# Scale-out: 1, 2 and 3 relays on one Redis and one MariaDB (`bench/instances.sh`)\n\n")
    o.write("Hybrid mode, non-streaming, `shared/mock-upstream`, the connections spread evenly over the\n")
    o.write("instances (one `wrk -t1` per instance, all at once). CPU µs are per relayed request; CPU %\n")
    o.write("is of one core over the run (the machine has two, shared by wrk, nginx, the relays, Redis\n")
    o.write("and MariaDB).\n\n")
    if direct:
        o.write("Straight to the mock on the same machine in the same run: %.0f req/s (wrk -t2, 16\n" % direct)
        o.write("connections); compare across machines by this figure.\n\n")
    o.write("| instances | conns | req/s | non-2xx | p50 ms (worst) | p99 ms (worst) | relays µs/req | relays CPU % | Redis µs/req | Redis CPU % | Redis cmds/req | MariaDB µs/req | MariaDB CPU % | relays RSS MB |\n")
    o.write("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    for r in rows:
        o.write("| %d | %d | %.0f | %d | %.2f | %.2f | %.0f | %.0f | %.1f | %.0f | %.1f | %.1f | %.0f | %.0f |\n" % r)
print(open(md).read())
EOF
