#!/usr/bin/env bash
# Builds the aarch64 and armv7 agents for the Raspberry Pi checks (tests/pi/qemu-smoke.sh,
# tests/pi/deb.sh) with the `ci-arm` profile: optimised, no LTO, 16 codegen units, so both fit the
# test command's time budget (releases use scripts/build-pi.sh and the full release profile).
# One cargo invocation for both targets: build scripts and proc macros are built once.
# Needs the rustup targets and Debian's cross gcc (tests/run.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/../.."
start=$(date +%s)
cargo build --locked --profile ci-arm -p edgefn-agent \
  --target aarch64-unknown-linux-gnu --target armv7-unknown-linux-gnueabihf
echo "== ARM agents (ci-arm) built in $(( $(date +%s) - start )) s"
ls -l target/aarch64-unknown-linux-gnu/ci-arm/edgefn-agent target/armv7-unknown-linux-gnueabihf/ci-arm/edgefn-agent
