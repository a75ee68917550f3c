#!/usr/bin/env bash
# The one test command (README, .ci/run). Sets up what a fresh Debian machine lacks (the wasm32
# target, clang/lld, Mosquitto, started if nothing listens on 127.0.0.1:1883; the local
# PostgreSQL cluster, started if it is down), then runs every test of the workspace. Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# wasm32 target: the example functions are built by the tests themselves.
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
  echo "== rustup target add wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

# clang + wasm-ld: the C example function is compiled by the tests.
missing=()
command -v clang >/dev/null 2>&1 || missing+=(clang)
command -v wasm-ld >/dev/null 2>&1 || missing+=(lld)
# Mosquitto: the MQTT trigger tests run against a real broker at 127.0.0.1:1883 (and start
# private ones to restart them).
command -v mosquitto >/dev/null 2>&1 || missing+=(mosquitto)
# openssl: the cloud's HTTPS test makes a throwaway CA and server certificate with it.
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
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

echo "== cargo test --workspace"
cargo test --workspace --locked "$@"
