/*
 * edgefn.h - the edgefn guest ABI v1 for C (and anything that can include a C header).
 *
 * A function is a core WebAssembly module (wasm32, no WASI). It exports `memory`,
 * `edgefn_alloc`, `edgefn_handle` and optionally `edgefn_init`; it may import any of the
 * host functions declared below (import module "edgefn"). docs/abi.md is the full spec.
 *
 * Build (clang + lld, no libc):
 *
 *   clang --target=wasm32 -nostdlib -ffreestanding -O2 -mbulk-memory \
 *         -I firmware-sdk/c -Wl,--no-entry -Wl,--stack-first -Wl,-z,stack-size=8192 \
 *         -o fn.wasm fn.c
 *
 * -mbulk-memory turns __builtin_memcpy / __builtin_memset into memory.copy / memory.fill
 * (there is no libc to provide memcpy). Exports are marked with EDGEFN_EXPORT below; wasm-ld
 * exports the memory as "memory" by default.
 *
 * Everything here is header-only: the decoder and helpers are static inline.
 */
#ifndef EDGEFN_H
#define EDGEFN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ABI version implemented by this header. */
#define EDGEFN_ABI_VERSION 1

/* ---------------------------------------------------------------------------------------- */
/* Host status codes (negative = refused).                                                   */

#define EDGEFN_OK 0
#define EDGEFN_NOT_FOUND (-1) /* kv_get / config_get: no such key */
#define EDGEFN_DENIED (-2)    /* not permitted (e.g. topic outside the publish permissions) */
#define EDGEFN_TOO_LARGE (-3) /* topic, payload, key or value over its limit */
#define EDGEFN_INVALID (-4)   /* invalid argument (topic not UTF-8 / with wildcards, bad qos, empty key) */
#define EDGEFN_QUOTA (-5)     /* per-invocation or per-function quota exhausted */

/* Log levels of edgefn_log. */
#define EDGEFN_TRACE 0
#define EDGEFN_DEBUG 1
#define EDGEFN_INFO 2
#define EDGEFN_WARN 3
#define EDGEFN_ERROR 4

/* MQTT QoS of edgefn_publish. */
#define EDGEFN_QOS_AT_MOST_ONCE 0
#define EDGEFN_QOS_AT_LEAST_ONCE 1
#define EDGEFN_QOS_EXACTLY_ONCE 2

/* ---------------------------------------------------------------------------------------- */
/* Imports: module "edgefn". Pointers and lengths are offsets into this module's memory.      */

#ifdef __wasm__
#define EDGEFN_IMPORT(name) __attribute__((import_module("edgefn"), import_name(name)))
/* Marks a function as a module export: EDGEFN_EXPORT("edgefn_handle") int32_t f(...) */
#define EDGEFN_EXPORT(name) __attribute__((export_name(name)))
#else
/* Native builds (unit tests of the decoder): plain declarations. */
#define EDGEFN_IMPORT(name)
#define EDGEFN_EXPORT(name)
#endif

/* Logs one line of UTF-8 text at `level` (0 trace .. 4 error). */
EDGEFN_IMPORT("log") void edgefn_log(int32_t level, const void *ptr, int32_t len);

/* Sets the invocation's response bytes (last call wins). When edgefn_handle returns
 * non-zero, the response is the error message. */
EDGEFN_IMPORT("respond") void edgefn_respond(const void *ptr, int32_t len);

/* Publishes `data` to `topic` (UTF-8) with `qos` 0..2. 0 ok, negative = refused.
 * Takes effect only if the invocation succeeds. */
EDGEFN_IMPORT("publish")
int32_t edgefn_publish(const void *topic, int32_t topic_len, const void *data, int32_t data_len,
                       int32_t qos);

/* Reads kv `key` into `out` (capacity `out_cap`). Returns the value's length, or
 * EDGEFN_NOT_FOUND; if the length is greater than out_cap nothing is copied. */
EDGEFN_IMPORT("kv_get")
int32_t edgefn_kv_get(const void *key, int32_t key_len, void *out, int32_t out_cap);

/* Stores kv `key` = `val`. 0 ok, negative on error. Committed with the invocation. */
EDGEFN_IMPORT("kv_set")
int32_t edgefn_kv_set(const void *key, int32_t key_len, const void *val, int32_t val_len);

/* Deletes kv `key` (absent is not an error). 0 ok. Committed with the invocation. */
EDGEFN_IMPORT("kv_delete") int32_t edgefn_kv_delete(const void *key, int32_t key_len);

/* Reads config value `key`: same convention as edgefn_kv_get. */
EDGEFN_IMPORT("config_get")
int32_t edgefn_config_get(const void *key, int32_t key_len, void *out, int32_t out_cap);

/* Wall clock, Unix milliseconds. */
EDGEFN_IMPORT("now_ms") int64_t edgefn_now_ms(void);

/* Monotonic clock, microseconds. */
EDGEFN_IMPORT("monotonic_us") int64_t edgefn_monotonic_us(void);

/* ---------------------------------------------------------------------------------------- */
/* Helpers.                                                                                   */

/* Length of a NUL-terminated string (there is no libc). */
static inline int32_t edgefn_strlen(const char *s) {
    int32_t n = 0;
    while (s[n]) n++;
    return n;
}

