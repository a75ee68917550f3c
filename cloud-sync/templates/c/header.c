/*
 * {{name}}.c - an edgefn function in C, without libc, using edgefn.h (guest ABI v1; a copy
 * written by `edgefn new`).
 *
 * Decodes the event, logs its subject, counts invocations in kv key "hits" (a little-endian
 * u64, the same format as the Rust SDK's kv::set_u64) and responds
 *
 *     hello <subject> #<hits>: <data>
 *
 * Build and check:   edgefn build            (clang + wasm-ld -> target/{{name}}.wasm)
 * Ship:              edgefn function create {{name}} --module .
 */
