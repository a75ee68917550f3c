#!/usr/bin/env bash
# Release agents for Raspberry Pi, without Docker: rustup targets + Debian's cross gcc as linkers
# (.cargo/config.toml), the real release profile (fat LTO, one codegen unit, stripped, panic=abort),
# and a .deb per architecture.
#
#   scripts/build-pi.sh                    # aarch64 + armv7 agents and their .debs
#   scripts/build-pi.sh --with-amd64       # also the x86_64 agent and its .deb
#   scripts/build-pi.sh --no-deb           # binaries only
#   CARGO_FEATURES="--no-default-features --features http-trigger" scripts/build-pi.sh   # slimmer agent
#
# Output: target/<triple>/release/edgefn-agent ($CARGO_TARGET_DIR/... when set) and target/deb/edgefn-agent_<version>_<arch>.deb.
# On a fresh Debian/Ubuntu machine it installs what it needs (needs root or sudo for apt-get).
set -euo pipefail
cd "$(dirname "$0")/.."

with_amd64=0 deb=1
for a in "$@"; do
  case "$a" in
    --with-amd64) with_amd64=1 ;;
    --no-deb) deb=0 ;;
    *) echo "usage: $0 [--with-amd64] [--no-deb]" >&2; exit 2 ;;
  esac
done

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || missing+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v arm-linux-gnueabihf-gcc >/dev/null 2>&1 || missing+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
command -v dpkg-deb >/dev/null 2>&1 || missing+=(dpkg)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== apt-get install ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
targets=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf)
for t in "${targets[@]}"; do
  rustup target list --installed | grep -qx "$t" || rustup target add "$t"
done
[ $with_amd64 = 1 ] && targets+=(x86_64-unknown-linux-gnu)

target_args=()
for t in "${targets[@]}"; do target_args+=(--target "$t"); done
# The Pi targets leave out Rust's unwind tables (.cargo/config.toml); the amd64 package gets the
# same here (not in the config file, where it would also rebuild every native test build).
[ $with_amd64 = 1 ] && target_args+=(--config 'target.x86_64-unknown-linux-gnu.rustflags=["-C", "force-unwind-tables=no"]')
echo "== cargo build --release -p edgefn-agent ${target_args[*]} ${CARGO_FEATURES:-}"
start=$(date +%s)
# One cargo invocation for every target: build scripts and proc macros are built once.
# shellcheck disable=SC2086
cargo build --release --locked -p edgefn-agent "${target_args[@]}" ${CARGO_FEATURES:-}
echo "== built in $(( $(date +%s) - start )) s"

for t in "${targets[@]}"; do
  bin=${CARGO_TARGET_DIR:-target}/$t/release/edgefn-agent
  printf '%-34s %9d bytes  %s\n' "$t" "$(stat -c %s "$bin")" "$bin"
done

if [ $deb = 1 ]; then
  arch_of() { case "$1" in aarch64-*) echo arm64 ;; armv7-*) echo armhf ;; x86_64-*) echo amd64 ;; esac; }
  for t in "${targets[@]}"; do
    packaging/deb/build-deb.sh --arch "$(arch_of "$t")" --binary "${CARGO_TARGET_DIR:-target}/$t/release/edgefn-agent"
  done
fi
