#!/usr/bin/env bash
# Makes sure Redis and MariaDB answer on the configured ports (REDIS_HOST/REDIS_PORT,
# MYSQL_HOST/MYSQL_PORT/MYSQL_USER/MYSQL_PASSWORD, read from the environment or ./.env):
#   1. use the ones already answering;
#   2. else start private instances with their data under .local/ (DATA_DIR to change);
#   3. else install them from the OS packages (apt-get) first.
# Idempotent; prints what it did. Source-free: run it as `scripts/services.sh`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if [ -f "$root/.env" ]; then
  # Only the variables this script needs, without executing the file.
  while IFS='=' read -r k v; do
    case "$k" in REDIS_HOST|REDIS_PORT|REDIS_PASSWORD|MYSQL_HOST|MYSQL_PORT|MYSQL_USER|MYSQL_PASSWORD)
      [ -z "${!k:-}" ] && export "$k=${v%\"}" ;; esac
  done < <(grep -E '^[A-Z_]+=' "$root/.env" || true)
fi
REDIS_HOST=${REDIS_HOST:-127.0.0.1}; REDIS_PORT=${REDIS_PORT:-6379}
MYSQL_HOST=${MYSQL_HOST:-127.0.0.1}; MYSQL_PORT=${MYSQL_PORT:-3306}
MYSQL_USER=${MYSQL_USER:-root}; MYSQL_PASSWORD=${MYSQL_PASSWORD:-}
data=${DATA_DIR:-$root/.local}
sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"

log() { echo "services: $*"; }

redis_ping() {
  # RESP over bash's /dev/tcp, so no redis-cli is needed to decide.
  local reply
  { exec 3<>"/dev/tcp/$REDIS_HOST/$REDIS_PORT"; } 2>/dev/null || return 1
  if [ -n "${REDIS_PASSWORD:-}" ]; then printf 'AUTH %s\r\n' "$REDIS_PASSWORD" >&3; read -r -t 2 reply <&3 || true; fi
  printf 'PING\r\n' >&3
  read -r -t 2 reply <&3 || reply=""
  exec 3>&- 3<&-
  [[ "$reply" == +PONG* ]]
}

mysql_client() { command -v mariadb || command -v mysql || true; }

mysql_ok() {
  { exec 3<>"/dev/tcp/$MYSQL_HOST/$MYSQL_PORT"; } 2>/dev/null || return 1
  exec 3>&- 3<&-
  local client; client=$(mysql_client)
  [ -z "$client" ] && return 0   # port answers; no client to check the login with
  MYSQL_PWD="$MYSQL_PASSWORD" "$client" --protocol=TCP -h "$MYSQL_HOST" -P "$MYSQL_PORT" -u "$MYSQL_USER" -e 'SELECT 1' >/dev/null 2>&1
}

apt_install() {
  command -v apt-get >/dev/null || { log "cannot install $*: no apt-get; install them yourself"; exit 1; }
  log "installing $* from the OS packages"
  # Inside containers policy-rc.d keeps the packages from starting services; we start our own.
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$@" >/dev/null
}

wait_for() { # name, check function
  for _ in $(seq 1 100); do "$2" && return 0; sleep 0.2; done
  log "$1 did not come up; see $data/$1/*.log"; exit 1
}

ensure_redis() {
  if redis_ping; then log "redis answering on $REDIS_HOST:$REDIS_PORT"; return; fi
  command -v redis-server >/dev/null || apt_install redis-server
  mkdir -p "$data/redis"
  log "starting a private redis on port $REDIS_PORT (data in $data/redis)"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$data/redis" --logfile "$data/redis/redis.log" --pidfile "$data/redis/redis.pid" \
    ${REDIS_PASSWORD:+--requirepass "$REDIS_PASSWORD"}
  wait_for redis redis_ping
}

ensure_mysql() {
  if mysql_ok; then log "mysql answering on $MYSQL_HOST:$MYSQL_PORT"; return; fi
  if { exec 4<>"/dev/tcp/$MYSQL_HOST/$MYSQL_PORT"; } 2>/dev/null; then
    exec 4>&- 4<&-
    log "something answers on $MYSQL_HOST:$MYSQL_PORT but refuses user $MYSQL_USER; fix MYSQL_USER/MYSQL_PASSWORD"; exit 1
  fi
  command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || apt_install mariadb-server mariadb-client
  local mariadbd; mariadbd=$(command -v mariadbd || echo /usr/sbin/mariadbd)
  local dir="$data/mysql" run_as=()
  mkdir -p "$dir"
  if [ "$(id -u)" -eq 0 ]; then run_as=(--user=mysql); chown -R mysql:mysql "$dir"; fi
  if [ ! -d "$dir/db/mysql" ]; then
    log "initialising a private mariadb in $dir/db"
    local installer; installer=$(command -v mariadb-install-db || command -v mysql_install_db)
    "$installer" --datadir="$dir/db" "${run_as[@]}" --auth-root-authentication-method=normal \
      --skip-test-db >"$dir/install.log" 2>&1
  fi
  log "starting a private mariadb on port $MYSQL_PORT (data in $dir/db)"
  nohup "$mariadbd" --no-defaults --datadir="$dir/db" "${run_as[@]}" --port="$MYSQL_PORT" \
    --bind-address=127.0.0.1 --socket="$dir/mysqld.sock" --pid-file="$dir/mysqld.pid" \
    --log-error="$dir/mysqld.log" >/dev/null 2>&1 &
  wait_for mysql mysql_ok
}

ensure_redis
ensure_mysql
