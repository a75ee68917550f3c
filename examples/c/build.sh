#!/bin/sh
# Builds hello.c into an edgefn module with clang + wasm-ld (no libc, no WASI).
#   examples/c/build.sh [OUTPUT.wasm]
# Default output: examples/target/wasm32-unknown-unknown/release/hello.wasm (next to the Rust ones).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-"$here/../target/wasm32-unknown-unknown/release/hello.wasm"}
mkdir -p "$(dirname "$out")"
# --stack-first puts the 8 KiB stack at the bottom of memory, so an overflow traps instead of
# overwriting data; -mbulk-memory lowers __builtin_memcpy to memory.copy (there is no memcpy).
"${CC:-clang}" --target=wasm32 -nostdlib -ffreestanding -O2 -mbulk-memory \
    -Wall -Wextra -Werror \
    -I "$here/../../firmware-sdk/c" \
    -Wl,--no-entry -Wl,--stack-first -Wl,-z,stack-size=8192 -Wl,--strip-all \
    -o "$out" "$here/hello.c"
echo "$out"
