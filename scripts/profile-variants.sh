#!/usr/bin/env bash
# Release-profile choices measured (issue 8; docs/benchmarks.md "Footprint"): builds the agent
# natively with the release profile and variants of it, then reports each one's stripped size and
# the warm-invocation time of two example functions through `edgefn-agent exec --repeat N`
# (median of ROUNDS runs, the variants interleaved round by round so they share the machine's
# load; the process start, `exec` with one call, is measured the same way and subtracted).
#
#   scripts/profile-variants.sh [VARIANT...]     # default: release deps-s opt-s unwind
#   NO_BUILD=1 scripts/profile-variants.sh ...   # only measure the binaries built before
#
# All variants build in one target directory (cargo keeps each profile's artifacts apart, so a
# variant rebuilds only what its settings change); each binary is copied to
# target/variants/edgefn-agent-VARIANT. Run it under `nice -n 19` on a shared machine.
#
# Variants (`cargo --config` overrides of the workspace's [profile.release]):
#   release   as committed
#   o3        opt-level 3 everywhere (the profile before issue 8's size work)
#   unwind    panic = "unwind"
#   opt-s     opt-level = "s" everywhere
#   opt-z     opt-level = "z" everywhere
#   opt-2     opt-level = 2 everywhere
#   deps-s    dependencies at "s", except wasmi and its parts at 3 (the agent crate, where
#             wasmi's executor is monomorphised, keeps the profile's level)
#   thin      lto = "thin"
set -euo pipefail
cd "$(dirname "$0")/.."
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(release deps-s opt-s unwind)
n=${REPEAT:-20000}
rounds=${ROUNDS:-5}
features=${FEATURES:-}
wasm=examples/target/wasm32-unknown-unknown/release
out=target/variants
mkdir -p "$out"
(cd examples && cargo build --release --target wasm32-unknown-unknown --locked --quiet)

wasmi_at() {  # --config arguments putting wasmi's crates at opt-level $1
  for p in wasmi wasmi_core wasmi_ir wasmi_collections; do
    printf -- "--config\nprofile.release.package.%s.opt-level=%s\n" "$p" "$1"
  done
}

config_of() {  # one cargo argument per line
  case "$1" in
    release) ;;
    o3) printf -- "--config\nprofile.release.opt-level=3\n--config\nprofile.release.package.\"*\".opt-level=3\n"
        wasmi_at 3 ;;
    unwind) printf -- "--config\nprofile.release.panic=\"unwind\"\n" ;;
    opt-s|opt-z|opt-2)
      l=${1#opt-}; [ "$l" = 2 ] || l="\"$l\""
      printf -- "--config\nprofile.release.opt-level=%s\n--config\nprofile.release.package.\"*\".opt-level=%s\n" "$l" "$l"
      wasmi_at "$l" ;;
    deps-s) printf -- "--config\nprofile.release.opt-level=3\n--config\nprofile.release.package.\"*\".opt-level=\"s\"\n"
            wasmi_at 3 ;;
    thin) printf -- "--config\nprofile.release.lto=\"thin\"\n" ;;
    *) echo "unknown variant $1" >&2; exit 2 ;;
  esac
}

declare -A secs
if [ -z "${NO_BUILD:-}" ]; then
  for v in "${variants[@]}"; do
    mapfile -t cfg < <(config_of "$v")
    start=$(date +%s)
    cargo build --release --locked -p edgefn-agent $features ${cfg[@]+"${cfg[@]}"} --quiet
    secs[$v]=$(( $(date +%s) - start ))
    cp target/release/edgefn-agent "$out/edgefn-agent-$v"
  done
fi

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
ns() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null 2>&1; t1=$(date +%s%N); echo $(( t1 - t0 )); }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for _ in $(seq "$rounds"); do
  for v in "${variants[@]}"; do
    bin=$out/edgefn-agent-$v
    ns "$bin" exec "$wasm/echo.wasm" --data x >>"$tmp/$v.base"
    ns "$bin" exec "$wasm/echo.wasm" --data x --repeat "$n" >>"$tmp/$v.echo"
    ns "$bin" exec "$wasm/celsius.wasm" --subject s/t --data '{"seq":1,"ts_us":5,"temp":21.5}' \
      --repeat "$n" >>"$tmp/$v.celsius"
  done
done

echo "median of $rounds rounds, $n calls per run; $(uptime | sed 's/.*load/load/')"
printf '| variant | build | stripped size | echo µs/call | celsius µs/call |\n|---|---|---|---|---|\n'
for v in "${variants[@]}"; do
  bin=$out/edgefn-agent-$v
  size=$(stat -c %s "$bin")
  b=$(median <"$tmp/$v.base"); e=$(median <"$tmp/$v.echo"); c=$(median <"$tmp/$v.celsius")
  awk -v v="$v" -v s="${secs[$v]:-}" -v sz="$size" -v b="$b" -v e="$e" -v c="$c" -v n="$n" 'BEGIN {
    printf "| %s | %s | %.2f MiB (%d) | %.3f | %.3f |\n", v, (s == "" ? "-" : s " s"), sz / 1048576, sz,
      (e - b) / 1000 / n, (c - b) / 1000 / n }'
done
