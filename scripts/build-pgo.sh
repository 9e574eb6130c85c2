#!/usr/bin/env bash
# Makes the relay's profile for profile-guided optimisation: an instrumented build serves
# `bench/ab.sh` loads (JSON and SSE answers, hybrid, redis and mysql modes) against the nginx
# mock, LLVM merges what it counted, and the profile is kept, compressed, in
# `pgo/relay-llvm<N>.profdata.xz` (N: the LLVM of rustc; commit it). Then it builds the
# release binary with it (`scripts/build-release.sh`, which every release build goes
# through). Run it again when the hot path has changed much, or for a new toolchain.
#
#   scripts/build-pgo.sh            # about twice a release build, plus a minute of load
#
# Needs what bench/ab.sh needs (wrk, nginx with the echo module, Redis and MariaDB, which
# ab.sh finds or starts) and llvm-profdata of the LLVM that rustc uses: missing tools are
# installed from Debian's packages (wrk, nginx-core, libnginx-mod-http-echo, llvm-N) when
# apt-get can be used.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
llvm_major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
# `need TOOL PACKAGE…`: TOOL (a command, or a file such as an nginx module) is there, or
# its Debian packages are installed when apt-get can be used; otherwise says which.
has() { command -v "$1" >/dev/null || [ -e "$1" ]; }
need() {
  local tool=$1; shift
  has "$tool" && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y "$@" >/dev/null || true
  fi
  has "$tool" || { echo "build-pgo: $tool is missing (apt-get install $*)" >&2; exit 1; }
}
need "llvm-profdata-$llvm_major" "llvm-$llvm_major"
need wrk wrk
need nginx nginx-core
# The mock upstream loads this module (../shared/mock-upstream/nginx.conf).
need /usr/lib/nginx/modules/ngx_http_echo_module.so libnginx-mod-http-echo
profdata=$(command -v "llvm-profdata-$llvm_major")
work=$(mktemp -d /tmp/claude-relay-pgo.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "build-pgo: instrumented build"
RUSTFLAGS="-Cprofile-generate=$work/raw" \
  cargo build --release --locked --bin claude-relay --target-dir target/pgo-generate
instrumented=target/pgo-generate/release/claude-relay
echo "build-pgo: training load"
for mode in hybrid redis mysql; do
  for lua in messages.lua messages_stream.lua; do
    MODE=$mode LUA=$lua ROUNDS=1 DURATION=${PGO_TRAIN_SECONDS:-6} bench/ab.sh "train=$instrumented" >/dev/null
  done
done
# The whole profile, not only the functions that ran (--sparse, a quarter of the size): the
# functions it knows never ran are laid out as cold, and the sparse profile's build ran 5 %
# more instructions per request (bench/results/relay.md, "Stop 36").
"$profdata" merge -o "$work/relay.profdata" "$work/raw"
mkdir -p pgo
rm -f pgo/relay-llvm*.profdata.xz
xz -9e -c "$work/relay.profdata" > "pgo/relay-llvm$llvm_major.profdata.xz"
echo "build-pgo: wrote pgo/relay-llvm$llvm_major.profdata.xz; the optimised build"
scripts/build-release.sh
