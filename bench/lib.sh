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
