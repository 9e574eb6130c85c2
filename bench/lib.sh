# Shared by the bench scripts (sourced): waiting for a relay and setting up what it relays.

# Waits until the relay at URL reports healthy, polling every 0.1 s up to TRIES times.
wait_healthy() { # url tries
  for _ in $(seq 1 "$2"); do
    curl -s "$1/health" | grep -q '"status":"healthy"' && return 0
    sleep 0.1
  done
}

# Creates ACCOUNTS console accounts (default 1) that relay to UPSTREAM and a key without
# limits through the admin API of the relay at URL; prints the key. With one account a
# session cannot change the choice, so the relay reads no sticky entry; with two it does.
bench_key() { # url admin_token upstream [accounts]
  local auth=(-H "authorization: Bearer $2" -H 'content-type: application/json')
  for i in $(seq 1 "${4:-1}"); do
    curl -sf "${auth[@]}" -X POST "$1/admin/claude-accounts" \
      -d "{\"name\":\"bench-$i\",\"type\":\"claude-console\",\"baseUrl\":\"$3\",\"apiKey\":\"sk-upstream-test\",\"priority\":10}" >/dev/null
  done
  curl -sf "${auth[@]}" -X POST "$1/admin/api-keys" -d '{"name":"bench"}' \
    | python3 -c 'import sys,json; print(json.load(sys.stdin)["data"]["apiKey"])'
}

# Starts the nginx mock in MOCK_DIR with PREFIX; first checks that its ports (18080-18082)
# are free and names what holds one: an earlier run's mock left running would otherwise end
# the benchmark with nothing but nginx's bind errors.
start_mock() { # mock_dir prefix
  local port holder try
  for port in 18080 18081 18082; do
    # A mock this script just stopped may hold its ports for a moment while it exits.
    for try in $(seq 1 30); do
      (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || break
      sleep 0.1
    done
    if [ "$try" = 30 ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      holder=$(ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'users:(("[^"]*",pid=[0-9]*' | head -1 \
        | sed 's/users:(("//; s/",pid=/ (pid /; s/$/)/' || true)
      echo "bench: port $port of the mock is taken${holder:+ by $holder}; stop it first (a mock of an earlier run: $1/stop.sh <its prefix>)" >&2
      return 1
    fi
  done
  "$1/start.sh" "$2" >/dev/null
}
