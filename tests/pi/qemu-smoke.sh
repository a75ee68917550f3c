#!/usr/bin/env bash
# The ARM agents under qemu-user (issue 8): for aarch64 and armv7,
#   1. `exec` runs an example function (celsius) and its response and publish are checked;
#   2. `run` as a daemon against the real Mosquitto at 127.0.0.1:1883 with a schedule-triggered
#      function (counter, every 1 s) and an MQTT-triggered one (celsius, whose publishes are read
#      back from the broker), for a few seconds; the counts, the converted readings and the
#      absence of errors are checked; SIGTERM must stop it cleanly.
#
#   tests/pi/qemu-smoke.sh [BINARY_DIR_PROFILE]    # default profile: ci-arm (tests/pi/build.sh)
#
# Needs the ARM binaries (tests/pi/build.sh), the example functions, qemu-user, Mosquitto and its
# clients; tests/run.sh sets all of that up. Fails (never skips) when something is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
profile=${1:-ci-arm}
wasm=examples/target/wasm32-unknown-unknown/release
broker=127.0.0.1:1883

passed=0 failed=0
ok() { echo "ok   $*"; passed=$((passed + 1)); }
bad() { echo "FAIL $*"; failed=$((failed + 1)); }
die() { echo "FAIL $*" >&2; exit 1; }

for tool in qemu-aarch64 qemu-arm mosquitto_pub mosquitto_sub; do
  command -v $tool >/dev/null || die "$tool is not installed (tests/run.sh installs it)"
done
# The example functions (already built by the workspace's tests; a no-op then).
(cd examples && cargo build --release --target wasm32-unknown-unknown --locked --quiet)
for w in celsius counter; do
  [ -f "$wasm/$w.wasm" ] || die "$wasm/$w.wasm is missing (cd examples && cargo build --release --target wasm32-unknown-unknown)"
done
(exec 3<>/dev/tcp/127.0.0.1/1883) 2>/dev/null || die "no MQTT broker at $broker"

