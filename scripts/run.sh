#!/usr/bin/env bash
# The "run" command: bring up Redis and MariaDB, write .env on first use (with a fresh
# ENCRYPTION_KEY), build the release binary (scripts/build-release.sh: optimised with the
# relay's own profile), run `init`, then `serve`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if [ ! -f .env ]; then
  key=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
  sed "s/^ENCRYPTION_KEY=.*/ENCRYPTION_KEY=$key/" config/.env.example > .env
  echo "run: wrote .env with a new ENCRYPTION_KEY (keep it: key hashes and secrets depend on it)"
fi
scripts/services.sh
scripts/build-release.sh
bin=${CARGO_TARGET_DIR:-target}/release/claude-relay
"$bin" init
exec "$bin" serve