/* Logs a NUL-terminated string. */
static inline void edgefn_log_str(int32_t level, const char *text) {
    edgefn_log(level, text, edgefn_strlen(text));
}

/* Responds with a NUL-terminated string. */
static inline void edgefn_respond_str(const char *text) {
    edgefn_respond(text, edgefn_strlen(text));
}

/* A reusable block of memory taken with memory.grow: reserve() returns the same block while
 * it is large enough and grows a new one (whole 64 KiB pages) otherwise. This is how the Rust
 * SDK implements edgefn_alloc: one region for events, so memory stays flat across invocations.
 * A zero-initialised edgefn_region is empty. */
typedef struct {
    uint8_t *ptr;
    uint32_t cap;
} edgefn_region;

#ifdef __wasm__
/* A pointer to `size` writable bytes in `r`, or 0 when memory cannot grow. */
static inline uint8_t *edgefn_region_reserve(edgefn_region *r, uint32_t size) {
    if (r->ptr && size <= r->cap) return r->ptr;
    uint32_t pages = size == 0 ? 1 : (uint32_t)(((uint64_t)size + 65535) / 65536);
    size_t old = __builtin_wasm_memory_grow(0, pages);
    if (old == (size_t)-1) return 0;
    r->ptr = (uint8_t *)(old * 65536);
    r->cap = pages * 65536;
    return r->ptr;
}
#endif

/* ---------------------------------------------------------------------------------------- */
/* The event (ABI v1): postcard encoding, fields in this order:                              */
/*   id: str, source: str, subject: str, time_ms: u64, content_type: str, data: bytes,        */
/*   attempt: u32                                                                             */
/* str/bytes = varint length + bytes; integers = varint (unsigned LEB128).                    */

/* Bytes inside the event buffer (not NUL-terminated). */
typedef struct {
    const uint8_t *ptr;
    uint32_t len;
} edgefn_bytes;

/* A decoded event: every field points into the buffer given to edgefn_decode_event. */
typedef struct {
    edgefn_bytes id;           /* unique event id (dedup key) */
    edgefn_bytes source;       /* "mqtt" | "schedule" | "http" | "invoke" | "stream" | "batch" | "function" */
    edgefn_bytes subject;      /* MQTT topic, schedule name, HTTP path, stream partition, ... */
    uint64_t time_ms;          /* event time, Unix ms */
    edgefn_bytes content_type; /* "" when unknown */
    edgefn_bytes data;         /* the payload */
    uint32_t attempt;          /* 1 on first delivery, 2.. on retries */
} edgefn_event;

/* Reads an unsigned LEB128 varint of at most `max_bytes` bytes (5 for u32, 10 for u64), the
 * way postcard does: the last allowed byte must not carry bits above the type's width.
 * Returns 0 on success, -1 on truncated or overlong input. */
static inline int edgefn_read_varint(const uint8_t **p, const uint8_t *end, int max_bytes,
                                     uint64_t *out) {
    uint64_t v = 0;
    for (int i = 0; i < max_bytes; i++) {
        if (*p >= end) return -1;
        uint8_t b = *(*p)++;
        v |= (uint64_t)(b & 0x7f) << (7 * i);
        if ((b & 0x80) == 0) {
            /* u32: 5th byte holds bits 28..31 (max 0x0f); u64: 10th byte holds bit 63 (max 0x01) */
            if (i == max_bytes - 1 && b > (max_bytes == 5 ? 0x0f : 0x01)) return -1;
            *out = v;
            return 0;
        }
    }
    return -1;
}

/* Reads a varint length and that many bytes. */
static inline int edgefn_read_bytes(const uint8_t **p, const uint8_t *end, edgefn_bytes *out) {
    uint64_t n;
    if (edgefn_read_varint(p, end, 5, &n) != 0) return -1;
    if (n > (uint64_t)(end - *p)) return -1;
    out->ptr = *p;
    out->len = (uint32_t)n;
    *p += n;
    return 0;
}

/* Decodes the event at [buf, buf+len) without copying. Returns 0 on success, -1 if the bytes
 * are not a valid ABI v1 event (truncated, overlong varint, trailing bytes). Strings are not
 * checked for UTF-8 here (the host only sends valid UTF-8). */
static inline int edgefn_decode_event(const uint8_t *buf, uint32_t len, edgefn_event *ev) {
    const uint8_t *p = buf, *end = buf + len;
    uint64_t v;
    if (edgefn_read_bytes(&p, end, &ev->id) != 0) return -1;
    if (edgefn_read_bytes(&p, end, &ev->source) != 0) return -1;
    if (edgefn_read_bytes(&p, end, &ev->subject) != 0) return -1;
    if (edgefn_read_varint(&p, end, 10, &ev->time_ms) != 0) return -1;
    if (edgefn_read_bytes(&p, end, &ev->content_type) != 0) return -1;
    if (edgefn_read_bytes(&p, end, &ev->data) != 0) return -1;
    if (edgefn_read_varint(&p, end, 5, &v) != 0) return -1;
    ev->attempt = (uint32_t)v;
    return p == end ? 0 : -1;
}

#ifdef __cplusplus
}
#endif

#endif /* EDGEFN_H */
