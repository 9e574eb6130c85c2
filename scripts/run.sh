#!/usr/bin/env bash
# The "run" command: bring up Redis and MariaDB, write .env on first use (with a fresh
# ENCRYPTION_KEY), build the release binary, run `init`, then `serve`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
if [ ! -f .env ]; then
  key=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
  sed "s/^ENCRYPTION_KEY=.*/ENCRYPTION_KEY=$key/" config/.env.example > .env
  echo "run: wrote .env with a new ENCRYPTION_KEY (keep it: key hashes and secrets depend on it)"
fi
scripts/services.sh
cargo build --release --locked
target/release/claude-relay init
exec target/release/claude-relay serve
