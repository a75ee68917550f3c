#!/usr/bin/env bash
# Release-profile choices measured (issue 8; docs/benchmarks.md "Footprint"): builds the agent
# natively with the release profile and variants of it, each in its own target directory, and
# reports the stripped size and the warm-invocation time of two example functions through
# `edgefn-agent exec --repeat N` (best of 3 runs; the process start is measured separately and
# subtracted).
#
#   scripts/profile-variants.sh [VARIANT...]     # default: release unwind opt-s opt-2
#
# Variants (CARGO_PROFILE_RELEASE_* overrides of the workspace's [profile.release]):
#   release   as committed: opt-level 3, fat LTO, 1 codegen unit, strip, panic = "abort"
#   unwind    panic = "unwind"
#   opt-s     opt-level = "s"
#   opt-z     opt-level = "z"
#   opt-2     opt-level = 2
#   thin      lto = "thin"
set -euo pipefail
cd "$(dirname "$0")/.."
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(release unwind opt-s opt-2)
n=${REPEAT:-20000}
wasm=examples/target/wasm32-unknown-unknown/release
(cd examples && cargo build --release --target wasm32-unknown-unknown --locked --quiet)

env_of() {
  case "$1" in
    release) echo "" ;;
    unwind) echo "CARGO_PROFILE_RELEASE_PANIC=unwind" ;;
    opt-s) echo "CARGO_PROFILE_RELEASE_OPT_LEVEL=s" ;;
    opt-z) echo "CARGO_PROFILE_RELEASE_OPT_LEVEL=z" ;;
    opt-2) echo "CARGO_PROFILE_RELEASE_OPT_LEVEL=2" ;;
    thin) echo "CARGO_PROFILE_RELEASE_LTO=thin" ;;
    *) echo "unknown variant $1" >&2; exit 2 ;;
  esac
}

best_of_3() {  # prints the fastest wall time in ms of "$@" over 3 runs
  local best=999999999 t0 t1 ms
  for _ in 1 2 3; do
    t0=$(date +%s%N); "$@" >/dev/null 2>&1; t1=$(date +%s%N)
    ms=$(( (t1 - t0) / 1000000 )); [ $ms -lt $best ] && best=$ms
  done
  echo $best
}

printf '| variant | build | stripped size | echo µs/call | celsius µs/call |\n|---|---|---|---|---|\n'
for v in "${variants[@]}"; do
  dir=target/variants/$v
  start=$(date +%s)
  env $(env_of "$v") cargo build --release --locked -p edgefn-agent --target-dir "$dir" --quiet
  secs=$(( $(date +%s) - start ))
  bin=$dir/release/edgefn-agent
  size=$(stat -c %s "$bin")
  base=$(best_of_3 "$bin" exec "$wasm/echo.wasm" --data x)
  echo_ms=$(best_of_3 "$bin" exec "$wasm/echo.wasm" --data x --repeat "$n")
  cel_ms=$(best_of_3 "$bin" exec "$wasm/celsius.wasm" --subject s/t --data '{"seq":1,"ts_us":5,"temp":21.5}' --repeat "$n")
  awk -v v="$v" -v s="$secs" -v sz="$size" -v b="$base" -v e="$echo_ms" -v c="$cel_ms" -v n="$n" 'BEGIN {
    printf "| %s | %d s | %.2f MiB (%d) | %.2f | %.2f |\n", v, s, sz / 1048576, sz, (e - b) * 1000 / n, (c - b) * 1000 / n }'
done
