#!/usr/bin/env bash
# The release binary as it ships: `cargo build --release`, optimised with the relay's own
# profile (profile-guided optimisation) from `pgo/relay-llvm<N>.profdata.xz` when rustc's
# LLVM is version N. The profile comes from `scripts/build-pgo.sh`, which serves benchmark
# load with an instrumented build; code changed since then is laid out without it (the rest
# keeps it). With another LLVM the build is a plain release build, and says so.
#
#   scripts/build-release.sh          # -> ${CARGO_TARGET_DIR:-target}/release/claude-relay
#   PGO=off scripts/build-release.sh  # a plain release build
#
# Extra arguments go to cargo.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
llvm_major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
profile=pgo/relay-llvm$llvm_major.profdata.xz
target=${CARGO_TARGET_DIR:-$root/target}
case "$target" in /*) ;; *) target=$root/$target ;; esac
if [ "${PGO:-on}" = off ]; then
  echo "build-release: plain release build (PGO=off)"
elif [ -f "$profile" ] && ! command -v xz >/dev/null; then
  echo "build-release: xz is missing (apt-get install xz-utils): a plain release build, without $profile" >&2
elif [ -f "$profile" ]; then
  # Named by its content: a new profile changes RUSTFLAGS, which makes cargo rebuild.
  digest=$(sha256sum "$profile" | cut -c1-16)
  unpacked=$target/pgo-profiles/$digest.profdata
  if [ ! -f "$unpacked" ]; then
    mkdir -p "$(dirname "$unpacked")"
    xz -dc "$profile" > "$unpacked.tmp"
    mv "$unpacked.tmp" "$unpacked"
  fi
  export RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }-Cprofile-use=$unpacked"
  echo "build-release: optimised with the relay's profile ($profile)"
else
  have=$(cd pgo 2>/dev/null && ls relay-llvm*.profdata.xz 2>/dev/null | tr '\n' ' ')
  echo "build-release: no profile for rustc's LLVM $llvm_major (pgo/ has: ${have:-none}): a plain release build; scripts/build-pgo.sh makes one" >&2
fi
exec cargo build --release --locked --bin claude-relay "$@"
