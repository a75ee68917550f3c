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
#include "edgefn.h"

/* The incoming event (reused across invocations) and scratch space for the response. */
static edgefn_region events, scratch;

EDGEFN_EXPORT("edgefn_alloc") int32_t edgefn_alloc(int32_t size) {
    if (size < 0) return 0;
    return (int32_t)(uintptr_t)edgefn_region_reserve(&events, (uint32_t)size);
}

/* Writes `v` in decimal at `out`, returns the number of digits. */
static uint32_t format_u64(uint64_t v, uint8_t *out) {
    uint8_t tmp[20];
    uint32_t n = 0;
    do {
        tmp[n++] = (uint8_t)('0' + v % 10);
        v /= 10;
    } while (v);
    for (uint32_t i = 0; i < n; i++) out[i] = tmp[n - 1 - i];
    return n;
}

static int32_t fail(const char *message) {
    edgefn_respond_str(message);
    return 1;
}

EDGEFN_EXPORT("edgefn_handle") int32_t edgefn_handle(const uint8_t *ptr, int32_t len) {
    edgefn_event ev;
    if (len < 0 || edgefn_decode_event(ptr, (uint32_t)len, &ev) != 0)
        return fail("{{name}}: malformed event");

    /* Log the subject: "{{name}}: event from <subject>". */
    static const char prefix[] = "{{name}}: event from ";
    uint32_t line_len = sizeof prefix - 1 + ev.subject.len;
    uint8_t *line = edgefn_region_reserve(&scratch, line_len);
    if (!line) return fail("{{name}}: out of memory");
    __builtin_memcpy(line, prefix, sizeof prefix - 1);
    __builtin_memcpy(line + sizeof prefix - 1, ev.subject.ptr, ev.subject.len);
    edgefn_log(EDGEFN_INFO, line, (int32_t)line_len);

    /* hits += 1 (kv writes are committed only if this invocation succeeds). */
    static const char key[] = "hits";
    uint8_t raw[8] = {0};
    uint64_t hits = 0;
    int32_t n = edgefn_kv_get(key, sizeof key - 1, raw, sizeof raw);
    if (n == sizeof raw) {
        for (int i = 7; i >= 0; i--) hits = hits << 8 | raw[i];
    } else if (n != EDGEFN_NOT_FOUND) {
        return fail("{{name}}: kv value `hits` is not a u64");
    }
    hits++;
    for (int i = 0; i < 8; i++) raw[i] = (uint8_t)(hits >> (8 * i));
    if (edgefn_kv_set(key, sizeof key - 1, raw, sizeof raw) != EDGEFN_OK)
        return fail("{{name}}: kv_set refused");

    /* Response: "hello <subject> #<hits>: <data>". */
    uint32_t cap = 6 + ev.subject.len + 2 + 20 + 2 + ev.data.len;
    uint8_t *out = edgefn_region_reserve(&scratch, cap);
    if (!out) return fail("{{name}}: out of memory");
    uint32_t w = 0;
    __builtin_memcpy(out + w, "hello ", 6), w += 6;
    __builtin_memcpy(out + w, ev.subject.ptr, ev.subject.len), w += ev.subject.len;
    __builtin_memcpy(out + w, " #", 2), w += 2;
    w += format_u64(hits, out + w);
    __builtin_memcpy(out + w, ": ", 2), w += 2;
    __builtin_memcpy(out + w, ev.data.ptr, ev.data.len), w += ev.data.len;
    edgefn_respond(out, (int32_t)w);
    return 0;
}