smoke() {
  local triple=$1 qemu=$2 sysroot=$3 machine=$4
  local bin=${CARGO_TARGET_DIR:-target}/$triple/$profile/edgefn-agent
  local tag=${triple%%-*}
  [ -x "$bin" ] || die "$bin is missing (tests/pi/build.sh builds it)"
  echo "== $triple ($bin under $qemu)"
  if readelf -h "$bin" | grep -q "Machine:.*$machine\$"; then ok "$tag: $bin is an $machine ELF"; else bad "$tag: $bin is not an $machine ELF"; fi
  agent() { "$qemu" -L "$sysroot" "$bin" "$@"; }

  # 1. exec
  local out err
  err=$(mktemp)
  out=$(agent exec "$wasm/celsius.wasm" --subject sensors/pi-7/temp --data '{"seq":1,"ts_us":5,"temp":21.5}' 2>"$err") || true
  if [ "$out" = '{"seq":1,"ts_us":5,"temp_f":70.7}' ]; then ok "$tag: exec celsius responds 70.7 F"; else bad "$tag: exec celsius printed '$out' (stderr: $(cat "$err"))"; fi
  if grep -q '^publish bench/out/temp qos=1 bytes=33$' "$err"; then ok "$tag: exec celsius publishes"; else bad "$tag: exec celsius stderr: $(cat "$err")"; fi
  rm -f "$err"
  if agent exec "$wasm/counter.wasm" --data x --repeat 3 | tr '\n' ' ' | grep -qx '1 2 3 '; then ok "$tag: exec counter keeps kv across a warm instance"; else bad "$tag: exec counter --repeat 3"; fi

  # 2. the daemon against Mosquitto
  local dir; dir=$(mktemp -d)
  local unique="pi-smoke-$tag-$$-$RANDOM"
  cat > "$dir/agent.toml" <<EOF
[mqtt]
url = "mqtt://$broker"
client_id = "edgefn-$unique"
session_expiry = "30s"
EOF
  # qemu itself (not a subshell running it) is the background process, so signals reach the agent.
  "$qemu" -L "$sysroot" "$bin" run --config "$dir/agent.toml" --data-dir "$dir/data" \
    --api 127.0.0.1:0 --http off </dev/null >/dev/null 2>"$dir/agent.log" &
  local pid=$!
  local url=''
  for _ in $(seq 600); do
    url=$(grep -o 'admin API http://[0-9.:]*' "$dir/agent.log" 2>/dev/null | cut -d' ' -f3 || true)
    [ -n "$url" ] && break
    kill -0 $pid 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$url" ]; then
    bad "$tag: the agent printed no ready line within 60 s: $(cat "$dir/agent.log")"
    kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"; return
  fi
  ok "$tag: run is ready at $url"
  cli() { agent "$@" --agent "$url" --data-dir "$dir/data"; }
  cli function create counter --module "$wasm/counter.wasm" >/dev/null
  cli function create celsius --module "$wasm/celsius.wasm" >/dev/null
  cli mapping create --function counter --every 1s --name beat >/dev/null
  cli mapping create --function celsius --mqtt "$unique/in/+" --qos 1 --name convert >/dev/null

  # Read celsius's publishes back from the broker; keep publishing readings until its
  # subscription is live (the mapping applies within ~200 ms, slower under qemu).
  mosquitto_sub -h 127.0.0.1 -p 1883 -V mqttv5 -q 1 -t "bench/out/$unique" -C 3 -W 60 >"$dir/out.txt" 2>"$dir/sub.err" &
  local sub=$!
  sleep 0.5
  local seq=0
  for _ in $(seq 120); do
    seq=$((seq + 1))
    mosquitto_pub -h 127.0.0.1 -p 1883 -q 1 -t "$unique/in/$unique" -m "{\"seq\":$seq,\"ts_us\":5,\"temp\":21.5}"
    [ "$(wc -l < "$dir/out.txt")" -ge 3 ] && break
    kill -0 $sub 2>/dev/null || break
    sleep 0.25
  done
  wait $sub 2>/dev/null || true
  local lines; lines=$(wc -l < "$dir/out.txt")
  if [ "$lines" -ge 3 ] && ! grep -vqE '^\{"seq":[0-9]+,"ts_us":5,"temp_f":70\.7\}$' "$dir/out.txt"; then
    ok "$tag: MQTT -> celsius -> MQTT: $lines converted readings (of $seq published)"
  else
    bad "$tag: MQTT-triggered celsius published: '$(cat "$dir/out.txt")' ($(cat "$dir/sub.err"))"
  fi

  # The schedule has been firing since its mapping was created (several seconds ago by now).
  sleep 3
  local count; count=$(cli invoke counter --data x 2>/dev/null || true)
  if [[ "$count" =~ ^[0-9]+$ ]] && [ "$count" -ge 4 ]; then
    ok "$tag: schedule-triggered counter ran $((count - 1)) times"
  else
    bad "$tag: counter after the schedule: '$count'"
  fi
  local stats errors
  stats=$(cli stats --json 2>&1 || true)
  errors=$(jq '.totals.errors' <<<"$stats" 2>/dev/null || echo '?')
  if [ "$errors" = 0 ]; then ok "$tag: no failed invocations"; else bad "$tag: stats: $stats"; fi

  kill -TERM $pid
  local rc=0
  wait $pid || rc=$?
  if [ $rc = 0 ] && grep -q 'shut down' "$dir/agent.log"; then ok "$tag: SIGTERM stops the agent cleanly"; else bad "$tag: exit $rc after SIGTERM: $(tail -n 5 "$dir/agent.log")"; fi
  rm -rf "$dir"
}

smoke aarch64-unknown-linux-gnu qemu-aarch64 /usr/aarch64-linux-gnu AArch64
smoke armv7-unknown-linux-gnueabihf qemu-arm /usr/arm-linux-gnueabihf ARM

echo "qemu-smoke: $passed passed, $failed failed"
[ $failed = 0 ]
