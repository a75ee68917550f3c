#!/usr/bin/env bash
# The one test command (README, .ci/run). Sets up what a fresh Debian machine lacks (the wasm32
# and ARM targets, clang/lld, openssl, Debian's ARM cross gcc, qemu-user, Mosquitto and its
# clients, started if nothing listens on 127.0.0.1:1883; the local PostgreSQL cluster, started if
# it is down), then runs every test of the workspace and the Raspberry Pi checks (tests/pi/: ARM
# agents under qemu-user, the Debian packages). Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# wasm32 target: the example functions are built by the tests themselves. ARM targets: the
# Raspberry Pi agents (tests/pi/).
for t in wasm32-unknown-unknown aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf; do
  if ! rustup target list --installed 2>/dev/null | grep -qx $t; then
    echo "== rustup target add $t"
    rustup target add $t
  fi
done

# clang + wasm-ld: the C example function is compiled by the tests.
missing=()
command -v clang >/dev/null 2>&1 || missing+=(clang)
command -v wasm-ld >/dev/null 2>&1 || missing+=(lld)
# Mosquitto: the MQTT trigger tests run against a real broker at 127.0.0.1:1883 (and start
# private ones to restart them).
command -v mosquitto >/dev/null 2>&1 || missing+=(mosquitto)
# openssl: the cloud's HTTPS test and the agent's mqtts:// test make throwaway CAs with it.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# Raspberry Pi checks: cross linkers (.cargo/config.toml), qemu-user to run the ARM agents,
# Mosquitto's clients and jq to drive and read them, systemd's tools and dpkg for the packages.
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || missing+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
command -v arm-linux-gnueabihf-gcc >/dev/null 2>&1 || missing+=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross)
{ command -v qemu-aarch64 && command -v qemu-arm; } >/dev/null 2>&1 || missing+=(qemu-user)
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
command -v jq >/dev/null 2>&1 || missing+=(jq)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v userdel >/dev/null 2>&1 || missing+=(passwd)
command -v dpkg-deb >/dev/null 2>&1 || missing+=(dpkg)
if [ ${#missing[@]} -gt 0 ]; then
  echo "== apt-get install ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

port_open() { (exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null; }
if ! port_open; then
  echo "== starting mosquitto on 127.0.0.1:1883"
  if [ -f /etc/mosquitto/mosquitto.conf ]; then
    as_root mosquitto -d -c /etc/mosquitto/mosquitto.conf
  else
    as_root mosquitto -d -p 1883
  fi
  for _ in $(seq 50); do port_open && break; sleep 0.1; done
  port_open || { echo "mosquitto did not start on 127.0.0.1:1883" >&2; exit 1; }
fi

# PostgreSQL: the cloud's tests run every store scenario on SQLite and on the local PostgreSQL
# (127.0.0.1:5432, trust auth, database `test`), each test in a schema of its own.
pg_open() { (exec 3<>/dev/tcp/127.0.0.1/5432) 2>/dev/null; }
if ! pg_open && [ -d /etc/postgresql ]; then
  echo "== starting PostgreSQL on 127.0.0.1:5432"
  as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
  for _ in $(seq 100); do pg_open && break; sleep 0.1; done
fi
pg_open || { echo "no PostgreSQL on 127.0.0.1:5432 (the cloud-sync tests need it)" >&2; exit 1; }

# The ARM agents build in the background while the workspace's tests build (the two overlap on
# the machine's cores), and are done before the tests run, so timing-sensitive tests are not
# starved. Output: target/pi-build.log.
mkdir -p target
echo "== building the ARM agents in the background (tests/pi/build.sh > target/pi-build.log)"
tests/pi/build.sh > target/pi-build.log 2>&1 &
pi_build=$!
echo "== cargo test --workspace --no-run"
cargo test --workspace --locked --no-run "$@"
if ! wait $pi_build; then
  cat target/pi-build.log
  echo "building the ARM agents failed" >&2
  exit 1
fi
tail -n 3 target/pi-build.log

echo "== cargo test --workspace"
cargo test --workspace --locked "$@"

echo "== Raspberry Pi: ARM agents under qemu-user (tests/pi/qemu-smoke.sh)"
tests/pi/qemu-smoke.sh
echo "== Raspberry Pi: Debian packages (tests/pi/deb.sh)"
tests/pi/deb.sh
