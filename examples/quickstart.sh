#!/usr/bin/env bash
# Quickstart: build the agent and the example functions, run one locally with `exec`, then start
# an agent on embedded defaults (SQLite store in a temp dir, the in-process MQTT broker, admin API
# and HTTP trigger on free loopback ports), walk a function through its lifecycle (create,
# publish, update, publish, a 90/10 canary alias, invoke, logs, stats), and map functions to an
# HTTP route, an MQTT topic and a schedule and watch them fire. Needs nothing installed but Rust.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown

echo "== building the agent (release) and the example functions (wasm32)"
cargo build --release -p edgefn-agent --locked
(cd examples && cargo build --release --target wasm32-unknown-unknown --locked)
agent=$PWD/target/release/edgefn-agent
wasm=$PWD/examples/target/wasm32-unknown-unknown/release

echo; echo "== exec: run a module once, no agent needed"
$agent exec "$wasm/celsius.wasm" --subject sensors/pi-7/temp --data '{"seq":1,"ts_us":5,"temp":21.5}'; echo
$agent exec "$wasm/misbehave.wasm" --data loop --fuel 5000000 || echo "(an infinite loop stopped by its fuel limit: exit code $?)"

echo; echo "== run: start an agent"
data=$(mktemp -d)
$agent run --data-dir "$data" --api 127.0.0.1:0 --http 127.0.0.1:0 --mqtt embedded 2> "$data/agent.log" &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$data"' EXIT
for _ in $(seq 100); do grep -q "ready" "$data/agent.log" 2>/dev/null && break; sleep 0.1; done
cat "$data/agent.log"
export EDGEFN_AGENT=$(grep -o 'admin API http://[0-9.:]*' "$data/agent.log" | cut -d' ' -f3) EDGEFN_DATA_DIR=$data
trigger=$(grep -o 'HTTP trigger http://[0-9.:]*' "$data/agent.log" | cut -d' ' -f3)
say() { printf '\n$ edgefn-agent %s\n' "$*"; "$agent" "$@"; }
say function create alert --module "$wasm/threshold_alert.wasm" --spec examples/specs/threshold-alert.toml
say function publish alert --description "first release"
say invoke alert --data '{"value": 42}'; echo
say function update alert --module "$wasm/threshold_alert.wasm" --spec <(sed 's/threshold = 30/threshold = 50/' examples/specs/threshold-alert.toml)
say function publish alert --description "higher threshold"
say alias set alert prod 1 --also 2 --weight 0.1
say alias list alert
echo; echo "(20 more invocations of alert:prod)"
for i in $(seq 20); do "$agent" invoke alert:prod --data '{"value": 42}' >/dev/null; done
say invoke alert:prod --data '{"value": 42}' --log-tail; echo
say function list
say logs alert --level warn --since 1m
say stats alert --qualifier prod --series 1m

echo; echo "== triggers: an HTTP route, an MQTT topic and a schedule"
say function create celsius --module "$wasm/celsius.wasm"
say function create counter --module "$wasm/counter.wasm"
say function create echo --module "$wasm/echo.wasm"
# POST /celsius runs celsius; it publishes each converted reading to bench/out/<last topic level>.
say mapping create --function celsius --http /celsius --name to-fahrenheit
# Every message on bench/out/# runs counter (the MQTT trigger, through the embedded broker).
say mapping create --function counter --mqtt 'bench/out/#' --qos 1 --name count-readings
# And a schedule: echo every 2 seconds.
say mapping create --function echo --every 2s --name heartbeat
say mapping list
sleep 1   # mappings take effect within ~200 ms; give the MQTT subscription a moment
echo
for t in 18.5 19.0 21.5; do
  body="{\"seq\":1,\"ts_us\":0,\"temp\":$t}"
  if command -v curl >/dev/null; then
    printf '$ curl -X POST %s/celsius -d %s\n' "$trigger" "$body"
    curl -s -X POST "$trigger/celsius" -d "$body"; echo
  else
    # No curl: a direct invocation publishes the same way.
    say invoke celsius --data "$body"; echo
  fi
done
sleep 5
say stats counter --window 5m
say stats echo --window 5m
echo; echo "(counter ran once per converted reading, over MQTT; echo once per heartbeat)"
