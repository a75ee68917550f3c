#!/usr/bin/env bash
# Builds the aarch64 and armv7 agents for the Raspberry Pi checks (tests/pi/qemu-smoke.sh,
# tests/pi/deb.sh) with the `ci-arm` profile: optimised, no LTO, 16 codegen units, so both fit the
# test command's time budget (releases use scripts/build-pi.sh and the full release profile).
# One cargo invocation for both targets: build scripts and proc macros are built once.
# Binaries land in $CARGO_TARGET_DIR (default target/), where qemu-smoke.sh and deb.sh look.
# Needs the rustup targets and Debian's cross gcc (tests/run.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
cargo build --locked --profile ci-arm -p edgefn-agent \
  --target aarch64-unknown-linux-gnu --target armv7-unknown-linux-gnueabihf
echo "== ARM agents (ci-arm) built in $(( $(date +%s) - start )) s"
t=${CARGO_TARGET_DIR:-target}
ls -l "$t/aarch64-unknown-linux-gnu/ci-arm/edgefn-agent" "$t/armv7-unknown-linux-gnueabihf/ci-arm/edgefn-agent"
