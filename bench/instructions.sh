#!/usr/bin/env bash
# Instructions per relayed request (hybrid mode), counted by valgrind's callgrind: the same
# count run after run whatever else the machine does, so it shows changes of a few percent
# that wrk cannot (this machine's speed drifts by ±10 % within minutes). User-space only
# (system calls are not counted); background work during the window (counter flushes,
# the archive writer) is included. 8 clients on keep-alive connections send N requests
# after a 5 s warm-up; counters are zeroed before and dumped after.
#
#   bench/instructions.sh                       # this tree's release build, 800 requests
#   RELAY_BIN=/tmp/old-relay N=800 bench/instructions.sh
#   HISTORY=100 bench/instructions.sh           # requests carrying 100 earlier turns (~80 KB)
#   STREAM=1 bench/instructions.sh              # SSE answers (`"stream": true`)
#
# Needs: valgrind, wrk, nginx with the echo module, Redis and MariaDB (scripts/services.sh).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# shellcheck source=bench/lib.sh
source bench/lib.sh
N=${N:-800}
MOCK_DIR=${MOCK_DIR:-$root/../shared/mock-upstream}
MOCK_PREFIX=/tmp/claude-relay-cg-mock
PORT=${BENCH_PORT:-3912}
REDIS_PORT_CG=${BENCH_REDIS_PORT:-6393}
out=$(mktemp -d /tmp/claude-relay-cg.XXXXXX)
command -v valgrind >/dev/null || { echo "bench: valgrind is missing (apt-get install valgrind)"; exit 1; }
scripts/services.sh
if [ -z "${RELAY_BIN:-}" ]; then
  scripts/build-release.sh
fi
bin=${RELAY_BIN:-"${CARGO_TARGET_DIR:-target}/release/claude-relay"}
db="crcg_$$"
cleanup() {
  [ -n "${relay_pid:-}" ] && kill "$relay_pid" 2>/dev/null || true
  "$MOCK_DIR/stop.sh" "$MOCK_PREFIX" >/dev/null 2>&1 || true
  redis-cli -p "$REDIS_PORT_CG" shutdown nosave >/dev/null 2>&1 || true
  mariadb -uroot -e "DROP DATABASE IF EXISTS \`$db\`" 2>/dev/null || true
}
trap cleanup EXIT
start_mock "$MOCK_DIR" "$MOCK_PREFIX"
redis-server --port "$REDIS_PORT_CG" --save '' --appendonly no --daemonize yes --logfile "$out/redis.log" >/dev/null
admin_token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
export DATABASE_TYPE=hybrid MYSQL_DATABASE=$db REDIS_KEY_PREFIX="crcg:$$:" PORT=$PORT HOST=127.0.0.1 \
  REDIS_PORT=$REDIS_PORT_CG ENCRYPTION_KEY=0123456789abcdef0123456789abcdef ADMIN_TOKEN=$admin_token \
  LOG_LEVEL=warn SPOOL_DIR="$out/spool"
valgrind --tool=callgrind --callgrind-out-file="$out/cg.out" "$bin" serve >"$out/relay.log" 2>&1 &
relay_pid=$!
wait_healthy "http://127.0.0.1:$PORT" 1200  # slow under valgrind
key=$(bench_key "http://127.0.0.1:$PORT" "$admin_token" http://127.0.0.1:18080)
API_KEY="$key" MSG_PATH=/api/v1/messages wrk -t2 -c8 -d5s -s "$MOCK_DIR/wrk/messages.lua" "http://127.0.0.1:$PORT" >/dev/null
sleep 1
callgrind_control -z "$relay_pid" >/dev/null
body_len=$(python3 - "$key" "$N" "$PORT" "${HISTORY:-0}" "${STREAM:-0}" <<'PY'
import http.client, json, sys, threading
key, n, port, history = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
stream = sys.argv[5] == "1"
# HISTORY=N: N earlier turns before the question, as a long Claude Code conversation has
# (each turn a user text of about 400 bytes and an assistant answer with a tool call).
turns = []
for i in range(history):
    turns.append({"role": "user", "content": [{"type": "text", "text": f"step {i}: " + "please look at the file and explain it " * 10}]})
    turns.append({"role": "assistant", "content": [
        {"type": "text", "text": "Reading it now. " * 8},
        {"type": "tool_use", "id": f"toolu_{i:04d}", "name": "Read", "input": {"file_path": f"/src/m{i}.rs"}}]})
body = json.dumps({"model": "claude-sonnet-4-20250514", "max_tokens": 64,
                   "messages": turns + [{"role": "user", "content": "hi"}],
                   "metadata": {"user_id": "session-1"}, **({"stream": True} if stream else {})})
def run(k):
    c = http.client.HTTPConnection("127.0.0.1", port)
    for _ in range(k):
        c.request("POST", "/api/v1/messages", body, {"x-api-key": key,
                  "content-type": "application/json", "anthropic-version": "2023-06-01"})
        r = c.getresponse(); r.read()
        if r.status != 200:
            sys.exit(f"relay answered {r.status}")
threads = [threading.Thread(target=run, args=(n // 8,)) for _ in range(8)]
[t.start() for t in threads]; [t.join() for t in threads]
print(len(body))
PY
)
sleep 1
callgrind_control -d "$relay_pid" >/dev/null
sleep 1
dump=$(ls -t "$out"/cg.out.* | head -1); [ -n "${KEEP_DUMP:-}" ] && cp "$dump" "$KEEP_DUMP"
total=$(grep -E '^(summary|totals):' "$dump" | head -1 | awk '{print $2}')
echo "$(basename "$bin"): $((N / 8 * 8)) requests of $body_len bytes, $((total / (N / 8 * 8))) instructions per request"
