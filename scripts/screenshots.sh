#!/usr/bin/env bash
# Refreshes docs/screenshots/*.png (dashboard, keys list, key holder's page, a connected
# subscription): runs the console's operator and subscription browser tests, which save them
# when SCREENSHOTS_DIR is set.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/services.sh
scripts/browser.sh
export SCREENSHOTS_DIR="$root/docs/screenshots"
mkdir -p "$SCREENSHOTS_DIR"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --locked -E 'test(an_operator_runs_the_relay_from_the_console) | test(a_subscription_is_connected_from_the_accounts_page)'
else
  cargo test --locked --test it an_operator_runs_the_relay_from_the_console
  cargo test --locked --test it a_subscription_is_connected_from_the_accounts_page
fi
ls -l "$SCREENSHOTS_DIR"
