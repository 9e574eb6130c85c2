#!/usr/bin/env bash
# The "test" command: bring up Redis and MariaDB, then run the whole test suite against them.
# Extra arguments go to the test runner (e.g. a test name filter).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/services.sh
# The console's browser tests drive Debian's chromium through chromedriver.
scripts/browser.sh
# The OpenAI SDK test (tests/sdk/) runs the official `openai` Python package from a
# virtual environment of its own; create it when missing.
venv=.local/venv
if ! "$venv/bin/python" -c 'import openai' >/dev/null 2>&1; then
  echo "creating $venv with the openai Python SDK (for tests/sdk/)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check openai
fi
# Tests run in parallel, each with its own relay and pool: make room if we may (best effort).
client=$(command -v mariadb || command -v mysql || true)
if [ -n "$client" ]; then
  MYSQL_PWD="${MYSQL_PASSWORD:-}" "$client" --protocol=TCP -h "${MYSQL_HOST:-127.0.0.1}" -P "${MYSQL_PORT:-3306}" \
    -u "${MYSQL_USER:-root}" -e "SET GLOBAL max_connections = GREATEST(@@max_connections, 1000)" 2>/dev/null || true
fi
if cargo nextest --version >/dev/null 2>&1; then
  exec cargo nextest run --locked --no-fail-fast "$@"
else
  exec cargo test --locked --no-fail-fast "$@"
fi
