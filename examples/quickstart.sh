#!/usr/bin/env bash
# Quickstart: build the agent and the example functions, then run some with `edgefn-agent exec`.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown

echo "== building the agent (release) and the example functions (wasm32)"
cargo build --release -p edgefn-agent --locked
(cd examples && cargo build --release --target wasm32-unknown-unknown --locked)
agent=target/release/edgefn-agent
wasm=examples/target/wasm32-unknown-unknown/release

echo; echo "== echo"
$agent exec $wasm/echo.wasm --data 'hello, edge'; echo
echo; echo "== celsius: a sensor reading in, a converted reading published and returned"
$agent exec $wasm/celsius.wasm --subject sensors/pi-7/temp --data '{"seq":1,"ts_us":5,"temp":21.5}'; echo
echo; echo "== counter: state kept in a kv file between runs"
kv=$(mktemp -d)/counter.json
for _ in 1 2 3; do $agent exec $wasm/counter.wasm --kv "$kv"; echo; done
echo; echo "== misbehave: an infinite loop is stopped by the fuel limit (exit code 1)"
$agent exec $wasm/misbehave.wasm --data loop --fuel 5000000 || echo "(exit code $?)"
